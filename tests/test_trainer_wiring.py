"""How the trainer wires EMA, checkpoints, signals and processes around a recipe's step.

tests/test_train.py pins the trainer's promises from the outside (exact resume, NaN stop, phases); these tests pin
the parts a refactor of the loop could silently disconnect: the EMA update after each step and the generator it
feeds, checkpoint pruning, SIGTERM and a second Ctrl-C, and with two gloo processes the gradient average, the
agreed stop and an exact resume.
"""

from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import synthmed
from synthmed.nn.batchnorm import recalibrate_batchnorm
from synthmed.recipes import register_recipe
from synthmed.recipes.unconditional import UnconditionalGAN
from synthmed.training import checkpoint as ckpt
from synthmed.training.ema import ema_beta, update_ema

TINY = {"g_channels": 8, "d_channels": 8, "latent_dim": 16, "batch_size": 16, "log_every": 2,
        "sample_every": 1000, "checkpoint_every": 1000}


def weights(json_path: Path, prefix: str) -> dict[str, torch.Tensor]:
    """The floating-point tensors of one network in a checkpoint, keyed without the network's prefix."""
    _, tensors = ckpt.load_checkpoint(json_path)
    start = f"net/{prefix}."
    return {k[len(start):]: v for k, v in tensors.items() if k.startswith(start) and v.is_floating_point()}


def read_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "losses.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# --- EMA ----------------------------------------------------------------------------------------------------


def test_update_ema_formula_and_buffers() -> None:
    shadow, source = nn.BatchNorm1d(2), nn.BatchNorm1d(2)
    with torch.no_grad():
        shadow.weight.fill_(1.0)
        source.weight.fill_(3.0)
        source.running_mean.fill_(5.0)
    update_ema(shadow, source, beta=0.75)
    torch.testing.assert_close(shadow.weight, torch.full((2,), 0.75 * 1.0 + 0.25 * 3.0))
    torch.testing.assert_close(shadow.running_mean, torch.full((2,), 5.0))  # buffers are copied, not averaged
    torch.testing.assert_close(source.weight, torch.full((2,), 3.0))  # the live network is untouched


def test_ema_warm_up() -> None:
    assert ema_beta(0, 0.999) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert ema_beta(90, 0.999) == pytest.approx(0.91)
    assert ema_beta(10**6, 0.999) == 0.999
    assert ema_beta(20, 0.5) == 0.5


def test_ema_warm_up_constant_sets_the_averaging_window() -> None:
    assert ema_beta(0, 0.999, warmup=2) == 0.5  # (1 + 0) / (2 + 0)
    assert ema_beta(997, 0.999, warmup=2) == pytest.approx(998 / 999) and 998 / 999 < 0.999
    assert ema_beta(998, 0.999, warmup=2) == 0.999  # the cap binds from (2 beta - 1) / (1 - beta) = 998
    assert ema_beta(0, 0.999, warmup=1) == 0.999  # no warm-up
    # warm-up 2 is Polyak averaging: the shadow is the plain mean of its start and every step so far
    shadow, source = nn.Linear(1, 1, bias=False), nn.Linear(1, 1, bias=False)
    values = [4.0, -2.0, 7.0, 1.0, 0.5]
    with torch.no_grad():
        shadow.weight.fill_(3.0)
        for step, value in enumerate(values):
            source.weight.fill_(value)
            update_ema(shadow, source, ema_beta(step, 0.999, warmup=2))
    assert shadow.weight.item() == pytest.approx(sum([3.0, *values]) / (1 + len(values)))


def test_trainer_uses_the_configured_ema_warm_up(tmp_path: Path) -> None:
    # Without the warm-up the decay is beta from the first step; the default warm-up would give 2 / 11 at step 1.
    run = synthmed.train(out=tmp_path / "ema", progress=False, steps=3, ema_beta=0.5, ema_warmup=1.0,
                         **{**TINY, "checkpoint_every": 1}, keep_checkpoints=20).run_dir
    found = {int(p.stem.split("_")[1]): p for p in ckpt.list_checkpoints(run / "checkpoints")}
    live = weights(found[2], "G")
    before, after = weights(found[1], "G_ema"), weights(found[2], "G_ema")
    for key, value in after.items():
        if not key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            torch.testing.assert_close(value, 0.5 * before[key] + 0.5 * live[key], msg=key)


def test_trainer_updates_the_ema_generator_after_every_step(tmp_path: Path) -> None:
    beta = 0.5  # past the warm-up from step 9 on: (1 + 9) / (10 + 9) > 0.5
    run = synthmed.train(out=tmp_path / "ema", progress=False, steps=10, ema_beta=beta,
                         **{**TINY, "checkpoint_every": 1}, keep_checkpoints=20).run_dir
    found = {int(p.stem.split("_")[1]): p for p in ckpt.list_checkpoints(run / "checkpoints")}
    for previous in (1, 9):  # step 2 is inside the warm-up, step 10 past it
        live = weights(found[previous + 1], "G")
        before, after = weights(found[previous], "G_ema"), weights(found[previous + 1], "G_ema")
        b = ema_beta(previous, beta)
        assert b == (2 / 11 if previous == 1 else beta)
        for key, value in after.items():
            if key.endswith(("running_mean", "running_var")):  # buffers are copied from the live generator
                torch.testing.assert_close(value, live[key], rtol=0, atol=0, msg=key)
            else:
                torch.testing.assert_close(value, b * before[key] + (1 - b) * live[key], msg=key)


def test_samples_come_from_the_ema_generator(tmp_path: Path) -> None:
    run = synthmed.train(out=tmp_path / "s", progress=False, steps=4, ema_beta=0.9, **TINY).run_dir
    model = synthmed.load(run)
    images = model.sample(6, seed=3)
    nets = model.recipe.networks
    z = torch.randn(6, model.latent_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        from_ema = nets["G_ema"].eval()(z).clamp(-1, 1)
        from_live = nets["G"].eval()(z).clamp(-1, 1)
    torch.testing.assert_close(images, from_ema)
    assert not torch.allclose(images, from_live)


def test_recalibrate_batchnorm_averages_the_statistics_of_its_batches() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=0.3))
    batches = [torch.randn(10, 3) * (k + 1) for k in range(4)]
    feeds = iter(batches)
    net.eval()
    recalibrate_batchnorm(net, lambda: next(feeds), batches=4)
    with torch.no_grad():
        hidden = [net[0](x) for x in batches]
    torch.testing.assert_close(net[1].running_mean, torch.stack([h.mean(0) for h in hidden]).mean(0))
    torch.testing.assert_close(net[1].running_var, torch.stack([h.var(0) for h in hidden]).mean(0))
    assert net[1].momentum == 0.3 and not net.training  # restored


def test_the_ema_generators_batch_norm_statistics_are_its_own(tmp_path: Path) -> None:
    run = synthmed.train(out=tmp_path / "bn", progress=False, steps=4, ema_beta=0.9, **TINY).run_dir
    recipe = synthmed.load(run).recipe
    ema = recipe.networks["G_ema"]
    norms = [m for m in ema.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms
    seen: dict[nn.Module, list[torch.Tensor]] = {m: [] for m in norms}
    for m in norms:
        m.register_forward_pre_hook(lambda mod, args: seen[mod].append(args[0].detach().clone()))
    recipe.refresh_sampling_statistics()
    for m in norms:
        assert len(seen[m]) > 1
        dims = [0, *range(2, seen[m][0].dim())]
        mean = torch.stack([x.mean(dims) for x in seen[m]]).mean(0)
        torch.testing.assert_close(m.running_mean, mean, rtol=1e-4, atol=1e-5)


# --- checkpoints --------------------------------------------------------------------------------------------


def test_a_run_keeps_the_newest_checkpoints_and_best(tmp_path: Path) -> None:
    run = synthmed.train(out=tmp_path / "keep", progress=False, steps=6, keep_checkpoints=3,
                         eval_every=2, eval_samples=20, **{**TINY, "checkpoint_every": 1}).run_dir
    directory = run / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(directory)] == [f"step_{s:08d}.json" for s in (4, 5, 6)]
    assert (directory / "best.json").is_file() and (directory / "best.safetensors").is_file()
    names = sorted(p.name for p in directory.iterdir())
    assert names == sorted(["best.json", "best.safetensors", *(f"step_{s:08d}.{ext}" for s in (4, 5, 6)
                                                                for ext in ("json", "safetensors"))])
    with open(run / "eval.csv", newline="") as fh:
        evaluations = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in evaluations] == [2, 4, 6]
    best_step = min(evaluations, key=lambda r: float(r[next(k for k in r if k != "step")]))["step"]
    record, _ = ckpt.load_checkpoint(directory / "best.json")
    assert record["step"] == int(best_step)


# --- signals ------------------------------------------------------------------------------------------------


def _train_cli(run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "synthmed", "train", "--out", str(run), "--steps", "100000", "--batch-size",
            "16", "--checkpoint-every", "100000", "--sample-every", "100000", "-o", "g_channels=8", "-o",
            "d_channels=8", "-o", "latent_dim=16", "--quiet", *extra]


def _wait_for_rows(run: Path, proc: subprocess.Popen, rows: int = 30) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "losses.csv").exists() and len((run / "losses.csv").read_text().splitlines()) > rows:
            return
        time.sleep(0.1)
    raise AssertionError("training did not get under way")


def test_sigterm_saves_a_checkpoint_and_exits_130(tmp_path: Path) -> None:
    run = tmp_path / "term"
    proc = subprocess.Popen(_train_cli(run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(run, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "Traceback" not in err
    stopped = int(err.split("interrupted at step ")[1].split(";")[0])
    assert ckpt.latest_checkpoint(run / "checkpoints").name == f"step_{stopped:08d}.json"


SLOW_SAVE = """
import sys, time
from pathlib import Path
from synthmed.training import checkpoint

marker, seconds = Path(sys.argv[1]), float(sys.argv[2])
write_weights = checkpoint.save_file

def slow_save(tensors, path):  # the weights reach their temporary file, then the save takes long
    write_weights(tensors, path)
    marker.write_text(str(path))
    time.sleep(seconds)

checkpoint.save_file = slow_save
sys.argv = ["synthmed", *sys.argv[3:]]
from synthmed.cli import main
main()
"""


def test_a_second_ctrl_c_aborts_at_once_without_a_half_written_checkpoint(tmp_path: Path) -> None:
    script = tmp_path / "slow_save.py"
    script.write_text(textwrap.dedent(SLOW_SAVE))
    marker, run = tmp_path / "saving", tmp_path / "abort"
    cmd = [sys.executable, str(script), str(marker), "60", *_train_cli(run)[3:]]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_rows(run, proc)
    proc.send_signal(signal.SIGINT)  # first: finish the step and save
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the checkpoint save never started"
    assert Path(marker.read_text()).exists(), "the weights' temporary file should exist mid-save"
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)  # second: abort now, not after the save
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - sent < 10, "the second Ctrl-C did not abort at once"
    assert proc.returncode == 130, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    left = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert left == [], f"a half-written checkpoint was left behind: {left}"


def test_one_ctrl_c_during_the_last_checkpoint_does_not_cut_it_short(tmp_path: Path) -> None:
    script = tmp_path / "slow_save.py"
    script.write_text(textwrap.dedent(SLOW_SAVE))
    marker, run = tmp_path / "saving", tmp_path / "last"
    cmd = [sys.executable, str(script), str(marker), "3", *_train_cli(run)[3:]]
    cmd[cmd.index("100000")] = "5"  # a 5-step run; its only checkpoint is the last one
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert marker.exists(), "the checkpoint save never started"
    proc.send_signal(signal.SIGINT)  # the run is over; the request is absorbed and the save completes
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert ckpt.latest_checkpoint(run / "checkpoints").name == "step_00000005.json"
    ckpt.load_checkpoint(ckpt.latest_checkpoint(run / "checkpoints"))  # complete, hash verified


# --- two processes ------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(fn, args: tuple, nprocs: int = 2, timeout: float = 150.0) -> None:
    """Start ``fn(rank, *args)`` in ``nprocs`` spawned processes; fail (not hang) if they do not finish in time.

    A broken stop agreement leaves one process waiting forever in a collective: that must fail the test."""
    context = torch.multiprocessing.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError(f"processes still running after {timeout:.0f} s (one waits for the other)")


def _join_group(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)


def _averaging_worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from synthmed.recipes.step import StepContext
    from synthmed.training.distributed import DistInfo, gradient_averager

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    param = nn.Parameter(torch.zeros(3))
    # The context exactly as the trainer builds it under torchrun.
    ctx = StepContext(device=torch.device("cpu"), optimizers={"p": torch.optim.SGD([param], lr=1.0)},
                      average_gradients=gradient_averager(DistInfo(rank=rank, world_size=2)))
    scale = torch.tensor([1.0, 2.0, 3.0])
    ctx.optimize("p", ((rank + 1) * scale * param).sum())  # gradient (rank + 1) * scale: mean 1.5 * scale
    torch.save(param.detach(), Path(out) / f"param{rank}.pt")
    # Rank 0 hosts the tcp:// store: leaving before rank 1 is done with the group aborted rank 1 ("terminate called
    # without an active exception", SIGABRT) in about one run in five.
    dist.barrier()
    dist.destroy_process_group()


def test_step_context_averages_gradients_across_processes(tmp_path: Path) -> None:
    run_processes(_averaging_worker, (_free_port(), str(tmp_path)))
    for rank in range(2):
        torch.testing.assert_close(torch.load(tmp_path / f"param{rank}.pt"), -1.5 * torch.tensor([1.0, 2.0, 3.0]))


@register_recipe
class _SkewedGAN(UnconditionalGAN):
    """Rank 1 starts its clock 1.5 s after rank 0 (a slow process); rank 0 may press Ctrl-C at a given step."""

    name = "test-skewed"

    def preview_inputs(self, n, seed):
        if int(os.environ.get("RANK", "0")) == 1:
            time.sleep(1.5)
        return super().preview_inputs(n, seed)

    def train_step(self, batch, ctx):
        if os.environ.get("TEST_CTRL_C_AT") == str(ctx.step) and int(os.environ["RANK"]) == 0:
            os.kill(os.getpid(), signal.SIGINT)
        return super().train_step(batch, ctx)


def _stop_worker(rank: int, port: int, out: str, how: str) -> None:
    from synthmed.training.trainer import TrainingInterrupted

    _join_group(rank, port)
    options = {**TINY, "batch_size": 8, "device": "cpu"}
    if how == "ctrl-c":
        os.environ["TEST_CTRL_C_AT"] = "5"
        options.update(steps=1000)
    else:
        options.update(steps=None, max_minutes=0.05)
    try:
        result = synthmed.train(recipe="test-skewed", out=Path(out) / "run", progress=False, **options)
    except TrainingInterrupted as stop:
        result = stop.result
    (Path(out) / f"stop{rank}.txt").write_text(f"{result.steps} {result.stopped_because}")


@pytest.mark.parametrize("how", ["time", "ctrl-c"])
def test_processes_stop_at_the_same_step(tmp_path: Path, how: str) -> None:
    run_processes(_stop_worker, (_free_port(), str(tmp_path), how))
    stops = [(tmp_path / f"stop{rank}.txt").read_text().split() for rank in range(2)]
    assert stops[0] == stops[1], stops
    steps, why = int(stops[0][0]), stops[0][1:]
    assert why == (["time", "budget"] if how == "time" else ["interrupted"])
    if how == "ctrl-c":
        # Ctrl-C during step index 5; under torchrun the stop is agreed before step indices s with (s + 1) % 2 == 0
        assert steps == 7
    assert ckpt.latest_checkpoint(tmp_path / "run" / "checkpoints").name == f"step_{steps:08d}.json"


def _resume_worker(rank: int, ports: tuple[int, int, int], out: str) -> None:
    options = {**TINY, "batch_size": 8, "device": "cpu", "ema_beta": 0.9, "diffaugment": "translation"}
    _join_group(rank, ports[0])
    synthmed.train(out=Path(out) / "straight", progress=False, steps=6, **options)
    _join_group(rank, ports[1])
    synthmed.train(out=Path(out) / "split", progress=False, steps=3, **options)
    _join_group(rank, ports[2])
    synthmed.train(resume_run=Path(out) / "split", steps=6, progress=False)


def test_a_two_process_run_resumes_exactly(tmp_path: Path) -> None:
    run_processes(_resume_worker, ((_free_port(), _free_port(), _free_port()), str(tmp_path)), timeout=240)
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert read_rows(split) == read_rows(straight)
    assert len(read_rows(split)) == 6
    a = ckpt.load_checkpoint(ckpt.latest_checkpoint(straight / "checkpoints"))[1]
    b = ckpt.load_checkpoint(ckpt.latest_checkpoint(split / "checkpoints"))[1]
    assert a.keys() == b.keys()
    for key in a:
        if key.startswith(("net/", "optim/", "extra/rng")):
            assert torch.equal(a[key], b[key]), key

"""Trainer behaviour: exact resume, determinism, budgets, NaN stop, Ctrl-C, phases, data parallelism."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

import synthmed
from synthmed.errors import TrainingDiverged
from synthmed.recipes import Phase, register_recipe
from synthmed.recipes.unconditional import UnconditionalConfig, UnconditionalGAN
from synthmed.training import checkpoint as ckpt

# Tiny networks and batches: each step takes a few milliseconds on 2 CPU cores.
TINY = {
    "g_channels": 8, "d_channels": 8, "latent_dim": 16, "batch_size": 16,
    "log_every": 3, "sample_every": 1000, "checkpoint_every": 1000, "ema_beta": 0.99,
}
LOSS_COLUMNS = ("loss_d", "loss_g", "d_real", "d_fake", "gp")


def read_losses(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "losses.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def loss_rows(run_dir: Path) -> list[tuple]:
    return [tuple(row.get(c) for c in ("step", *LOSS_COLUMNS)) for row in read_losses(run_dir)]


def train(tmp: Path, name: str, **options) -> synthmed.train:
    opts = {**TINY, **options}
    return synthmed.train(out=tmp / name, progress=False, **opts)


@pytest.mark.parametrize("variant", [
    {"loss": "bce", "diffaugment": "translation,cutout", "instance_noise": 0.1, "label_flip": 0.05,
     "label_noise": 0.1},
    {"loss": "wgan-gp"},
    {"loss": "bce", "lecam": 0.3},  # the anchors travel in the checkpoint
])
def test_resume_reproduces_an_uninterrupted_run_exactly(tmp_path: Path, variant: dict) -> None:
    full = train(tmp_path, "full", steps=12, **variant)
    first = train(tmp_path, "split", steps=5, **variant)
    assert first.steps == 5
    resumed = synthmed.train(resume_run=tmp_path / "split", steps=12, progress=False)
    assert resumed.steps == 12
    assert loss_rows(tmp_path / "split") == loss_rows(full.run_dir)
    # Weights agree too, not just the logged losses.
    _, ta = ckpt.load_checkpoint(ckpt.latest_checkpoint(full.run_dir / "checkpoints"))
    _, tb = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "split" / "checkpoints"))
    for key in ta:
        if key.startswith("net/"):
            assert torch.equal(ta[key], tb[key]), key


def test_same_seed_same_run_other_seed_other_run(tmp_path: Path) -> None:
    a = train(tmp_path, "a", steps=4, seed=3)
    b = train(tmp_path, "b", steps=4, seed=3)
    c = train(tmp_path, "c", steps=4, seed=4)
    assert loss_rows(a.run_dir) == loss_rows(b.run_dir)
    assert loss_rows(a.run_dir) != loss_rows(c.run_dir)


def test_run_directory_layout(tmp_path: Path) -> None:
    result = train(tmp_path, "run", steps=6, sample_every=3, checkpoint_every=3)
    run = result.run_dir
    for name in ("config.yaml", "losses.csv", "curves.png", "metrics.json"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_00000003.png", "step_00000006.png"]
    assert [p.name for p in ckpt.list_checkpoints(run / "checkpoints")] == ["step_00000003.json",
                                                                            "step_00000006.json"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["training"]["step"] == 6
    assert metrics["training"]["last_session"]["device"] == "cpu"
    assert len(read_losses(run)) == 6
    assert not list(run.rglob("*.tmp")), "temporary files left behind"


def test_time_budget_stops_and_saves(tmp_path: Path) -> None:
    result = train(tmp_path, "timed", steps=None, max_minutes=0.02)
    assert result.stopped_because == "time budget"
    assert result.steps > 0
    assert ckpt.latest_checkpoint(result.run_dir / "checkpoints").name == f"step_{result.steps:08d}.json"


def test_existing_run_directory_is_not_overwritten(tmp_path: Path) -> None:
    train(tmp_path, "run", steps=2)
    with pytest.raises(synthmed.ConfigError, match="exists"):
        train(tmp_path, "run", steps=2)


@dataclass
class _PoisonConfig(UnconditionalConfig):
    poison_at: int = 7


@register_recipe
class _PoisonedGAN(UnconditionalGAN):
    """An unconditional GAN whose discriminator loss turns NaN at a given step (for the NaN-stop test)."""

    name = "test-poisoned"
    Config = _PoisonConfig

    def train_step(self, batch, ctx):
        out = super().train_step(batch, ctx)
        if ctx.step + 1 >= self.config.poison_at:
            with torch.no_grad():
                for p in self.networks["D"].parameters():
                    p.fill_(float("nan"))
            out["loss_d"] = out["loss_d"] * float("nan")
        return out


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(TrainingDiverged, match=r"loss_d became nan at step 7.*step_00000005"):
        synthmed.train(recipe="test-poisoned", out=tmp_path / "nan", progress=False, steps=20, batch_size=16,
                       g_channels=8, d_channels=8, latent_dim=16,
                       log_every=1, checkpoint_every=5, sample_every=1000)
    found = ckpt.list_checkpoints(tmp_path / "nan" / "checkpoints")
    assert [p.name for p in found] == ["step_00000005.json"]
    _, tensors = ckpt.load_checkpoint(found[0])
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("net/"))
    # The model at the last good checkpoint still samples.
    images = synthmed.load(tmp_path / "nan").sample(4)
    assert torch.isfinite(images).all()


@dataclass
class _TwoPhaseConfig(UnconditionalConfig):
    warmup_steps: int = 3


@register_recipe
class _TwoPhase(UnconditionalGAN):
    """Autoencoder-style warm-up, then GAN: the shape of BAGAN / medGAN / f-AnoGAN schedules."""

    name = "test-two-phase"
    Config = _TwoPhaseConfig
    started: list[str] = []

    def phases(self) -> list[Phase]:
        return [Phase("warmup", self.config.warmup_steps), Phase("adversarial")]

    def start_phase(self, phase: str, resumed: bool = False) -> None:
        _TwoPhase.started.append(f"{phase} (resumed)" if resumed else phase)

    def loss_names(self) -> list[str]:
        return ["warm", *super().loss_names()]

    def train_step(self, batch, ctx):
        if ctx.phase == "warmup":
            return {"warm": batch["image"].mean().detach()}
        return super().train_step(batch, ctx)


def test_phases_run_in_order_and_resume_into_the_right_phase(tmp_path: Path) -> None:
    _TwoPhase.started.clear()
    opts = {"recipe": "test-two-phase", "progress": False, "batch_size": 16, "log_every": 1, "g_channels": 8,
            "d_channels": 8,
            "sample_every": 1000, "checkpoint_every": 1000}
    synthmed.train(out=tmp_path / "p", steps=2, **opts)
    assert _TwoPhase.started == ["warmup"]
    synthmed.train(resume_run=tmp_path / "p", steps=6, progress=False)
    assert _TwoPhase.started == ["warmup", "warmup (resumed)", "adversarial"]
    rows = read_losses(tmp_path / "p")
    assert [r["phase"] for r in rows] == ["warmup"] * 3 + ["adversarial"] * 3
    assert rows[0]["warm"] and not rows[0]["loss_d"] and rows[-1]["loss_d"] and not rows[-1]["warm"]


def _cli(*args: str, env: dict | None = None) -> list[str]:
    return [sys.executable, "-m", "synthmed", *args]


def test_ctrl_c_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    run = tmp_path / "interrupted"
    args = ["train", "--out", str(run), "--steps", "100000", "--batch-size", "16", "--checkpoint-every", "100000",
            "--sample-every", "100000", "-o", "g_channels=8", "-o", "d_channels=8", "-o", "latent_dim=16",
            "--ema-beta", "0.99", "--quiet"]
    proc = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until training is under way (the first rows are logged)
        if (run / "losses.csv").exists() and len((run / "losses.csv").read_text().splitlines()) > 30:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "Traceback" not in err
    stopped = int(err.split("interrupted at step ")[1].split(";")[0])
    assert ckpt.latest_checkpoint(run / "checkpoints").name == f"step_{stopped:08d}.json"

    subprocess.run(_cli("train", "--resume", str(run), "--steps", str(stopped + 5), "--quiet"), check=True,
                   capture_output=True)
    straight = synthmed.train(out=tmp_path / "straight", steps=stopped + 5, progress=False,
                              **{**TINY, "log_every": 25})
    assert loss_rows(run) == loss_rows(straight.run_dir)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str, result_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from synthmed.data import sampling
    from synthmed.training import trainer as trainer_module
    from synthmed.training.config import DataConfig, RunConfig, TrainConfig

    seen: list[torch.Tensor] = []
    original = sampling.EpochSampler.next

    def recording_next(self):
        batch = original(self)
        seen.append(batch.clone())
        return batch

    sampling.EpochSampler.next = recording_next
    config = RunConfig(
        # LeCam's anchors are statistics of each process's batch: they must be averaged to stay shared.
        recipe_options={"g_channels": 8, "d_channels": 8, "latent_dim": 16, "lecam": 0.3},
        data=DataConfig(),
        # sample_every not a multiple of log_every: the flush before a preview is a collective on every rank.
        train=TrainConfig(steps=4, batch_size=8, log_every=2, sample_every=3, checkpoint_every=1000,
                          device="cpu"),
    )
    runner = trainer_module.Trainer(config, out=Path(out), progress=False)
    recipe_holder: dict = {}
    build = runner._build

    def keep(info):
        recipe_holder["r"] = build(info)
        return recipe_holder["r"]

    runner._build = keep
    runner.run()
    params = torch.cat([p.detach().reshape(-1) for p in recipe_holder["r"].networks.parameters()])
    torch.save({"params": params, "indices": torch.cat(seen), "anchors": recipe_holder["r"].lecam_anchors.values},
               Path(result_dir) / f"rank{rank}.pt")


def test_data_parallel_two_gloo_processes_stay_in_sync(tmp_path: Path) -> None:
    port = _free_port()
    torch.multiprocessing.spawn(_ddp_worker, args=(2, port, str(tmp_path / "ddp"), str(tmp_path)), nprocs=2)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    assert torch.equal(r0["params"], r1["params"]), "replicas drifted apart: gradients were not averaged"
    assert not set(r0["indices"].tolist()[:8]) & set(r1["indices"].tolist()[:8]), "ranks saw the same samples"
    assert torch.equal(r0["anchors"], r1["anchors"]), "the LeCam anchors differ between processes"
    checkpoint = ckpt.latest_checkpoint(tmp_path / "ddp" / "checkpoints")
    record, tensors = ckpt.load_checkpoint(checkpoint)
    assert record["world_size"] == 2 and "extra/rng/cpu/rank1" in tensors
    # The saved model is the synchronised one.
    saved = synthmed.load(tmp_path / "ddp").recipe.networks
    assert torch.equal(torch.cat([p.detach().reshape(-1) for p in saved.parameters()]), r0["params"])


def test_torchrun_cli_with_two_processes(tmp_path: Path) -> None:
    out = tmp_path / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(_free_port()), "-m", "synthmed", "train", "--out", str(out), "--steps", "3", "--batch-size", "8",
           "-o", "g_channels=8", "-o", "d_channels=8", "--quiet", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["training"]["last_session"]["world_size"] == 2
    assert metrics["training"]["step"] == 3


@pytest.mark.parametrize(("variant", "switches"), [
    ({"loss": "lsgan"}, {"label_smoothing": 0.1, "label_noise": 0.05}),
    ({"loss": "hinge", "arch": "resnet", "size": 32}, {"diffaugment": "translation"}),
    ({"loss": "bce"}, {"feature_matching": 1.0, "minibatch_discrimination": True, "r1_weight": 1.0, "ttur": False}),
])
def test_every_loss_and_switch_trains_and_logs_finite_losses(tmp_path: Path, variant: dict, switches: dict) -> None:
    result = train(tmp_path, "v", steps=3, **variant, **switches)
    plain = train(tmp_path, "plain", steps=3, **variant)
    rows, plain_rows = read_losses(result.run_dir), read_losses(plain.run_dir)
    assert len(rows) == 3
    for row in rows:
        for name in ("loss_d", "loss_g"):
            assert torch.isfinite(torch.tensor(float(row[name])))
    # The switches change the run: the same seed without them logs other losses.
    assert [r["loss_d"] for r in rows] != [r["loss_d"] for r in plain_rows]
    if switches.get("feature_matching"):
        assert rows[0]["feature_matching"] and rows[0]["r1"]
        assert "feature_matching" not in plain_rows[0]


def test_resolved_presets_are_recorded_in_the_run_config(tmp_path: Path) -> None:
    import yaml

    result = train(tmp_path, "w", steps=1, loss="wgan-gp")
    options = yaml.safe_load((result.run_dir / "config.yaml").read_text())["recipe_options"]
    assert options["n_critic"] == 5 and options["lr_g"] == 1e-4 and options["betas"] == [0.0, 0.9]
    assert options["d_norm"] == "layer"


def test_a_run_recorded_before_an_option_existed_loads_and_resumes_as_it_trained(tmp_path: Path) -> None:
    # bce turns LeCam on from 64 px; a 64-px run recorded before the option existed trained without it, and must go
    # on without it (its config.yaml has no `lecam`), not take today's default.
    import yaml

    today = train(tmp_path, "today", steps=1, pad_to=64).run_dir
    assert yaml.safe_load((today / "config.yaml").read_text())["recipe_options"]["lecam"] == 0.1  # the preset
    # An old run as it was written: no LeCam while training, and no `lecam` in its config.yaml.
    run = train(tmp_path, "old", steps=2, pad_to=64, checkpoint_every=2, lecam=0.0).run_dir
    document = yaml.safe_load((run / "config.yaml").read_text())
    del document["recipe_options"]["lecam"]
    (run / "config.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    assert synthmed.load(run, device="cpu").recipe.config.lecam == 0.0
    synthmed.train(resume_run=run, steps=3, progress=False)
    assert synthmed.load(run, device="cpu").recipe.config.lecam == 0.0
    rows = read_losses(run)
    assert [row["step"] for row in rows] == ["1", "2", "3"] and "lecam" not in rows[-1]


def test_the_test_split_is_refused(tmp_path: Path) -> None:
    with pytest.raises(synthmed.ConfigError, match="test split"):
        train(tmp_path, "t", steps=1, split="test")
    assert not (tmp_path / "t").exists()


def test_resume_falls_back_to_an_older_checkpoint_when_the_newest_is_damaged(tmp_path: Path) -> None:
    result = train(tmp_path, "c", steps=4, checkpoint_every=2)
    newest = result.run_dir / "checkpoints" / "step_00000004.safetensors"
    newest.write_bytes(newest.read_bytes()[:-10] + b"0123456789")
    with pytest.warns(UserWarning, match="damaged"):
        resumed = synthmed.train(resume_run=result.run_dir, steps=6, progress=False)
    assert resumed.steps == 6
    rows = read_losses(result.run_dir)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]


def test_resume_drops_a_row_cut_short_by_a_hard_kill(tmp_path: Path) -> None:
    result = train(tmp_path, "k", steps=2, checkpoint_every=2)
    with open(result.run_dir / "losses.csv", "a") as fh:
        fh.write("3,train,0.5")  # a row the kill interrupted
    synthmed.train(resume_run=result.run_dir, steps=3, progress=False)
    assert [r["step"] for r in read_losses(result.run_dir)] == ["1", "2", "3"]


def _allreduce_worker(rank: int, world: int, port: int, result_dir: str) -> None:
    import torch.distributed as dist

    from synthmed.training.distributed import all_reduce_gradients

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    params = [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))]
    params[0].grad = torch.full((3,), float(rank + 1))       # ranks hold 1 and 2 -> mean 1.5
    params[1].grad = torch.full((2, 2), 10.0 * (rank + 1))  # 10 and 20 -> mean 15
    all_reduce_gradients(params, world)
    torch.save([p.grad for p in params], Path(result_dir) / f"grads{rank}.pt")
    # Rank 0 hosts the tcp:// store: leaving before rank 1 is done with the group aborted rank 1 ("terminate called
    # without an active exception", SIGABRT) in about one run in five.
    dist.barrier()
    dist.destroy_process_group()


def test_gradients_are_averaged_not_summed(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_allreduce_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2)
    for rank in range(2):
        grads = torch.load(tmp_path / f"grads{rank}.pt")
        assert torch.allclose(grads[0], torch.full((3,), 1.5))
        assert torch.allclose(grads[1], torch.full((2, 2), 15.0))


def test_restored_adam_moments_take_their_parameters_layout(tmp_path: Path) -> None:
    """safetensors returns contiguous tensors; the fused Adam walks parameter, gradient and moments in memory order,
    so NCHW moments of a channels-last weight mixed up elements and a resumed run drifted from the uninterrupted
    one. Restored moments must have the parameter's strides, and the next step must equal the unsaved optimiser's."""
    from synthmed.optim import adam

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 4).to(memory_format=torch.channels_last)
    opt = adam(conv.parameters(), 1e-2, (0.5, 0.999), torch.device("cpu"))
    for _ in range(2):
        opt.zero_grad()
        conv(torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)).square().mean().backward()
        opt.step()
    nets = torch.nn.ModuleDict({"D": conv})
    path = ckpt.save_checkpoint(tmp_path, 2, nets, {"D": opt}, {}, {})
    record, tensors = ckpt.load_checkpoint(path)
    twin = torch.nn.Conv2d(3, 8, 4).to(memory_format=torch.channels_last)
    twin.load_state_dict(conv.state_dict())
    twin_opt = adam(twin.parameters(), 1e-2, (0.5, 0.999), torch.device("cpu"))
    ckpt.restore_optimizers({"D": twin_opt}, record, tensors)
    for param in twin.parameters():
        for value in twin_opt.state[param].values():
            if value.dim():
                assert value.stride() == param.stride()
    x = torch.randn(2, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    for net, o in ((conv, opt), (twin, twin_opt)):
        o.zero_grad()
        net(x).square().mean().backward()
        o.step()
    torch.testing.assert_close(twin.weight, conv.weight, rtol=0, atol=0)

"""The one trainer: every recipe runs through :func:`fit`.

It owns device and precision, data-parallel processes, EMA, budgets, the run directory, checkpoints (atomic,
exactly resumable), NaN detection, Ctrl-C, the progress bar and the periodic sample grid. The hot loop never
synchronises with the device except every ``log_every`` steps, when the buffered losses are read at once.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import signal
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import synthmed
from synthmed.data import load_dataset
from synthmed.data.dataset import DataInfo, ImageDataset
from synthmed.errors import ConfigError, SynthmedError, TrainingDiverged
from synthmed.io import atomic_write_text
from synthmed.recipes import build_recipe
from synthmed.recipes.base import Phase, Recipe, config_to_dict
from synthmed.train import checkpoint as ckpt
from synthmed.train import distributed as D
from synthmed.train.config import RunConfig, dump_yaml, read_run_config
from synthmed.train.context import StepContext
from synthmed.train.ema import ema_beta, update_ema
from synthmed.train.progress import TrainProgress
from synthmed.train.sampler import EpochSampler


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    stopped_because: str
    checkpoint: Path | None
    final_losses: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0

    @property
    def interrupted(self) -> bool:
        return self.stopped_because == "interrupted"


class TrainingInterrupted(SynthmedError):
    """Ctrl-C or SIGTERM: the checkpoint was saved; the CLI exits with 130."""

    def __init__(self, result: TrainResult) -> None:
        self.result = result
        super().__init__(
            f"interrupted at step {result.steps}; checkpoint saved to {result.checkpoint}; "
            f"continue with: synthmed train --resume {result.run_dir}"
        )


def select_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for, but no CUDA GPU is available")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            if device.index is not None:
                raise ConfigError("under torchrun each process uses the GPU of its LOCAL_RANK: use --device cuda")
            device = torch.device("cuda", local_rank)
        elif device.index is None:
            device = torch.device("cuda", 0)
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        # bf16 autocast on GPUs only: on CPUs it ran slower in every measurement (0.77x at DCGAN 64 px even on an
        # AVX512-BF16 CPU, benchmarks/results/training_speed_cpu.json; 13-49x slower without native bf16).
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16 support; use fp32")
    # bf16 on a CPU is allowed when asked for explicitly (CPUs with AMX/AVX512-BF16 gain from it).
    return precision


def default_run_name(config: RunConfig) -> str:
    source = config.data.source or "breastmnist"
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(source.split(":")[-1]).stem).strip("-") or "data"
    arch = config.recipe_options.get("arch", "")
    loss = config.recipe_options.get("loss", "")
    parts = [stem, arch or config.recipe, loss]
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return "-".join(p for p in parts if p) + f"-{stamp}"


def resolve_run_dir(run: str | Path) -> Path:
    """A run given as a path, or as a name under ``./runs``."""
    path = Path(run)
    if (path / "config.yaml").is_file():
        return path
    candidate = Path("runs") / str(run)
    if (candidate / "config.yaml").is_file():
        return candidate
    raise SynthmedError(f"{run}: not a synthmed run directory (no config.yaml)")


class _Stopper:
    """Turns the first Ctrl-C / SIGTERM into a polite stop request; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    @contextmanager
    def installed(self) -> Iterator[_Stopper]:
        import threading

        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)


def _phase_plan(phases: list[Phase], total: int | None) -> list[tuple[Phase, int, int | None]]:
    """(phase, first step, end step) for each phase, clipped to the step budget ``total``.

    The open (last) phase gets the rest of the budget; a budget that ends inside an earlier phase simply stops
    there, and a resume with a larger budget carries on from that point.
    """
    plan: list[tuple[Phase, int, int | None]] = []
    start = 0
    for i, phase in enumerate(phases):
        if phase.steps is None and i != len(phases) - 1:
            raise ConfigError(f"phase {phase.name!r} has no length but is not the last phase")
        end = total if phase.steps is None else start + phase.steps
        if total is not None and end is not None:
            end = max(start, min(end, total))
        plan.append((phase, start, end))
        if end is None:
            break
        start = end
    return plan


class _LossLog:
    """``losses.csv``: one row per step, written in blocks at each device sync."""

    def __init__(self, path: Path, names: list[str]) -> None:
        self.path = path
        self.names = names
        self.columns = ["step", "phase", *names]

    def start(self, resume_step: int | None) -> None:
        if resume_step is None or not self.path.exists():
            atomic_write_text(self.path, ",".join(self.columns) + "\n")
            return
        # Drop rows after the checkpoint: they will be recomputed, identically.
        with open(self.path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh)]
        # A row cut short by a hard kill has fewer cells or a partial step number: drop it.
        kept = [rows[0]] + [r for r in rows[1:] if len(r) == len(rows[0]) and r[0].isdigit()
                            and int(r[0]) <= resume_step]
        atomic_write_text(self.path, "".join(",".join(r) + "\n" for r in kept))

    def append(self, rows: list[tuple[int, str, dict[str, float]]]) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            for step, phase, values in rows:
                writer.writerow([step, phase, *(repr(values[n]) if n in values else "" for n in self.names)])


class Trainer:
    """Runs one :class:`RunConfig` (fresh or resumed). Use :func:`fit` rather than this class directly."""

    def __init__(self, config: RunConfig, out: Path | None = None, resume: Path | None = None,
                 progress: bool = True) -> None:
        config.validate()
        self.config = config
        self.resume_dir = resume
        self.out = out
        self.show_progress = progress

    # --- set-up ----------------------------------------------------------------------------------------
    def _setup_runtime(self) -> None:
        t = self.config.train
        if t.num_threads:
            torch.set_num_threads(t.num_threads)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = select_device(t.device, local_rank)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        self.dist = D.init_distributed(self.device.type)
        self.precision = resolve_precision(t.precision, self.device)

    def _load_data(self) -> ImageDataset:
        d = self.config.data
        if d.split == "test":
            raise ConfigError("a GAN must never see the test split (it is kept for evaluation); train on 'train'")
        if d.split == "all":
            warnings.warn("training on split 'all' includes any test images of this data: evaluate on other data",
                          stacklevel=2)
        return load_dataset(
            d.source, size=d.size, split=d.split, channels=d.channels, image_key=d.image_key,
            label_key=d.label_key, mask_key=d.mask_key, patient_key=d.patient_key, split_key=d.split_key,
            seed=d.split_seed, folder_groups=d.folder_groups,
        )

    def _build(self, data_info: DataInfo) -> Recipe:
        t = self.config.train
        torch.manual_seed(t.seed)  # identical initial weights on every process
        recipe = build_recipe(self.config.recipe, self.config.recipe_options, data_info, t.ema_beta)
        channels_last = t.channels_last
        if channels_last is None:
            channels_last = recipe.prefers_channels_last
        self.channels_last = bool(channels_last)
        recipe.to(self.device, channels_last=self.channels_last)
        if self.dist.enabled:
            D.broadcast_module(recipe.networks)
            # Same weights everywhere, but each process draws its own noise (latents, augmentation).
            torch.manual_seed(t.seed + 1_000_003 * self.dist.rank)
        return recipe

    def _create_run_dir(self) -> Path:
        name = self.config.name or default_run_name(self.config)
        self.config.name = name
        run_dir = Path(self.out) if self.out is not None else Path("runs") / name
        if run_dir.exists() and any(run_dir.iterdir()):
            raise ConfigError(f"{run_dir}: run directory exists and is not empty; resume it with --resume "
                              f"or choose another --name/--out")
        return run_dir

    # --- main ------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        resume_record, resume_tensors = None, None
        if self.resume_dir is not None:
            run_dir = Path(self.resume_dir)
            resume_record, resume_tensors = ckpt.load_latest_valid(run_dir / "checkpoints")
        self._setup_runtime()
        try:
            return self._run(resume_record, resume_tensors)
        finally:
            D.shutdown_distributed()

    def _run(self, resume_record: dict[str, Any] | None, resume_tensors: dict[str, torch.Tensor] | None
             ) -> TrainResult:
        cfg, t = self.config, self.config.train
        # Everything that can fail on bad input happens before the run directory exists.
        data = self._load_data()
        recipe = self._build(data.info)
        evaluator, problem = None, None
        if t.eval_every and self.dist.is_main:
            from synthmed.train.periodic_eval import PeriodicFID

            try:  # e.g. missing Inception weights: every process must stop, not only this one
                evaluator = PeriodicFID(recipe, data.images, t.eval_features, t.eval_samples, seed=t.preview_seed,
                                        device=self.device)
            except SynthmedError as exc:
                problem = exc
        self._stop_together(problem, "the main process could not set up training-time evaluation")
        data = recipe.prepare_data(data)
        if len(data) < t.batch_size * self.dist.world_size:
            raise ConfigError(
                f"{data.info.source}: {len(data)} training images are fewer than one batch of "
                f"{t.batch_size * self.dist.world_size}; lower --batch-size"
            )
        if self.channels_last:
            data = replace(data, images=data.images.contiguous(memory_format=torch.channels_last))
        data = data.to(self.device)
        optimizers = recipe.configure_optimizers()
        plan = _phase_plan(recipe.phases(), t.steps)
        sampler = EpochSampler(len(data), t.batch_size, seed=t.seed, rank=self.dist.rank,
                               world_size=self.dist.world_size)
        loss_names = recipe.loss_names()

        if resume_record is None:
            run_dir, problem = Path("."), None
            if self.dist.is_main:
                try:
                    run_dir = self._create_run_dir()
                except SynthmedError as exc:
                    problem = exc
            self._stop_together(problem, "the main process stopped with a configuration error")
            start_step = 0
        else:
            run_dir = Path(self.resume_dir)  # type: ignore[arg-type]
            if self.dist.is_main:
                ckpt.remove_stale_temporaries(run_dir)
            start_step = self._restore(resume_record, resume_tensors or {}, recipe, optimizers, sampler)
            if evaluator is not None:
                evaluator.restore(run_dir, start_step)
        run_dir_main = self.dist.is_main
        log = _LossLog(run_dir / "losses.csv", loss_names)
        if run_dir_main:
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            (run_dir / "samples").mkdir(exist_ok=True)
            config_doc = cfg.to_dict()
            config_doc["recipe_options"] = config_to_dict(recipe.config)
            config_doc["data_info"] = data.info.to_dict()
            config_doc["synthmed_version"] = synthmed.__version__
            atomic_write_text(run_dir / "config.yaml", dump_yaml(config_doc))
            log.start(start_step if resume_record else None)
        self.run_dir = run_dir

        ctx = StepContext(device=self.device, optimizers=optimizers, dist=self.dist, precision=self.precision,
                          total_steps=t.steps)
        ctx.draw_batch = lambda: data.batch(sampler.next().to(self.device, non_blocking=True))
        preview_inputs = recipe.preview_inputs(t.preview_count, t.preview_seed)
        ema_pairs = [(recipe.networks[s], recipe.networks[e]) for s, e in recipe.ema_pairs()]

        pending: list[tuple[int, str, dict[str, torch.Tensor]]] = []
        last_values: dict[str, float] = {}
        last_checkpoint: Path | None = ckpt.latest_checkpoint(run_dir / "checkpoints") if run_dir_main else None
        last_saved_step = start_step if resume_record else -1
        step = start_step
        current_phase: str | None = None
        deadline = None if t.max_minutes is None else time.monotonic() + 60.0 * t.max_minutes
        started = time.monotonic()
        stopped_because = "steps"
        stopper = _Stopper()
        progress = TrainProgress(
            total_steps=t.steps, start_step=start_step, max_seconds=None if deadline is None else 60 * t.max_minutes,
            enabled=self.show_progress and run_dir_main,
        )

        def flush() -> None:
            """Read the buffered losses from the device (one sync), log them, stop on NaN/inf."""
            nonlocal last_values
            if not pending:
                return
            flat = torch.cat([torch.stack([v.float().reshape(()) for v in vals.values()]) for _, _, vals in pending])
            if self.dist.enabled:
                flat = D.all_reduce_mean(flat, self.dist.world_size)
            values = flat.tolist()
            rows, offset = [], 0
            for s, phase, vals in pending:
                row = dict(zip(vals.keys(), values[offset:offset + len(vals)], strict=True))
                offset += len(vals)
                rows.append((s, phase, row))
            pending.clear()
            if run_dir_main:
                log.append(rows)
            last_values = rows[-1][2]
            progress.update(step, last_values)
            bad = [(s, k, v) for s, _, row in rows for k, v in row.items() if not math.isfinite(v)]
            if bad:
                s, k, v = bad[0]
                where = (f"the last good checkpoint is {last_checkpoint}" if last_checkpoint
                         else "no checkpoint had been written yet")
                if run_dir_main:
                    self._write_outputs(recipe, run_dir, preview_inputs, s, final=False)
                raise TrainingDiverged(
                    f"{k} became {v} at step {s}; training stopped and nothing after that was saved; {where}. "
                    "Lower the learning rates or try loss='wgan-gp'/'hinge'."
                )

        def save() -> None:
            nonlocal last_checkpoint, last_saved_step
            flush()
            last_saved_step = step
            path = self._save(run_dir, step, recipe, optimizers, sampler, current_phase or "", last_values)
            if run_dir_main:
                last_checkpoint = path
                ckpt.prune_checkpoints(run_dir / "checkpoints", t.keep_checkpoints)

        with stopper.installed(), progress:
            try:
                for phase, first, end in plan:
                    if end is not None and step >= end:
                        continue
                    current_phase = phase.name
                    recipe.start_phase(phase.name, resumed=resume_record is not None and step > first)
                    ctx.phase = phase.name
                    while end is None or step < end:
                        at_sync = (step + 1) % t.log_every == 0
                        if not self.dist.enabled or at_sync or step == start_step:
                            stop = stopper.requested
                            timeout = deadline is not None and time.monotonic() >= deadline
                            if self.dist.enabled:
                                stop = D.any_process(stop, self.device)
                                timeout = D.any_process(timeout, self.device)
                            if stop or timeout:
                                stopped_because = "interrupted" if stop else "time budget"
                                raise _StopTraining
                        ctx.step = step
                        batch = data.batch(sampler.next().to(self.device, non_blocking=True))
                        losses = recipe.train_step(batch, ctx)
                        for source, shadow in ema_pairs:
                            update_ema(shadow, source, ema_beta(step, t.ema_beta))
                        step += 1
                        pending.append((step, phase.name, losses))
                        if step % t.log_every == 0:
                            flush()
                        if step % t.sample_every == 0:
                            flush()  # on every process: under DDP it is a collective
                            if run_dir_main:
                                self._write_preview(recipe, run_dir, preview_inputs, step)
                        if step % t.checkpoint_every == 0:
                            save()
                        if t.eval_every and step % t.eval_every == 0:
                            flush()
                            improved, failure = False, None
                            if evaluator is not None:
                                try:
                                    value = evaluator.score(recipe)  # type: ignore[arg-type]
                                    improved = evaluator.record(run_dir, step, value)
                                    progress.note(f"step {step}: fid {value:.3f}")
                                except Exception as exc:  # shared below, so no process waits forever
                                    failure = exc
                            if self.dist.enabled:
                                if D.any_process(failure is not None, self.device):
                                    raise failure or SynthmedError("training-time evaluation failed on rank 0")
                                improved = D.any_process(improved, self.device)
                            elif failure is not None:
                                raise failure
                            if improved:
                                if last_saved_step != step:
                                    save()
                                if run_dir_main and last_checkpoint is not None:
                                    from synthmed.train.periodic_eval import copy_as_best

                                    copy_as_best(last_checkpoint)
            except _StopTraining:
                pass
            flush()
            if last_saved_step != step:
                save()
        wall = time.monotonic() - started
        if run_dir_main:
            self._write_outputs(recipe, run_dir, preview_inputs, step, final=True)
            self._write_metrics(run_dir, step - start_step, step, wall, stopped_because, last_values,
                                None if evaluator is None else evaluator.summary())
        result = TrainResult(run_dir=run_dir, steps=step, stopped_because=stopped_because,
                             checkpoint=last_checkpoint, final_losses=last_values, wall_seconds=wall)
        if stopped_because == "interrupted":
            raise TrainingInterrupted(result)
        return result

    def _stop_together(self, problem: SynthmedError | None, elsewhere: str) -> None:
        """Raise ``problem`` on every process if any process has one (only the main process sets some up):
        otherwise the others would wait forever in their next collective."""
        if self.dist.enabled and D.any_process(problem is not None, self.device) and problem is None:
            raise SynthmedError(elsewhere)
        if problem is not None:
            raise problem

    # --- persistence -----------------------------------------------------------------------------------
    def _rng_state(self) -> dict[str, torch.Tensor]:
        state = {"rng/cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["rng/cuda"] = torch.cuda.get_rng_state(self.device)
        if not self.dist.enabled:
            return state
        gathered = D.gather_objects({k: v.numpy().tobytes() for k, v in state.items()}, self.dist.world_size)
        out: dict[str, torch.Tensor] = {}
        for rank, states in enumerate(gathered):
            for key, raw in states.items():  # type: ignore[union-attr]
                out[f"{key}/rank{rank}"] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        return out

    def _save(self, run_dir: Path, step: int, recipe: Recipe, optimizers: dict[str, torch.optim.Optimizer],
              sampler: EpochSampler, phase: str, last_values: dict[str, float]) -> Path | None:
        rng = self._rng_state()  # a collective under DDP: every process takes part
        if not self.dist.is_main:
            D.barrier()
            return None
        extra = {**rng, **sampler.state(), **{f"recipe/{k}": v for k, v in recipe.extra_state().items()}}
        meta = {
            "recipe": self.config.recipe,
            "phase": phase,
            "losses": last_values,
            "world_size": self.dist.world_size,
            "synthmed_version": synthmed.__version__,
            "torch_version": torch.__version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        path = ckpt.save_checkpoint(run_dir / "checkpoints", step, recipe.networks, optimizers, extra, meta)
        D.barrier()
        return path

    def _restore(self, record: dict[str, Any], tensors: dict[str, torch.Tensor], recipe: Recipe,
                 optimizers: dict[str, torch.optim.Optimizer], sampler: EpochSampler) -> int:
        saved_world = int(record.get("world_size", 1))
        if saved_world != self.dist.world_size:
            raise ConfigError(f"this run was trained on {saved_world} process(es); resume it with the same number")
        ckpt.restore_networks(recipe.networks, tensors)
        ckpt.restore_optimizers(optimizers, record, tensors)
        extra = ckpt.extra_tensors(tensors)
        sampler.load_state(extra)
        recipe.load_extra_state({k[len("recipe/"):]: v for k, v in extra.items() if k.startswith("recipe/")})
        suffix = f"/rank{self.dist.rank}" if self.dist.enabled else ""
        torch.set_rng_state(extra[f"rng/cpu{suffix}"])
        if self.device.type == "cuda" and f"rng/cuda{suffix}" in extra:
            torch.cuda.set_rng_state(extra[f"rng/cuda{suffix}"], self.device)
        return int(record["step"])

    def _write_preview(self, recipe: Recipe, run_dir: Path, inputs: dict[str, torch.Tensor], step: int) -> Path:
        from synthmed.viz.grid import save_grid

        images = recipe.preview(inputs)
        scale = max(1, 256 // max(images.shape[-1], 1))
        return save_grid(run_dir / "samples" / f"step_{step:08d}.png", images, scale=min(scale, 4))

    def _write_outputs(self, recipe: Recipe, run_dir: Path, inputs: dict[str, torch.Tensor], step: int,
                       final: bool) -> None:
        from synthmed.viz.curves import plot_losses

        if final and not (run_dir / "samples" / f"step_{step:08d}.png").exists():
            self._write_preview(recipe, run_dir, inputs, step)
        plot_losses(run_dir / "losses.csv", run_dir / "curves.png", title=f"{run_dir.name}: losses")

    def _write_metrics(self, run_dir: Path, steps_this_session: int, step: int, wall: float, why: str,
                       last_values: dict[str, float], evaluation: dict[str, Any] | None = None) -> None:
        path = run_dir / "metrics.json"
        metrics: dict[str, Any] = {}
        if path.exists():
            try:
                metrics = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                metrics = {}
        t = self.config.train
        sessions = metrics.get("training", {}).get("sessions", 0) + 1
        metrics["training"] = {
            "step": step,
            "stopped_because": why,
            "sessions": sessions,
            "last_session": {
                "steps": steps_this_session,
                "wall_seconds": round(wall, 2),
                "steps_per_second": round(steps_this_session / wall, 3) if wall > 0 else None,
                "images_per_second": round(steps_this_session * t.batch_size * self.dist.world_size / wall, 1)
                if wall > 0 else None,
                "batch_size": t.batch_size,
                "world_size": self.dist.world_size,
                "device": str(self.device),
                "precision": self.precision,
                "threads": torch.get_num_threads(),
            },
            "final_losses": last_values,
        }
        if evaluation is not None:
            metrics["training_evaluation"] = evaluation
        atomic_write_text(path, json.dumps(metrics, indent=1))


class _StopTraining(Exception):
    pass


def fit(config: RunConfig, out: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Train a fresh run described by ``config``."""
    return Trainer(config, out=None if out is None else Path(out), progress=progress).run()


def resume(run: str | Path, steps: int | None = None, max_minutes: float | None = None,
           progress: bool = True) -> TrainResult:
    """Continue a run from its latest checkpoint, optionally with a new step/time budget."""
    run_dir = resolve_run_dir(run)
    config = read_run_config(run_dir / "config.yaml")
    if steps is not None:
        config.train.steps = steps
    if max_minutes is not None:
        config.train.max_minutes = max_minutes
        if steps is None:
            config.train.steps = None  # a new time budget alone: go on until it is spent, as a fresh run would
    return Trainer(config, resume=run_dir, progress=progress).run()

"""The one trainer: every recipe runs through :func:`fit`.

It owns device and precision, data-parallel processes, EMA, budgets, the run directory, checkpoints (atomic,
exactly resumable), NaN detection, Ctrl-C, the progress bar and the periodic sample grid. The hot loop never
synchronises with the device except every ``log_every`` steps, when the buffered losses are read at once.
"""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import synthmed
from synthmed.data import load_training_set
from synthmed.data.sets import BatchStream, TrainingSet, check_spec
from synthmed.devices import select_device
from synthmed.errors import ConfigError, SynthmedError
from synthmed.io import atomic_write_text
from synthmed.ops import kernels
from synthmed.recipes import build_recipe
from synthmed.recipes.base import Phase, Recipe, config_to_dict, get_recipe, make_config
from synthmed.recipes.step import StepContext
from synthmed.training import checkpoint as ckpt
from synthmed.training import distributed as D
from synthmed.training.config import RunConfig, dump_yaml, read_run_config
from synthmed.training.ema import ema_beta, update_ema
from synthmed.training.losslog import LossLog
from synthmed.training.periodic import (
    Checkpoint,
    EvaluateAndKeepBest,
    LogLosses,
    Loop,
    Periodic,
    Preview,
    write_preview,
)
from synthmed.training.progress import TrainProgress
from synthmed.training.signals import Stopper


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

    def _load_data(self) -> TrainingSet:
        d = self.config.data
        if d.split == "test":
            raise ConfigError("a GAN must never see the test split (it is kept for evaluation); train on 'train'")
        if d.split == "all":
            warnings.warn("training on split 'all' includes any test images of this data: evaluate on other data",
                          stacklevel=2)
        return load_training_set(d.source, **d.loader_options())

    def _build(self, data: TrainingSet) -> Recipe:
        """The recipe for this data: its needs are checked against what the data gives before anything is built."""
        t = self.config.train
        cls = get_recipe(self.config.recipe)
        options = make_config(cls, self.config.recipe_options)
        check_spec(cls.data_spec(options), data.spec(), data.info.source, cls.name)
        torch.manual_seed(t.seed)  # identical initial weights on every process
        recipe = build_recipe(self.config.recipe, options, data.info, t.ema_beta)  # the config checked above
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

    def _evaluator(self, recipe: Recipe, data: TrainingSet) -> Any:
        """Training-time FID (``--eval-every``) on the main process, or None."""
        t = self.config.train
        evaluator, problem = None, None
        if t.eval_every and self.dist.is_main and recipe.validation_metric:
            from synthmed.training.periodic_eval import PeriodicValidation

            try:
                evaluator = PeriodicValidation(recipe, self._validation_data(recipe))
            except SynthmedError as exc:
                problem = exc
        elif t.eval_every and self.dist.is_main:
            from synthmed.training.periodic_eval import PeriodicFID

            try:  # e.g. missing Inception weights: every process must stop, not only this one
                images = getattr(data, "images", None)
                if images is None:
                    raise ConfigError(f"--eval-every scores generated images against real ones; {data.info.source} "
                                      f"gives {data.spec().kind}")
                evaluator = PeriodicFID(recipe, images, t.eval_features, t.eval_samples, seed=t.preview_seed,
                                        device=self.device)
            except SynthmedError as exc:
                problem = exc
        self._stop_together(problem, "the main process could not set up training-time evaluation")
        return evaluator

    def _validation_data(self, recipe: Recipe) -> TrainingSet:
        """The validation split of the run's data (same options, ``split="val"``) on the run's device."""
        d = self.config.data
        if d.split != "train":
            raise ConfigError(f"--eval-every scores {recipe.name!r} on the validation split, so the run must train "
                              f"on split 'train' (got {d.split!r})")
        data = load_training_set(d.source, **{**d.loader_options(), "split": "val"})
        if len(data) == 0:
            raise ConfigError(f"{d.source}: the validation split is empty; raise --val-fraction")
        return data.to(self.device)

    def _prepare_data(self, recipe: Recipe, data: TrainingSet) -> TrainingSet:
        t = self.config.train
        data = recipe.prepare_data(data)
        if len(data) < t.batch_size * self.dist.world_size:
            raise ConfigError(
                f"{data.info.source}: {len(data)} training samples are fewer than one batch of "
                f"{t.batch_size * self.dist.world_size}; lower --batch-size"
            )
        recipe.check_batch_size(t.batch_size)
        if self.channels_last:
            data = data.map_tensors(
                lambda _, x: x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x)
        return data.to(self.device)

    # --- main ------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        resume_record, resume_tensors = None, None
        if self.resume_dir is not None:
            run_dir = Path(self.resume_dir)
            resume_record, resume_tensors = ckpt.load_latest_valid(run_dir / "checkpoints")
        self._setup_runtime()
        try:
            with kernels(self.config.train.cpu_kernels):
                return self._run(resume_record, resume_tensors)
        finally:
            D.shutdown_distributed()

    def _run(self, resume_record: dict[str, Any] | None, resume_tensors: dict[str, torch.Tensor] | None
             ) -> TrainResult:
        t = self.config.train
        # Everything that can fail on bad input happens before the run directory exists.
        data = self._load_data()
        recipe = self._build(data)
        evaluator = self._evaluator(recipe, data)
        data = self._prepare_data(recipe, data)
        optimizers = recipe.configure_optimizers()
        stream = data.batches(t.batch_size, seed=t.seed, rank=self.dist.rank, world_size=self.dist.world_size)
        run_dir, start_step = self._open_run_dir(resume_record, resume_tensors, recipe, optimizers, stream)
        if resume_record is not None and evaluator is not None:
            evaluator.restore(run_dir, start_step)
        self._write_run_config(run_dir, recipe, data, start_step if resume_record else None)
        self.run_dir = run_dir

        def write_checkpoint(step: int, phase: str, values: dict[str, float]) -> Path | None:
            return self._save(run_dir, step, recipe, optimizers, stream, phase, values)

        deadline = None if t.max_minutes is None else time.monotonic() + 60.0 * t.max_minutes
        loop = Loop(
            recipe=recipe, run_dir=run_dir, dist=self.dist, device=self.device,
            log=LossLog(run_dir / "losses.csv", recipe.loss_names()),
            progress=TrainProgress(total_steps=t.steps, start_step=start_step,
                                   max_seconds=None if deadline is None else 60 * t.max_minutes,
                                   enabled=self.show_progress and self.dist.is_main),
            preview_inputs=recipe.preview_inputs(t.preview_count, t.preview_seed),
            write_checkpoint=write_checkpoint, keep_checkpoints=t.keep_checkpoints, step=start_step,
            last_checkpoint=ckpt.latest_checkpoint(run_dir / "checkpoints") if self.dist.is_main else None,
            last_saved_step=start_step if resume_record else -1,
        )
        ctx = StepContext(device=self.device, optimizers=optimizers, precision=self.precision, total_steps=t.steps,
                          draw_batch=stream.next, average_gradients=D.gradient_averager(self.dist),
                          average_values=D.value_averager(self.dist))
        parts = [LogLosses(t.log_every), Preview(t.sample_every), Checkpoint(t.checkpoint_every),
                 EvaluateAndKeepBest(t.eval_every, evaluator)]
        started = time.monotonic()
        stopper = Stopper()  # installed until the last checkpoint is written: a first Ctrl-C never cuts it short
        with loop.progress, stopper.installed():
            why = self._train(loop, ctx, stream, parts, stopper, deadline, resumed=resume_record is not None)
            loop.flush()
            if loop.last_saved_step != loop.step:
                loop.save()
        return self._finish(loop, start_step, time.monotonic() - started, why, evaluator)

    def _train(self, loop: Loop, ctx: StepContext, stream: BatchStream, parts: list[Periodic], stopper: Stopper,
               deadline: float | None, resumed: bool) -> str:
        """The loop: phases in order, one recipe step at a time, then the periodic parts that are due."""
        t = self.config.train
        recipe = loop.recipe
        start_step = loop.step
        for phase, first, end in _phase_plan(recipe.phases(), t.steps):
            if end is not None and loop.step >= end:
                continue
            loop.phase = ctx.phase = phase.name
            recipe.start_phase(phase.name, resumed=resumed and loop.step > first)
            # Asked per phase: a phase may train with its averaged networks held fixed (anomaly: the encoder phase).
            ema_pairs = [(recipe.networks[s], recipe.networks[e]) for s, e in recipe.ema_pairs()]
            while end is None or loop.step < end:
                why = self._should_stop(loop.step, start_step, stopper, deadline)
                if why:
                    return why
                ctx.step = loop.step
                losses = recipe.train_step(stream.next(), ctx)
                for source, shadow in ema_pairs:
                    update_ema(shadow, source, ema_beta(loop.step, t.ema_beta, t.ema_warmup))
                loop.step += 1
                loop.record(losses)
                for part in parts:
                    if part.due(loop.step):
                        part(loop)
        return "steps"

    def _should_stop(self, step: int, start_step: int, stopper: Stopper, deadline: float | None) -> str | None:
        """"interrupted" or "time budget" when the run must stop before ``step``; agreed by all processes.

        Under torchrun the check is a collective, so it runs only at log syncs (and on the first step)."""
        if self.dist.enabled and (step + 1) % self.config.train.log_every != 0 and step != start_step:
            return None
        stop = stopper.requested
        timeout = deadline is not None and time.monotonic() >= deadline
        if self.dist.enabled:
            stop = D.any_process(stop, self.device)
            timeout = D.any_process(timeout, self.device)
        if stop:
            return "interrupted"
        return "time budget" if timeout else None

    def _open_run_dir(self, resume_record: dict[str, Any] | None, resume_tensors: dict[str, torch.Tensor] | None,
                      recipe: Recipe, optimizers: dict[str, torch.optim.Optimizer], stream: BatchStream
                      ) -> tuple[Path, int]:
        """A new run directory (step 0), or the resumed one with everything restored (its checkpoint's step)."""
        if resume_record is None:
            run_dir, problem = Path("."), None
            if self.dist.is_main:
                try:
                    run_dir = self._create_run_dir()
                except SynthmedError as exc:
                    problem = exc
            self._stop_together(problem, "the main process stopped with a configuration error")
            return run_dir, 0
        run_dir = Path(self.resume_dir)  # type: ignore[arg-type]
        if self.dist.is_main:
            ckpt.remove_stale_temporaries(run_dir)
        return run_dir, self._restore(resume_record, resume_tensors or {}, recipe, optimizers, stream)

    def _write_run_config(self, run_dir: Path, recipe: Recipe, data: TrainingSet, resume_step: int | None) -> None:
        if not self.dist.is_main:
            return
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "samples").mkdir(exist_ok=True)
        config_doc = self.config.to_dict()
        config_doc["recipe_options"] = config_to_dict(recipe.config)
        config_doc["data_info"] = data.info.to_dict()
        config_doc["recipe_summary"] = recipe.summary()  # parameters per network, and what the recipe chose
        config_doc["synthmed_version"] = synthmed.__version__
        atomic_write_text(run_dir / "config.yaml", dump_yaml(config_doc))
        LossLog(run_dir / "losses.csv", recipe.loss_names()).start(resume_step)

    def _finish(self, loop: Loop, start_step: int, wall: float, why: str, evaluator: Any) -> TrainResult:
        if loop.is_main:
            self._write_outputs(loop)
            self._write_metrics(loop.run_dir, loop.step - start_step, loop.step, wall, why, loop.last_values,
                                None if evaluator is None else evaluator.summary())
        result = TrainResult(run_dir=loop.run_dir, steps=loop.step, stopped_because=why,
                             checkpoint=loop.last_checkpoint, final_losses=loop.last_values, wall_seconds=wall)
        if why == "interrupted":
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
              stream: BatchStream, phase: str, last_values: dict[str, float]) -> Path | None:
        rng = self._rng_state()  # a collective under DDP: every process takes part
        if not self.dist.is_main:
            D.barrier()
            return None
        extra = {**rng, **stream.state(), **{f"recipe/{k}": v for k, v in recipe.extra_state().items()}}
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
                 optimizers: dict[str, torch.optim.Optimizer], stream: BatchStream) -> int:
        saved_world = int(record.get("world_size", 1))
        if saved_world != self.dist.world_size:
            raise ConfigError(f"this run was trained on {saved_world} process(es); resume it with the same number")
        ckpt.restore_networks(recipe.networks, tensors)
        ckpt.restore_optimizers(optimizers, record, tensors)
        extra = ckpt.extra_tensors(tensors)
        stream.load_state(extra)
        recipe.load_extra_state({k[len("recipe/"):]: v for k, v in extra.items() if k.startswith("recipe/")})
        suffix = f"/rank{self.dist.rank}" if self.dist.enabled else ""
        torch.set_rng_state(extra[f"rng/cpu{suffix}"])
        if self.device.type == "cuda" and f"rng/cuda{suffix}" in extra:
            torch.cuda.set_rng_state(extra[f"rng/cuda{suffix}"], self.device)
        return int(record["step"])

    def _write_outputs(self, loop: Loop) -> None:
        """The last step's preview (unless a periodic one exists) and the loss curves."""
        from synthmed.viz.curves import plot_losses

        if not (loop.run_dir / "samples" / f"step_{loop.step:08d}.png").exists():
            write_preview(loop, loop.step)
        plot_losses(loop.run_dir / "losses.csv", loop.run_dir / "curves.png", title=f"{loop.run_dir.name}: losses")

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


def fit(config: RunConfig, out: str | Path | None = None, progress: bool = True) -> TrainResult:
    """Train a fresh run described by ``config``."""
    return Trainer(config, out=None if out is None else Path(out), progress=progress).run()


def resume(run: str | Path, steps: int | None = None, max_minutes: float | None = None,
           num_threads: int | None = None, progress: bool = True) -> TrainResult:
    """Continue a run from its latest checkpoint, optionally with a new step/time budget or CPU thread count."""
    run_dir = resolve_run_dir(run)
    config = read_run_config(run_dir / "config.yaml")
    if num_threads is not None:
        config.train.num_threads = num_threads
    if steps is not None:
        config.train.steps = steps
    if max_minutes is not None:
        config.train.max_minutes = max_minutes
        if steps is None:
            config.train.steps = None  # a new time budget alone: go on until it is spent, as a fresh run would
    return Trainer(config, resume=run_dir, progress=progress).run()

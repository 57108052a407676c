"""Run configuration: what is trained (recipe), on what (data), and how (trainer)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from synthmed.errors import ConfigError, SynthmedError


@dataclass
class DataConfig:
    """Arguments of :func:`synthmed.data.load_dataset`; ``source=None`` is the embedded BreastMNIST."""

    source: str | None = None
    size: int | None = None
    channels: str | None = None
    split: str = "train"
    image_key: str = "images"
    label_key: str | None = None
    mask_key: str | None = None
    patient_key: str | None = None
    split_key: str | None = None
    #: Image folders: are first-level sub-folders classes or patients? "auto" decides and says which.
    folder_groups: str = "auto"
    #: Seed of the train/val/test split for sources without one (independent of the training seed).
    split_seed: int = 0
    #: images, paired, unpaired, records, or auto (records for CSV/parquet, paired when target or pair is given).
    kind: str = "auto"
    #: Second source: targets matched to the images by file name (paired), or domain B (unpaired).
    target: str | None = None
    #: One source's pairing: "image:mask" (masks become targets) or "A:B" (channel groups of one array).
    pair: str | None = None
    #: Paired folders: a folder of field-of-view masks matched like the targets (DRIVE's mask/); batch key "mask".
    fov: str | None = None
    #: Paired folders: a regular expression whose first group is the key an image and its target share.
    match: str | None = None
    #: Paired folders: read targets as {0, 1} masks (True), as images (False) or decide (None).
    target_masks: bool | None = None
    #: (low, high) of stored values (after DICOM rescale, e.g. HU) mapped to [-1, 1] for every image: a fixed
    #: window instead of per-series / per-volume ranges, so translation outputs can be written back in units.
    intensity_range: tuple[float, float] | None = None
    #: The target side's (domain B's) own intensity_range (e.g. CT in HU beside MR); default: intensity_range.
    target_intensity_range: tuple[float, float] | None = None
    #: Folders of images, DICOM or NIfTI files: a CSV naming each image's class by file name or case folder.
    labels: str | None = None
    #: The labels CSV's class column (default: its second column).
    label_column: str | None = None
    #: "value=name,...": class names for the CSV's raw values, merging classes ("0=other,1=other,2=melanoma").
    label_map: str | None = None
    #: The labels CSV's column naming each image or case (default: its first column).
    label_key_column: str | None = None
    #: Mask targets: "binary" ({0, 1} masks) or "labels" (label maps of class indices 0, 1, 2, ...; segmentation).
    mask_values: str = "binary"
    #: Per-volume intensity normalisation: "none" (the fixed mapping), "patient" (each patient's images clipped to
    #: their own 1st..99th percentile per channel, mapped to [-1, 1]) or "image" (the same per image).
    normalize: str = "none"
    #: Share of patients (or images) split off as val / test where the source has no split of its own; None:
    #: the loader's default (0.1 / 0.2). DRIVE's training/ folder: test_fraction=0 (testing/ is the test set).
    val_fraction: float | None = None
    test_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.mask_values not in ("binary", "labels"):
            raise ConfigError(f"--mask-values must be binary or labels (got {self.mask_values!r})")
        if self.normalize not in ("none", "patient", "image"):
            raise ConfigError(f"--normalize must be none, patient or image (got {self.normalize!r})")
        val, test = self.val_fraction, self.test_fraction
        for flag, value in (("--val-fraction", val), ("--test-fraction", test)):
            if value is not None and not 0.0 <= value < 1.0:
                raise ConfigError(f"{flag} must be in [0, 1) (got {value})")
        if (val if val is not None else 0.1) + (test if test is not None else 0.2) >= 1.0:
            raise ConfigError(f"--val-fraction and --test-fraction must sum to less than 1 (got "
                              f"{0.1 if val is None else val} + {0.2 if test is None else test}; unset: 0.1 / 0.2)")

    def loader_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`synthmed.data.load_training_set` (all but ``source``); the split fractions
        only when given, so every loader keeps its own default otherwise."""
        skipped = {"source", "split_seed", "val_fraction", "test_fraction"}
        options = {k: v for k, v in dataclasses.asdict(self).items() if k not in skipped}
        options["seed"] = self.split_seed
        for key in ("val_fraction", "test_fraction"):
            if getattr(self, key) is not None:
                options[key] = getattr(self, key)
        return options


@dataclass
class TrainConfig:
    """Budgets, device and bookkeeping. Either budget may be open (None); both stop the run when reached."""

    steps: int | None = 3400
    max_minutes: float | None = None
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | None = None
    num_threads: int | None = None
    ema_beta: float = 0.999
    #: EMA warm-up constant W: the decay at step t is min(ema_beta, (1 + t) / (W + t)); 1 turns the warm-up off.
    ema_warmup: float = 10.0
    log_every: int = 25
    sample_every: int = 250
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    preview_count: int = 64
    preview_seed: int = 0
    #: Score the sampling generator (FID in ``eval_features`` space) every N steps and keep the best checkpoint.
    eval_every: int | None = None
    eval_features: str = "radiomics"
    eval_samples: int = 500
    #: CPU convolution kernels: "auto" (synthmed.ops where measured faster) or "native" (PyTorch's own).
    cpu_kernels: str = "auto"


@dataclass
class RunConfig:
    recipe: str = "unconditional"
    recipe_options: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: Path | None = None) -> RunConfig:
        """A recorded run's configuration (its ``config.yaml``), with the options its recipe gained since filled in
        as the run trained (:attr:`~synthmed.recipes.base.Recipe.absent_from_older_runs`)."""
        from synthmed.recipes import RECIPES

        where = f"{source}: " if source else ""
        recipe = raw.get("recipe", "unconditional")
        # An unknown recipe is reported where it is built; reading the rest of the run needs no recipe.
        gained = RECIPES[recipe].absent_from_older_runs if recipe in RECIPES else {}
        try:
            return cls(
                recipe=recipe,
                recipe_options={**gained, **(raw.get("recipe_options") or {})},
                data=DataConfig(**(raw.get("data") or {})),
                train=TrainConfig(**(raw.get("train") or {})),
                name=raw.get("name", ""),
            )
        except TypeError as exc:
            raise ConfigError(f"{where}invalid run configuration ({exc})") from exc

    def validate(self) -> None:
        t = self.train
        if t.steps is None and t.max_minutes is None:
            raise ConfigError("give a budget: --steps and/or --max-minutes")
        if t.steps is not None and t.steps < 1:
            raise ConfigError(f"--steps must be at least 1 (got {t.steps})")
        if t.max_minutes is not None and t.max_minutes <= 0:
            raise ConfigError(f"--max-minutes must be positive (got {t.max_minutes})")
        if t.num_threads is not None and t.num_threads < 1:
            raise ConfigError(f"--threads must be at least 1 (got {t.num_threads})")
        if t.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1 (got {t.batch_size})")
        if t.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"--precision must be auto, fp32 or bf16 (got {t.precision!r})")
        if not 0.0 <= t.ema_beta < 1.0:
            raise ConfigError(f"--ema-beta must be in [0, 1) (got {t.ema_beta})")
        if not t.ema_warmup >= 1.0:  # also refuses NaN
            raise ConfigError(f"--ema-warmup must be at least 1 (got {t.ema_warmup})")
        if t.eval_every is not None and t.eval_every < 1:
            raise ConfigError("--eval-every must be at least 1")
        if t.eval_samples < 2:
            raise ConfigError("--eval-samples must be at least 2")
        if t.eval_every is not None and t.eval_features not in ("radiomics", "inception"):
            raise ConfigError(f"--eval-features must be radiomics or inception (got {t.eval_features!r}); the domain "
                              "network would first have to be trained")
        if t.cpu_kernels not in ("auto", "native"):
            raise ConfigError(f"--cpu-kernels must be auto or native (got {t.cpu_kernels!r})")
        for key in ("log_every", "sample_every", "checkpoint_every"):
            if getattr(t, key) < 1:
                raise ConfigError(f"{key} must be at least 1")


def read_run_config(path: Path) -> RunConfig:
    return RunConfig.from_dict(read_run_document(path), source=path)


def read_run_document(path: Path) -> dict[str, Any]:
    """The whole ``config.yaml`` of a run, including what was resolved at start (``data_info``, versions)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SynthmedError(f"{path}: cannot read run configuration ({exc})") from exc
    if not isinstance(raw, dict):
        raise SynthmedError(f"{path}: not a synthmed run configuration")
    return raw


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)

"""Does GAN-generated minority data make a classifier better, and by more than the luck of one seed?

:func:`run_augmentation_experiment` trains the same classifier on several training sets ("arms") built from the
real training split, each once per seed, scores every classifier on the real test split and compares every arm
with real-only training seed by seed:

| arm | training set |
|---|---|
| ``real`` | the real training split |
| ``real+traditional`` | the same, every batch flipped / rotated / intensity-jittered (``traditional_augment``) |
| ``real+G:balanced`` | real, every class topped up with G's samples to the largest class's count |
| ``real+G:ratio`` | real plus ``synthetic_ratio`` x (real training size) samples of G, equally many per class |
| ``real+traditional+G`` | ``real+G:balanced`` with traditional augmentation of every batch |
| ``G:synthetic-only`` | G's samples only, as many per class as the real largest class (tested on real) |

``G`` is each generator's run directory name. A seed fixes the classifier's initial weights, batch order,
augmentation draws and G's samples, so arm differences are paired by seed. Early stopping and model selection
see only the validation split; the test split is scored once per trained classifier and never chosen on. The
minority class (least frequent in the training split) is the positive class of AUC and of sensitivity at 90%
specificity; balanced accuracy uses the arg-max over all classes.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from synthmed.data import ImageDataset, load_dataset
from synthmed.errors import ConfigError, SynthmedError
from synthmed.io import atomic_write_text, write_folder_atomically
from synthmed.metrics.classification import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LEARNING_RATE,
    DEFAULT_MAX_EPOCHS,
    DEFAULT_PATIENCE,
    DEFAULT_WEIGHT_DECAY,
    TrainingHistory,
    evaluate_classifier,
    train_classifier,
)
from synthmed.metrics.stats import PAIRED_METHOD, mean_interval, paired_comparison
from synthmed.nn.classifiers import CLASSIFIERS

ARM_TEMPLATES = ("real", "real+traditional", "real+G:balanced", "real+G:ratio", "real+traditional+G",
                 "G:synthetic-only")
#: The metrics summarised and compared per arm (``accuracy`` is kept per seed too).
SUMMARY_METRICS = ("auc", "balanced_accuracy", "sensitivity_at_90_specificity")
METRIC_LABELS = {"auc": "AUC", "balanced_accuracy": "balanced accuracy",
                 "sensitivity_at_90_specificity": "sensitivity at 90% specificity"}
REFERENCE_ARM = "real"
_FORBIDDEN_SPLITS = ("all", "val", "test")


class GeneratorLike(Protocol):
    """What the experiment needs of a generator: a loaded class-conditional run (:class:`synthmed.api.TrainedModel`)
    or any object with these members."""

    class_names: tuple[str, ...]

    def sample(self, n: int, seed: int = 0, labels: torch.Tensor | int | str | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class Arm:
    """One training set recipe: which generator, how many synthetic images, and whether to augment."""

    name: str
    template: str
    generator: str | None = None
    synthetic: str = "none"  # none | balanced | ratio | only
    traditional: bool = False


@dataclass(frozen=True)
class Splits:
    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    class_names: tuple[str, ...]
    minority: int
    majority: int


@dataclass
class AugmentationResult:
    """Where the outputs went, the whole ``results.json`` document, and the total wall time."""

    out: Path
    results: dict[str, Any]
    wall_seconds: float


@dataclass
class _Generator:
    name: str
    model: Any
    provenance: dict[str, Any]
    cache: dict[tuple[int, tuple[int, ...]], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)


# --- arms and counts -----------------------------------------------------------------------------------------
def plan_arms(generator_names: Sequence[str], subset: Sequence[str] | None = None) -> list[Arm]:
    """The arms for these generators, optionally only those named in ``subset`` (plus ``real``, the reference).

    Args:
        generator_names: One name per generator (its run directory name).
        subset: Arm names (``"real+runA:balanced"``) or templates (``"real+G:balanced"``: every generator).
    """
    arms = [Arm("real", "real"), Arm("real+traditional", "real+traditional", traditional=True)]
    for g in generator_names:
        arms += [Arm(f"real+{g}:balanced", "real+G:balanced", g, "balanced"),
                 Arm(f"real+{g}:ratio", "real+G:ratio", g, "ratio"),
                 Arm(f"real+traditional+{g}", "real+traditional+G", g, "balanced", traditional=True),
                 Arm(f"{g}:synthetic-only", "G:synthetic-only", g, "only")]
    if subset is None:
        return arms
    wanted = set(subset)
    known = {a.name for a in arms} | {a.template for a in arms}
    unknown = sorted(wanted - known)
    if unknown:
        raise ConfigError(f"unknown arm(s) {', '.join(unknown)}; arms: {', '.join(a.name for a in arms)} "
                          f"(or templates {', '.join(ARM_TEMPLATES)})")
    return [a for a in arms if a.name == REFERENCE_ARM or a.name in wanted or a.template in wanted]


def synthetic_counts(kind: str, real_counts: Sequence[int], synthetic_ratio: float = 0.5) -> list[int]:
    """Synthetic images per class for an arm's ``synthetic`` kind.

    ``balanced``: up to the largest class; ``ratio``: ``round(synthetic_ratio * sum(real_counts))`` split
    equally, the remainder going to the rarest classes first; ``only``: the largest class's count for every
    class; ``none``: zeros.

    Args:
        kind: ``none``, ``balanced``, ``ratio`` or ``only``.
        real_counts: Real training images per class.
        synthetic_ratio: Synthetic images per real training image (``ratio``).
    """
    largest, k = max(real_counts), len(real_counts)
    if kind == "none":
        return [0] * k
    if kind == "balanced":
        return [largest - c for c in real_counts]
    if kind == "only":
        return [largest] * k
    if kind == "ratio":
        total = round(synthetic_ratio * sum(real_counts))
        counts = [total // k] * k
        rarest_first = sorted(range(k), key=lambda c: (real_counts[c], c))
        for c in rarest_first[: total - sum(counts)]:
            counts[c] += 1
        return counts
    raise ValueError(f"unknown synthetic kind {kind!r}")


# --- data and generators -------------------------------------------------------------------------------------
def _class_counts(labels: torch.Tensor, num_classes: int) -> list[int]:
    return torch.bincount(labels.long().cpu(), minlength=num_classes).tolist()


def load_splits(data: str | Path | None, size: int | None = None, split_seed: int = 0,
                data_options: Mapping[str, Any] | None = None) -> Splits:
    """The train, validation and test splits of ``data`` with labels, and its minority and majority classes.

    Args:
        data: A :func:`synthmed.data.load_dataset` source (``None``: the embedded BreastMNIST).
        size: Image side (default: the source's).
        split_seed: Seed of the split for sources without one of their own.
        data_options: Further :func:`synthmed.data.load_dataset` keyword arguments (``channels``, ...).
    """
    options = dict(data_options or {})
    train, val, test = (load_dataset(data, split=s, size=size, seed=split_seed, **options)
                        for s in ("train", "val", "test"))
    name = train.info.source or "the data"
    if train.labels is None or train.info.num_classes < 2:
        raise ConfigError(f"{name}: the augmentation experiment needs labelled images of at least 2 classes")
    for split in (val, test):
        if len(split) == 0:
            raise ConfigError(f"{name}: the {split.info.split} split is empty")
    k = train.info.num_classes
    names = tuple(train.info.class_names) or tuple(str(c) for c in range(k))
    counts = _class_counts(train.labels, k)
    present = [c for c in range(k) if counts[c] > 0]
    minority = min(present, key=lambda c: (counts[c], c))
    majority = max(present, key=lambda c: (counts[c], -c))
    test_counts = _class_counts(test.labels, k)
    if test_counts[minority] == 0 or test_counts[minority] == len(test):
        raise ConfigError(f"{name}: the test split needs minority ({names[minority]}) and other images for AUC")
    return Splits(train, val, test, names, minority, majority)


def _canonical_source(source: str | None) -> str:
    text = (source or "breastmnist").strip()
    if text.lower() in ("breastmnist", "medmnist:breastmnist"):  # the embedded file is MedMNIST's 28 px one
        return "medmnist:breastmnist"
    if text.lower().startswith("medmnist:"):
        return text.lower()
    path = Path(text).expanduser()
    return str(path.resolve()) if path.exists() else text


def check_generator_run(run: str | Path, splits: Splits, split_seed: int = 0) -> Path:
    """Refuse (one-line :class:`ConfigError`) a run that saw more than this data's training split.

    Reads the run's ``config.yaml`` only (no weights): the run must have been trained on split ``train`` of the
    same source, with the same split seed, the same classes and the same image shape.

    Args:
        run: A run directory or a name under ``./runs``.
        splits: The experiment's data (:func:`load_splits`).
        split_seed: The experiment's split seed.
    """
    from synthmed.training.config import RunConfig, read_run_document
    from synthmed.training.trainer import resolve_run_dir

    run_dir = resolve_run_dir(run)
    raw = read_run_document(run_dir / "config.yaml")
    config = RunConfig.from_dict(raw, source=run_dir / "config.yaml")
    info = raw.get("data_info") or {}
    if config.data.split != "train":
        raise ConfigError(f"{run_dir}: the generator was trained on split {config.data.split!r}, which holds "
                          "validation or test images; the experiment needs a run trained on split 'train' only")
    run_source = _canonical_source(info.get("source") or config.data.source)
    data_source = _canonical_source(splits.train.info.source)
    if run_source != data_source:
        raise ConfigError(f"{run_dir}: the generator was trained on {run_source}, not on {data_source}")
    if config.data.split_seed != split_seed and not data_source.startswith("medmnist:"):
        raise ConfigError(f"{run_dir}: the generator's split seed is {config.data.split_seed}, the experiment's "
                          f"{split_seed}: its training split may hold test images")
    _check_shape_and_classes(run_dir, info, splits)
    return run_dir


def _check_shape_and_classes(run_dir: Path, info: Mapping[str, Any], splits: Splits) -> None:
    data = splits.train.info
    names = tuple(info.get("class_names") or ())
    if names and names != splits.class_names:
        raise ConfigError(f"{run_dir}: the generator's classes {list(names)} differ from the data's "
                          f"{list(splits.class_names)}")
    run_shape = (info.get("channels"), info.get("height"), info.get("width"))
    if None not in run_shape and run_shape != (data.channels, data.height, data.width):
        raise ConfigError(f"{run_dir}: the generator makes {run_shape[0]}-channel {run_shape[1]}x{run_shape[2]} "
                          f"images, the data has {data.channels}-channel {data.height}x{data.width} ones "
                          f"(pass size={run_shape[1]})")


def _check_generator(name: str, model: Any, class_names: tuple[str, ...]) -> None:
    if not getattr(model, "conditional", True):
        raise ConfigError(f"{name}: the generator is not class-conditional, so it cannot add images of a chosen "
                          "class; train conditional, acgan, cwgan-gp, bagan or bagan-gp")
    names = tuple(getattr(model, "class_names", ()) or ())
    if names != class_names:
        raise ConfigError(f"{name}: the generator's classes {list(names)} differ from the data's {list(class_names)}")


def _load_generators(generators: Sequence[str | Path], loaded: Mapping[str, GeneratorLike] | None, splits: Splits,
                     split_seed: int, device: str) -> list[_Generator]:
    from synthmed import api

    if loaded is not None:
        if generators:
            raise ConfigError("give generator runs or loaded generators, not both")
        result = [_Generator(name, model, {"name": name, "run": None, "checkpoint_step": getattr(model, "step", None)})
                  for name, model in loaded.items()]
    else:
        run_dirs = [check_generator_run(run, splits, split_seed) for run in generators]  # all refused before loading
        result = []
        for run_dir in run_dirs:
            model = api.load(run_dir, device=device)
            result.append(_Generator(run_dir.name, model, {
                "name": run_dir.name, "run": str(run_dir), "checkpoint_step": int(model.step),
                "recipe": model.config.recipe, "trained_on": {"source": model.config.data.source or "breastmnist",
                                                              "split": model.config.data.split}}))
    names = [g.name for g in result]
    if len(set(names)) != len(names):
        raise ConfigError(f"two generators share a name ({', '.join(names)}); arms are named after run directories")
    for g in result:
        _check_generator(g.name, g.model, splits.class_names)
    return result


def _synthetic(generator: _Generator, counts: Sequence[int], seed: int,
               shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``counts[k]`` samples of each class k from one ``sample`` call seeded by ``seed`` (cached)."""
    key = (seed, tuple(counts))
    if key not in generator.cache:
        labels = torch.cat([torch.full((n,), k, dtype=torch.long) for k, n in enumerate(counts)])
        images = generator.model.sample(int(labels.numel()), seed=seed, labels=labels).float().cpu()
        if tuple(images.shape) != (labels.numel(), *shape):
            raise ConfigError(f"{generator.name}: samples are shaped {tuple(images.shape[1:])}, the data's images "
                              f"{shape}")
        # Seeds run one after another: keep this seed's sets (its arms share them), drop older seeds'.
        generator.cache = {k: v for k, v in generator.cache.items() if k[0] == seed}
        generator.cache[key] = (images, labels)
    return generator.cache[key]


def build_training_set(arm: Arm, splits: Splits, generators: Mapping[str, _Generator], seed: int,
                       synthetic_ratio: float) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The training images, labels and synthetic counts per class of ``arm`` for ``seed``.

    Args:
        arm: The arm.
        splits: The experiment's data.
        generators: Generators by name.
        seed: The seed (also the synthetic sample seed).
        synthetic_ratio: Synthetic images per real training image of ``ratio`` arms.
    """
    real_x, real_y = splits.train.images, splits.train.labels.long()
    real_counts = _class_counts(real_y, len(splits.class_names))
    counts = synthetic_counts(arm.synthetic, real_counts, synthetic_ratio)
    if arm.generator is None or sum(counts) == 0:
        return real_x, real_y, counts
    fake_x, fake_y = _synthetic(generators[arm.generator], counts, seed, tuple(real_x.shape[1:]))
    if arm.synthetic == "only":
        return fake_x, fake_y, counts
    return torch.cat([real_x, fake_x]), torch.cat([real_y, fake_y]), counts


# --- one arm x seed ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Budget:
    max_epochs: int
    patience: int
    batch_size: int
    device: str


def _run_one(arm: Arm, seed: int, classifier: str, splits: Splits, generators: Mapping[str, _Generator],
             synthetic_ratio: float, budget: Budget) -> tuple[dict[str, Any], nn.Module]:
    started = time.perf_counter()
    x, y, counts = build_training_set(arm, splits, generators, seed, synthetic_ratio)
    model, history = train_classifier(x, y, splits.val.images, splits.val.labels, arch=classifier, seed=seed,
                                      max_epochs=budget.max_epochs, patience=budget.patience,
                                      batch_size=budget.batch_size, augment=arm.traditional, device=budget.device,
                                      num_classes=len(splits.class_names))
    device = next(model.parameters()).device
    metrics = evaluate_classifier(model, splits.test.images, splits.test.labels, splits.minority, device=device)
    return _seed_record(seed, metrics, history, counts, arm, len(splits.train), time.perf_counter() - started), model


def _seed_record(seed: int, metrics: dict[str, float], history: TrainingHistory, counts: list[int], arm: Arm,
                 n_real: int, wall: float) -> dict[str, Any]:
    return {"seed": seed, **metrics, "best_epoch": history.best_epoch, "epochs_run": len(history.epochs),
            "stopped_early": history.stopped_early,
            "best_val_auc": history.epochs[history.best_epoch - 1]["val_auc"],
            "n_real_train": 0 if arm.synthetic == "only" else n_real, "synthetic_per_class": counts,
            "wall_seconds": round(wall, 3)}


# --- the experiment ------------------------------------------------------------------------------------------
def _classifier_names(classifier: str | Sequence[str]) -> list[str]:
    if isinstance(classifier, str):
        names = list(CLASSIFIERS) if classifier == "both" else [c.strip() for c in classifier.split(",") if c.strip()]
    else:
        names = list(classifier)
    unknown = [c for c in names if c not in CLASSIFIERS]
    if not names or unknown:
        raise ConfigError(f"unknown classifier {', '.join(unknown) or '(none)'}; choose {', '.join(CLASSIFIERS)} "
                          "or both")
    return list(dict.fromkeys(names))


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    values = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if len(set(values)) != len(values) or len(values) < 2:
        raise ConfigError(f"give at least 2 distinct seeds (5 or more recommended; got {seeds!r}): a paired "
                          "comparison over one seed says nothing about seed-to-seed variation")
    return values


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SynthmedError(f"{out}: output folder exists and is not empty")


def _check_options(synthetic_ratio: float, max_epochs: int, patience: int, batch_size: int) -> None:
    if not synthetic_ratio > 0 or not math.isfinite(synthetic_ratio):
        raise ConfigError(f"synthetic_ratio must be positive (got {synthetic_ratio})")
    if min(max_epochs, patience, batch_size) < 1:
        raise ConfigError(f"max_epochs, patience and batch_size must be at least 1 "
                          f"(got {max_epochs}, {patience}, {batch_size})")


def run_augmentation_experiment(
    data: str | Path | None,
    generators: Sequence[str | Path],
    out: str | Path,
    *,
    seeds: int | Sequence[int] = 5,
    classifier: str | Sequence[str] = "cnn",
    size: int | None = None,
    synthetic_ratio: float = 0.5,
    max_epochs: int = DEFAULT_MAX_EPOCHS,
    patience: int = DEFAULT_PATIENCE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "cpu",
    progress: bool = True,
    arms: Sequence[str] | None = None,
    loaded_generators: Mapping[str, GeneratorLike] | None = None,
    split_seed: int = 0,
    data_options: Mapping[str, Any] | None = None,
) -> AugmentationResult:
    """Train every arm x seed, score on the real test split, and write the results into the folder ``out``.

    Writes ``results.json``, ``results.md``, ``arms.png`` and ``saliency.png`` (one ``saliency_<classifier>.png``
    more per further classifier) into a staging folder renamed to ``out`` at the end, so a failure leaves nothing.

    Args:
        data: The data source (:func:`synthmed.data.load_dataset`; ``None``: embedded BreastMNIST).
        generators: Class-conditional runs trained on ``data``'s train split (refused otherwise).
        out: New or empty output folder.
        seeds: Number of seeds (0..n-1) or the seeds themselves; at least 2, 5 or more recommended.
        classifier: ``cnn``, ``resnet18``, ``both`` or a list of them.
        size: Image side (default: the source's); must match the generators'.
        synthetic_ratio: Synthetic images per real training image in ``real+G:ratio``.
        max_epochs: Most epochs per classifier.
        patience: Early-stopping patience (epochs without a better validation AUC).
        batch_size: Images per step.
        device: Device for classifiers and generators (``cpu``, ``cuda``, ``auto``).
        progress: Show a progress bar over classifiers x arms x seeds.
        arms: A subset of arm names or templates (``real`` is always run: it is the reference).
        loaded_generators: Instead of ``generators``: {name: object with ``sample(n, seed, labels=)`` and
            ``class_names``} (tests, notebooks); no run configuration is checked for these.
        split_seed: Seed of the train/val/test split for sources without their own.
        data_options: Further :func:`synthmed.data.load_dataset` keyword arguments (``channels``, ...), as the
            generators were trained with.
    """
    started = time.perf_counter()
    out = Path(out)
    _check_out(out)
    _check_options(synthetic_ratio, max_epochs, patience, batch_size)
    seed_list, classifiers = _seed_list(seeds), _classifier_names(classifier)
    splits = load_splits(data, size, split_seed, data_options)
    loaded = _load_generators(list(generators), loaded_generators, splits, split_seed, device)
    plan = plan_arms([g.name for g in loaded], arms)
    budget = Budget(max_epochs, patience, batch_size, device)
    by_name = {g.name: g for g in loaded}
    records, models = _run_all(plan, seed_list, classifiers, splits, by_name, synthetic_ratio, budget, progress)
    document = _document(plan, seed_list, classifiers, splits, loaded, records, synthetic_ratio, budget,
                         time.perf_counter() - started)
    _write_outputs(out, document, splits, plan, models, classifiers)
    return AugmentationResult(out, document, document["wall_seconds_total"])


def _run_all(plan: list[Arm], seeds: list[int], classifiers: list[str], splits: Splits,
             generators: Mapping[str, _Generator], synthetic_ratio: float, budget: Budget,
             progress: bool) -> tuple[dict[str, dict[str, list[dict[str, Any]]]], dict[tuple[str, str], nn.Module]]:
    """Per classifier and arm, the per-seed records; the first seed's models of the arms saliency shows."""
    records: dict[str, dict[str, list[dict[str, Any]]]] = {c: {a.name: [] for a in plan} for c in classifiers}
    shown = _saliency_arms(plan)
    models: dict[tuple[str, str], nn.Module] = {}
    with ExperimentProgress(len(classifiers) * len(plan) * len(seeds), enabled=progress) as bar:
        for seed in seeds:  # seeds outermost: one seed's synthetic samples serve all its arms
            for name in classifiers:
                for arm in plan:
                    bar.describe(f"{name}  {arm.name}  seed {seed}")
                    record, model = _run_one(arm, seed, name, splits, generators, synthetic_ratio, budget)
                    records[name][arm.name].append(record)
                    if seed == seeds[0] and arm.name in shown:
                        models[(name, arm.name)] = model
                    bar.advance()
    for per_arm in records.values():
        for arm_records in per_arm.values():
            arm_records.sort(key=lambda r: seeds.index(r["seed"]))
    return records, models


def _saliency_arms(plan: list[Arm]) -> list[str]:
    """Real-only and the first generator's balanced arm (when run)."""
    balanced = [a.name for a in plan if a.template == "real+G:balanced"]
    return [REFERENCE_ARM, *balanced[:1]]


# --- summaries and the results document ----------------------------------------------------------------------
def summarise_arm(arm_records: list[dict[str, Any]], reference_records: list[dict[str, Any]] | None
                  ) -> dict[str, Any]:
    """Mean and 95% t-interval per metric; with a reference, the paired comparison per metric.

    Args:
        arm_records: The arm's per-seed records.
        reference_records: The reference arm's records for the same seeds in the same order (None: the
            reference itself).
    """
    summary: dict[str, Any] = {m: mean_interval([r[m] for r in arm_records]) for m in SUMMARY_METRICS}
    summary["wall_seconds_mean"] = sum(r["wall_seconds"] for r in arm_records) / len(arm_records)
    comparison = None
    if reference_records is not None:
        if [r["seed"] for r in arm_records] != [r["seed"] for r in reference_records]:
            raise ValueError("paired comparison needs the same seeds in the same order")
        comparison = {m: paired_comparison([r[m] for r in arm_records], [r[m] for r in reference_records])
                      for m in SUMMARY_METRICS}
    return {"summary": summary, "vs_real": comparison}


def _document(plan: list[Arm], seeds: list[int], classifiers: list[str], splits: Splits, generators: list[_Generator],
              records: dict[str, dict[str, list[dict[str, Any]]]], synthetic_ratio: float, budget: Budget,
              wall: float) -> dict[str, Any]:
    import synthmed

    results: dict[str, Any] = {}
    for name in classifiers:
        reference = records[name][REFERENCE_ARM]
        results[name] = {}
        for arm in plan:
            arm_records = records[name][arm.name]
            summary = summarise_arm(arm_records, None if arm.name == REFERENCE_ARM else reference)
            results[name][arm.name] = {"template": arm.template, "generator": arm.generator,
                                       "synthetic": arm.synthetic, "traditional_augmentation": arm.traditional,
                                       "per_seed": arm_records, **summary}
    return {
        "experiment": "augmentation",
        "synthmed_version": synthmed.__version__,
        "data": _data_section(splits),
        "seeds": seeds,
        "classifiers": classifiers,
        "budgets": _budget_section(budget),
        "synthetic_ratio": synthetic_ratio,
        "generators": [g.provenance for g in generators],
        "arms": [{"name": a.name, "template": a.template, "generator": a.generator} for a in plan],
        "metrics": _metric_definitions(splits),
        "statistics": PAIRED_METHOD,
        "results": results,
        "wall_seconds_total": round(wall, 3),
    }


def _data_section(splits: Splits) -> dict[str, Any]:
    k = len(splits.class_names)
    info = splits.train.info
    return {
        "source": info.source, "channels": info.channels, "size": [info.height, info.width],
        "class_names": list(splits.class_names),
        "split_sizes": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "class_counts": {s: _class_counts(getattr(splits, s).labels, k) for s in ("train", "val", "test")},
        "minority_class": {"index": splits.minority, "name": splits.class_names[splits.minority]},
        "use": "train: classifier training (with synthetic images per arm); val: early stopping and epoch "
               "selection only; test: scored once per trained classifier, never used for any choice",
    }


def _budget_section(budget: Budget) -> dict[str, Any]:
    return {"max_epochs": budget.max_epochs, "patience": budget.patience, "batch_size": budget.batch_size,
            "optimizer": f"Adam, lr {DEFAULT_LEARNING_RATE:g}, weight decay {DEFAULT_WEIGHT_DECAY:g}",
            "loss": "cross-entropy, unweighted", "selection": TrainingHistory().selection, "device": budget.device}


def _metric_definitions(splits: Splits) -> dict[str, str]:
    positive = splits.class_names[splits.minority]
    return {
        "auc": f"ROC AUC of the {positive!r} (minority) probability, {positive!r} vs the rest, on the test split "
               "(Mann-Whitney form, ties averaged)",
        "balanced_accuracy": "mean per-class recall of the arg-max prediction on the test split",
        "sensitivity_at_90_specificity": f"largest sensitivity for {positive!r} at a threshold where the "
                                         "specificity on the test split is >= 0.9 (threshold set on the test "
                                         "split itself: comparative, not a deployable operating point)",
        "accuracy": "fraction of test images whose arg-max prediction is right (per seed only)",
    }


# --- outputs -------------------------------------------------------------------------------------------------
def _write_outputs(out: Path, document: dict[str, Any], splits: Splits, plan: list[Arm],
                   models: dict[tuple[str, str], nn.Module], classifiers: list[str]) -> None:
    def write(staging: Path) -> None:
        atomic_write_text(staging / "results.json", json.dumps(document, indent=2, allow_nan=False) + "\n")
        atomic_write_text(staging / "results.md", markdown_report(document))
        plot_arms(staging / "arms.png", document)
        for i, name in enumerate(classifiers):
            pair = [(arm, models[(name, arm)]) for arm in _saliency_arms(plan) if (name, arm) in models]
            target = staging / ("saliency.png" if i == 0 else f"saliency_{name}.png")
            plot_saliency(target, splits, pair, name, document["seeds"][0])

    write_folder_atomically(out, write)


# --- progress ------------------------------------------------------------------------------------------------
class ExperimentProgress:
    """A rich progress bar over classifiers x arms x seeds with elapsed time and ETA; silent when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self._progress = None
        self._task = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(TextColumn("[bold]experiment"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("eta"),
                                  TimeRemainingColumn(), TextColumn("{task.fields[current]}"))
        self._task = self._progress.add_task("experiment", total=total, current="")

    def __enter__(self) -> ExperimentProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def describe(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, current=text)

    def advance(self) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)


# --- report: table, arms figure, saliency figure -------------------------------------------------------------
def _interval_text(summary: Mapping[str, Any]) -> str:
    low_high = summary["interval"]
    if low_high is None:
        return f"{summary['mean']:.3f}"
    return f"{summary['mean']:.3f} [{low_high[0]:.3f}, {low_high[1]:.3f}]"


def _delta_text(comparison: Mapping[str, Any] | None) -> str:
    if comparison is None:
        return "(reference)"
    low, high = comparison["interval"]
    p = comparison["p_value"]
    p_text = "n/a" if p is None else (f"{p:.3f}" if p >= 0.001 else f"{p:.1e}")
    return f"{comparison['mean_difference']:+.3f} [{low:+.3f}, {high:+.3f}], p={p_text}"


def markdown_report(document: Mapping[str, Any]) -> str:
    """``results.md``: the setting in a few lines, then one table per classifier.

    Args:
        document: The ``results.json`` document.
    """
    data = document["data"]
    sizes = data["split_sizes"]
    budgets = document["budgets"]
    lines = [
        "# Augmentation experiment", "",
        f"Data: {data['source']} ({data['size'][0]}x{data['size'][1]} px), train / val / test = "
        f"{sizes['train']} / {sizes['val']} / {sizes['test']}; positive (minority) class: "
        f"{data['minority_class']['name']}. Seeds: {len(document['seeds'])} ({', '.join(map(str, document['seeds']))})."
        f" Budget: up to {budgets['max_epochs']} epochs, patience {budgets['patience']}, batch "
        f"{budgets['batch_size']}; epoch chosen on the validation split only.",
        "",
        f"Statistics: {document['statistics']}",
        "",
        "Generators: " + (", ".join(f"{g['name']} (step {g['checkpoint_step']})" for g in document["generators"])
                          or "none"),
    ]
    header = ("| arm | AUC mean [95% CI] | ΔAUC vs real [95% CI], p | balanced acc. mean [95% CI] | Δ vs real "
              "[95% CI], p | sens@90%spec mean [95% CI] | Δ vs real [95% CI], p | s per seed |")
    for name, arms in document["results"].items():
        lines += ["", f"## {name}", "", header, "|" + "---|" * 8]
        for arm, entry in arms.items():
            cells = [arm]
            for metric in SUMMARY_METRICS:
                comparison = None if entry["vs_real"] is None else entry["vs_real"][metric]
                cells += [_interval_text(entry["summary"][metric]), _delta_text(comparison)]
            cells.append(f"{entry['summary']['wall_seconds_mean']:.1f}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_arms(path: Path, document: Mapping[str, Any]) -> Path:
    """``arms.png``: per classifier and metric, each arm's mean with its 95% interval; dashed: real-only mean.

    Args:
        path: Output PNG (written atomically).
        document: The ``results.json`` document.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synthmed.io import atomic_write

    results = document["results"]
    arm_names = list(next(iter(results.values())))
    fig, axes = plt.subplots(len(results), len(SUMMARY_METRICS), squeeze=False,
                             figsize=(4.2 * len(SUMMARY_METRICS), 0.45 * len(arm_names) * len(results) + 1.6))
    for row, (classifier, arms) in enumerate(results.items()):
        for col, metric in enumerate(SUMMARY_METRICS):
            _arm_panel(axes[row, col], arms, metric, f"{classifier}: {METRIC_LABELS[metric]}", col == 0)
    data = document["data"]
    test_n, positives = data["split_sizes"]["test"], data["class_counts"]["test"][data["minority_class"]["index"]]
    fig.suptitle(f"{data['source']}: mean and 95% t-interval over n = {len(document['seeds'])} seeds per arm; test "
                 f"set n = {test_n} ({positives} of the positive class {data['minority_class']['name']!r}); dashed "
                 "line: real-only mean", fontsize=9)
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return Path(path)


def _arm_panel(ax: Any, arms: Mapping[str, Any], metric: str, title: str, label_arms: bool) -> None:
    names = list(arms)
    y = list(range(len(names)))[::-1]
    for position, name in zip(y, names, strict=True):
        summary = arms[name]["summary"][metric]
        low, high = summary["interval"] or (summary["mean"], summary["mean"])
        ax.errorbar(summary["mean"], position, xerr=[[summary["mean"] - low], [high - summary["mean"]]], fmt="o",
                    color="black" if name == REFERENCE_ARM else "tab:blue", capsize=3)
    ax.axvline(arms[REFERENCE_ARM]["summary"][metric]["mean"], color="grey", linestyle="--", linewidth=1)
    ax.set_yticks(y)
    ax.set_yticklabels(names if label_arms else [""] * len(names), fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", alpha=0.3)


def saliency_indices(labels: torch.Tensor, classes: Sequence[int], per_class: int = 4) -> torch.Tensor:
    """The first ``per_class`` test images of each class in ``classes``, in that order (deterministic).

    Args:
        labels: (N,) test labels.
        classes: Classes to show (minority first).
        per_class: Images per class.
    """
    rows = [torch.nonzero(labels == k).flatten()[:per_class] for k in classes]
    return torch.cat(rows)


def plot_saliency(path: Path, splits: Splits, models: Sequence[tuple[str, nn.Module]], classifier: str,
                  seed: int) -> Path | None:
    """``saliency.png``: Grad-CAM (last conv block) and occlusion maps of fixed test images for each model.

    Args:
        path: Output PNG.
        splits: The experiment's data (4 minority and 4 majority test images are shown).
        models: (arm name, classifier) pairs, shown side by side.
        classifier: The classifier's name, for the title.
        seed: The seed the models were trained with, for the title.
    """
    from synthmed.metrics.classification import predict_probabilities
    from synthmed.viz.saliency import grad_cam, occlusion, save_saliency_figure

    if not models:
        return None
    labels = splits.test.labels.long()
    index = saliency_indices(labels, [splits.minority, splits.majority])
    images, targets = splits.test.images[index], labels[index]
    side = images.shape[-1]
    patch = max(2, side // 4)
    stride = max(1, patch // 2)  # half-overlapping squares: 8x8 positions at 28 px, cheap enough for a ResNet on CPU
    panels, probabilities = [], []
    for arm, model in models:
        device = next(model.parameters()).device
        x, t = images.to(device), targets.to(device)
        panels.append((f"{arm}\nGrad-CAM", grad_cam(model, x, t, model.cam_layer)))
        panels.append((f"{arm}\nocclusion", occlusion(model, x, t, patch, stride)))
        probabilities.append(predict_probabilities(model, images, device=device).gather(1, targets.view(-1, 1))[:, 0])
    row_titles = [f"{splits.class_names[int(k)]}\n" + " / ".join(f"{float(p[i]):.2f}" for p in probabilities)
                  for i, k in enumerate(targets)]
    title = (f"{classifier}, seed {seed}: maps for the true class; Grad-CAM of the last conv block, occlusion "
             f"{patch} px squares every {stride} px. Row label: class, P(true class) per model "
             f"({' / '.join(arm for arm, _ in models)})")
    return save_saliency_figure(path, images, panels, row_titles, title=title)

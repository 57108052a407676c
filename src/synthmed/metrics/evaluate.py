"""The evaluation protocol behind ``synthmed evaluate``: fidelity, diversity and memorisation of a synthetic set.

Three image sets take part:

* ``real``: held-out real images (by default the *test* split of a data source): what the synthetic images are
  compared with. A GAN never saw them.
* ``fake``: synthetic images: a folder, an npz, or a run directory (then ``n_fake`` images are sampled).
* ``train``: the real images the GAN was trained on (optional): the domain feature network is fitted on them,
  the radiomics features are standardised with their statistics, and memorisation is measured against them.

Every figure is computed in a named feature space and written with that name, the sample counts and, where it
varies, a bootstrap interval or a standard deviation (``metrics.json``), next to a Markdown report with pictures.

**Per class.** When both the real and the synthetic images are labelled (a class-conditional run, sampled in the
real set's class proportions; a labelled data source: class folders, an npz label array, a labels CSV), FID, KID,
precision, recall, density and coverage are also computed for each class both sets share, on that class's images
alone (``per_class`` in ``metrics.json``, a table in the report), and a classifier trained on the synthetic images
is tested on the real ones: the classification accuracy score (CAS, :mod:`synthmed.metrics.classification`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

import synthmed
from synthmed.data import ImageDataset, load_dataset
from synthmed.data.transforms import resize
from synthmed.errors import ConfigError, SynthmedError
from synthmed.io import atomic_write_text
from synthmed.metrics.diversity import ms_ssim_diversity
from synthmed.metrics.features import FeatureExtractor, get_extractor
from synthmed.metrics.fidelity import fid, inception_score, kid, prdc
from synthmed.metrics.memorisation import MemorisationResult, closest_pairs_grid, memorisation, nearest_neighbours
from synthmed.metrics.stats import MetricValue, bootstrap_interval, sample_size_warning

DEFAULT_FEATURES = ("domain", "radiomics")
#: Neighbours of precision / recall / density / coverage; a set (or a class) needs more images than this.
PRDC_K = 5
#: The classification accuracy score's function: synthmed.metrics.classification.classification_accuracy_score
#: or one with its signature, (synthetic images, synthetic labels, real images, real labels, *, seed, device).
CasScorer = Callable[..., Mapping[str, Any]]
#: Image-reading options of a run's data that decide which images (and labels) its source gives.
RUN_DATA_OPTIONS = ("image_key", "label_key", "mask_key", "patient_key", "split_key", "folder_groups", "labels",
                    "label_column", "label_map", "label_key_column", "normalize")


@dataclass
class ImageSet:
    """Images (N, C, H, W) in [-1, 1] with where they came from."""

    role: str
    images: torch.Tensor
    source: str
    split: str | None = None
    note: str = ""
    labels: torch.Tensor | None = None
    num_classes: int = 0
    class_names: tuple[str, ...] = ()  # one per label index, whenever ``labels`` is set
    provenance: dict[str, Any] = field(default_factory=dict)  # sampled sets: checkpoint step, seed, classes asked

    def class_counts(self) -> dict[str, int]:
        """Images per class name, in label order (empty for an unlabelled set)."""
        if self.labels is None:
            return {}
        counts = torch.bincount(self.labels.long(), minlength=len(self.class_names)).tolist()
        return {name: int(count) for name, count in zip(self.class_names, counts, strict=False)}

    def describe(self) -> dict[str, Any]:
        c, h, w = self.images.shape[1:]
        out: dict[str, Any] = {"source": self.source, "n": len(self.images), "channels": c, "size": [h, w]}
        if self.split:
            out["split"] = self.split
        if self.note:
            out["note"] = self.note
        if self.labels is not None:
            out["class_counts"] = self.class_counts()
        out.update(self.provenance)
        return out


@dataclass
class EvaluationResult:
    metrics: list[MetricValue]
    sets: dict[str, dict[str, Any]]
    extractors: dict[str, dict[str, Any]]
    memorisation: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    out: Path | None = None
    #: feature space -> class name -> n_real, n_fake, the values of :func:`fidelity_scores` (or ``skipped``: why)
    #: and, where the class is too small for a stable FID, ``warning``.
    per_class: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: The classification accuracy score (trained on synthetic, tested on real), when it ran.
    classification: dict[str, Any] = field(default_factory=dict)

    def value(self, name: str, extractor: str) -> float:
        for m in self.metrics:
            if m.name == name and m.extractor == extractor:
                return m.value
        raise KeyError(f"{name} in {extractor}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "synthmed_version": synthmed.__version__,
            "sets": self.sets,
            "extractors": self.extractors,
            "metrics": [m.to_dict() for m in self.metrics],
            "memorisation": self.memorisation,
            **({"per_class": self.per_class} if self.per_class else {}),
            **({"classification_accuracy_score": self.classification} if self.classification else {}),
            "warnings": self.warnings,
            "seconds": self.seconds,
        }


def _is_run(path: str | Path) -> bool:
    return (Path(path) / "config.yaml").is_file() and (Path(path) / "checkpoints").is_dir()


def _in_memory(source: object) -> bool:
    """Images handed over as a tensor or an :class:`~synthmed.data.ImageDataset` (labelled), not a path."""
    return isinstance(source, (torch.Tensor, ImageDataset))


def _class_names(info_names: tuple[str, ...], num_classes: int) -> tuple[str, ...]:
    """The set's class names, or the label indices as names when the source names none (an npz label array)."""
    return tuple(info_names) if len(info_names) == num_classes else tuple(str(k) for k in range(num_classes))


def _from_dataset(role: str, data: ImageDataset, source: str, split: str | None, n: int | None,
                  seed: int) -> ImageSet:
    images, labels = data.images, data.labels
    if n is not None and n < len(images):
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n]
        images = images[pick]
        labels = None if labels is None else labels[pick]
    num_classes = data.info.num_classes if labels is not None else 0
    return ImageSet(role, images.float(), source, split=split, labels=labels, num_classes=num_classes,
                    class_names=_class_names(data.info.class_names, num_classes) if labels is not None else ())


def labels_in_proportion(class_names: tuple[str, ...], class_counts: Mapping[str, int], n: int) -> torch.Tensor:
    """``n`` class indices (of ``class_names``), grouped by class, in the proportions of ``class_counts``.

    Largest remainders, so the counts sum to ``n`` and each is within one of its exact share. Classes that
    ``class_counts`` lacks get none; when it shares no class with ``class_names``, the classes take turns.
    """
    shared = [name for name in class_names if class_counts.get(name, 0) > 0]
    if not shared:
        return torch.arange(n) % max(1, len(class_names))
    weights = np.asarray([class_counts[name] for name in shared], dtype=np.float64)
    exact = n * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(-(exact - counts), kind="stable")[: n - int(counts.sum())]] += 1
    return torch.from_numpy(np.repeat([class_names.index(name) for name in shared], counts))


def _sample_run(role: str, run: str | Path, n: int | None, seed: int, checkpoint: str | Path | None,
                class_counts: Mapping[str, int] | None) -> ImageSet:
    """``n`` samples of a run, at ``checkpoint`` (default: its latest) and ``seed``; a class-conditional run
    samples the classes in ``class_counts``' proportions (the real set's) and labels them."""
    model = synthmed.load(run, checkpoint=checkpoint)
    count = n or 1000
    provenance: dict[str, Any] = {"checkpoint_step": model.step, "checkpoint": str(checkpoint or "latest"),
                                  "sampling_seed": seed}
    note = f"{count} samples of step {model.step}, seed {seed}"
    if not model.conditional:
        return ImageSet(role, model.sample(count, seed=seed), str(run), note=note, provenance=provenance)
    names = tuple(model.class_names)
    labels = labels_in_proportion(names, class_counts or {}, count)
    images = model.sample(count, seed=seed, labels=labels)
    matched = bool(class_counts) and any(class_counts.get(name, 0) for name in names)
    note += "; classes in the real set's proportions" if matched else "; classes in turn"
    return ImageSet(role, images, str(run), note=note, labels=labels, num_classes=len(names), class_names=names,
                    provenance=provenance)


def load_image_set(role: str, source: str | Path | torch.Tensor | ImageDataset, *, split: str,
                   size: int | None = None, channels: str | None = None, n: int | None = None, seed: int = 0,
                   data_options: Mapping[str, Any] | None = None, checkpoint: str | Path | None = None,
                   class_counts: Mapping[str, int] | None = None) -> ImageSet:
    """A data source (any ``--data`` form, read with ``data_options`` such as ``labels``), a run directory
    (sampled at ``checkpoint``; a conditional run in the proportions of ``class_counts``), a tensor, or an
    :class:`~synthmed.data.ImageDataset` (its labels kept), as an :class:`ImageSet`."""
    if isinstance(source, torch.Tensor):
        return ImageSet(role, source.float(), "tensor")
    if isinstance(source, ImageDataset):
        return _from_dataset(role, source, "dataset", source.info.split, n, seed)
    if _is_run(source):
        return _sample_run(role, source, n, seed, checkpoint, class_counts)
    data = load_dataset(source, split=split, size=size, channels=channels, **dict(data_options or {}))
    return _from_dataset(role, data, str(source), split, n, seed)


def default_real_split(source: str | Path | torch.Tensor | ImageDataset) -> str:
    """``test`` where the source defines splits (MedMNIST, npz with a split array, split folders), else ``all``.

    A folder or npz of held-out images has no split of its own: taking its "test" part would silently keep only
    a random fifth of it.
    """
    if _in_memory(source) or _is_run(source):  # type: ignore[arg-type]
        return "all"
    text = str(source)
    if text in ("breastmnist",) or text.startswith("medmnist:"):
        return "test"
    path = Path(text)
    if path.suffix == ".npz" and path.is_file():
        with np.load(path, allow_pickle=False) as arrays:
            return "test" if "test_images" in arrays.files or "split" in arrays.files else "all"
    if path.is_dir() and any((path / name).is_dir() for name in ("test", "testing")):
        return "test"
    return "all"


def _match(reference: ImageSet, other: ImageSet) -> ImageSet:
    """Bring ``other`` to the reference's channels and size (synthetic sets may come at another size)."""
    c, h, w = reference.images.shape[1:]
    images = other.images
    if images.shape[1] != c:
        raise ConfigError(f"{other.source}: {images.shape[1]} channel(s), but the real images have {c}")
    if images.shape[2:] != (h, w):
        if h != w:
            raise ConfigError(f"{other.source}: size {tuple(images.shape[2:])} differs from the real {(h, w)}")
        images = resize(images, h)
        other = replace(other, images=images, note=(other.note + "; " if other.note else "") + f"resized to {h} px")
    return other


def _build_extractor(name: str, train: ImageSet | None, real: ImageSet, out: Path | None,
                     domain_model: str | Path | None, inception_weights: str | Path | None, device: str,
                     progress: bool) -> FeatureExtractor:
    if name == "domain":
        if domain_model is not None:
            return get_extractor("domain", path=domain_model, device=device)
        if train is None:
            raise ConfigError("the 'domain' features are learnt from the real training images: give --train "
                              "(or --domain-model PATH, or choose --features radiomics)")
        from synthmed.data.dataset import DataInfo, ImageDataset

        c, h, w = train.images.shape[1:]
        info = DataInfo(source=train.source, channels=c, height=h, width=w, split=train.split or "train",
                        num_classes=train.num_classes)
        data = ImageDataset(images=train.images.contiguous(), info=info, labels=train.labels)
        extractor = get_extractor("domain", dataset=data, device=device, progress=progress)
        if out is not None:
            extractor.save(out / "domain_features.json")
        return extractor
    if name == "radiomics":
        return get_extractor("radiomics", channels=real.images.shape[1], device=device)
    if name == "inception":
        kwargs: dict[str, Any] = {"device": device}
        if inception_weights is not None:
            kwargs["weights"] = inception_weights
        return get_extractor("inception", **kwargs)
    return get_extractor(name)


def _run_data(run: Path) -> tuple[str, str, dict[str, Any]]:
    """The data source, training split and image-reading options (split seed, labels CSV, ...) a run was trained
    on (from its ``config.yaml``): its source read again gives the same splits and labels."""
    from synthmed.training.config import read_run_config

    config = read_run_config(run / "config.yaml")
    options = {key: getattr(config.data, key) for key in RUN_DATA_OPTIONS}
    for key in ("val_fraction", "test_fraction"):  # a run's own split fractions, or the loader's defaults
        if getattr(config.data, key, None) is not None:
            options[key] = getattr(config.data, key)
    options["seed"] = config.data.split_seed
    return config.data.source or "breastmnist", config.data.split, options


def _run_size(run: Path) -> int | None:
    """The image size a run trained at (its ``--size``; ``None``: the source's own)."""
    from synthmed.training.config import read_run_config

    return read_run_config(run / "config.yaml").data.size


def _same_source(a: str | Path, b: str | Path) -> bool:
    """One source, however written: the same text, or paths to the same file or folder."""
    if str(a) == str(b):
        return True
    first, second = Path(a).expanduser(), Path(b).expanduser()
    return first.exists() and second.exists() and first.resolve() == second.resolve()


def _data_options(real: Any, fake: Any, train: Any, label_options: dict[str, Any],
                  fake_labels: str | Path | None) -> dict[str, dict[str, Any]]:
    """``load_dataset`` options per role. The run's source (for real or train) is read as the run read it; the
    labels options given here label the real and training sources; ``fake_labels`` a synthetic folder."""
    run_source, run_options = "", {}
    if _is_run_like(fake):
        run_source, _, run_options = _run_data(Path(fake))
        if fake_labels is not None:
            raise ConfigError("--fake-labels labels a folder of synthetic images; a run's samples carry their "
                              "classes (conditional recipes)")

    def options_for(source: Any) -> dict[str, Any]:
        if source is None or _in_memory(source):
            return {}
        return {**(run_options if _same_source(source, run_source) else {}), **label_options}

    fake_options = {} if fake_labels is None else {"labels": fake_labels}
    return {"real": options_for(real), "train": options_for(train), "fake": fake_options}


def evaluate(
    real: str | Path | torch.Tensor | None,
    fake: str | Path | torch.Tensor,
    *,
    train: str | Path | torch.Tensor | None = None,
    features: tuple[str, ...] | list[str] = DEFAULT_FEATURES,
    out: str | Path | None = None,
    real_split: str = "auto",
    fake_split: str = "all",
    train_split: str = "train",
    size: int | None = None,
    channels: str | None = None,
    n_fake: int | None = None,
    n_max: int | None = None,
    labels: str | Path | None = None,
    label_column: str | None = None,
    label_map: str | Mapping[str, str] | None = None,
    label_key_column: str | None = None,
    fake_labels: str | Path | None = None,
    checkpoint: str | Path | None = None,
    domain_model: str | Path | None = None,
    inception_weights: str | Path | None = None,
    bootstrap: int = 100,
    kid_subsets: int = 100,
    diversity_pairs: int = 1000,
    cas: bool = True,
    cas_scorer: CasScorer | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> EvaluationResult:
    """Compare ``fake`` with held-out ``real`` images in each feature space of ``features``.

    When ``fake`` is a run directory, ``train`` defaults to the data the run was trained on and ``real`` to the
    test split of that source, both read with the run's data options (split seed, labels CSV, ...); ``n_fake``
    images are sampled at ``checkpoint`` (default: the latest; ``"best"``) with ``seed``, a class-conditional run
    in the real set's class proportions. Writes ``metrics.json``, ``report.md`` and pictures into ``out`` when
    given (a new or empty folder, filled all at once: a failure leaves nothing behind), and records the results
    in the run's ``metrics.json`` when ``fake`` is a run.

    ``real``/``train``/``fake`` may also be an :class:`~synthmed.data.ImageDataset` (labels kept) or a tensor.
    ``labels``, ``label_column``, ``label_map``, ``label_key_column``: a CSV labelling the real and training
    sources (:mod:`synthmed.data.labels`); ``fake_labels``: a CSV naming each synthetic image's class name (first
    column: its file name, second: the class). With labelled real and synthetic sets, metrics are also reported
    per class, and with ``cas`` the classification accuracy score: ``cas_scorer`` (default:
    :func:`synthmed.metrics.classification.classification_accuracy_score`) trained on the synthetic images and
    tested on the real ones.
    """
    from synthmed.devices import select_device

    names = _check_arguments(features, bootstrap, kid_subsets, diversity_pairs)
    torch_device = select_device(device)
    out_dir = Path(out) if out is not None else None
    if out_dir is not None and out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise SynthmedError(f"{out_dir}: output folder exists and is not empty")
    if checkpoint is not None and not _is_run_like(fake):
        raise ConfigError("--checkpoint picks the checkpoint of a run given as --fake")
    real, train, real_split, train_split = _resolve_sources(real, fake, train, real_split, train_split)
    if size is None and _is_run_like(fake):
        size = _run_size(Path(fake))  # compare at the size the generator makes, not the real files' own
    label_options = {key: value for key, value in (("labels", labels), ("label_column", label_column),
                                                   ("label_map", label_map), ("label_key_column", label_key_column))
                     if value is not None}
    options = _data_options(real, fake, train, label_options, fake_labels)

    timings: dict[str, float] = {}
    started = time.perf_counter()
    real_set = load_image_set("real", real, split=real_split, size=size, channels=channels, n=n_max, seed=seed,
                              data_options=options["real"])
    n_default = n_fake or len(real_set.images)
    fake_set = _match(real_set, load_image_set("fake", fake, split=fake_split, size=size, channels=channels,
                                               n=n_fake if not _is_run_like(fake) else n_default, seed=seed,
                                               data_options=options["fake"], checkpoint=checkpoint,
                                               class_counts=real_set.class_counts()))
    train_set = None
    if train is not None:
        train_set = _match(real_set, load_image_set("train", train, split=train_split, size=size,
                                                    channels=channels, n=n_max, seed=seed,
                                                    data_options=options["train"]))
    _check_sets(real_set, fake_set, train_set)
    timings["load"] = time.perf_counter() - started

    def compute(staging: Path | None) -> EvaluationResult:
        result = _evaluate_sets(real_set, fake_set, train_set, names, staging, domain_model, inception_weights,
                                str(torch_device), progress, bootstrap, kid_subsets, diversity_pairs, seed, timings)
        if cas:
            t0 = time.perf_counter()
            _classification_accuracy(result, real_set, fake_set, cas_scorer, seed, str(torch_device))
            timings["classification_accuracy_score"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - started
        result.seconds = {k: round(v, 3) for k, v in timings.items()}
        if staging is not None:
            _write_outputs(result, staging, real_set, fake_set)
        return result

    result = _staged(out_dir, compute)
    for message in result.warnings:
        warnings.warn(message, stacklevel=2)
    if _is_run_like(fake):
        _record_in_run(Path(fake), result)
    return result


def _check_arguments(features: tuple[str, ...] | list[str], bootstrap: int, kid_subsets: int,
                     diversity_pairs: int) -> list[str]:
    """The feature extractors' names, after refusing arguments no evaluation can run with."""
    from synthmed.metrics.features import EXTRACTORS

    names = [f.strip().lower() for f in features if f.strip()]
    if not names:
        raise ConfigError("give at least one feature extractor (--features domain,radiomics,inception)")
    unknown = [n for n in names if n not in EXTRACTORS]
    if unknown:
        raise ConfigError(f"unknown feature extractor(s) {', '.join(unknown)}; choose from {', '.join(EXTRACTORS)}")
    if bootstrap == 1 or bootstrap < 0:
        raise ConfigError(f"--bootstrap must be 0 (no interval) or at least 2 (got {bootstrap})")
    if kid_subsets < 1 or diversity_pairs < 1:
        raise ConfigError("kid_subsets and diversity_pairs must be at least 1")
    return names


def _resolve_sources(real: Any, fake: Any, train: Any, real_split: str, train_split: str
                     ) -> tuple[Any, Any, str, str]:
    """A run as ``fake`` brings its training data (``train``) and that source's test split (``real``); the real
    reference must never overlap the training images."""
    if _is_run_like(fake):
        source, run_split, _ = _run_data(Path(fake))
        if train is None:
            train, train_split = source, run_split
        if real is None:
            real = source
    if real is None:
        raise ConfigError("give the held-out real images (--real), or a run directory as --fake")
    same_source = train is not None and not _in_memory(real) and not _in_memory(train) and str(real) == str(train)
    if real_split == "auto":
        real_split = "test" if same_source else default_real_split(real)
    if same_source and (real_split == train_split or "all" in (real_split, train_split)):
        raise ConfigError(f"--real and --train are both {real}: their splits ({real_split}, {train_split}) overlap; "
                          "use --real-split test")
    return real, train, real_split, train_split


def _staged(out_dir: Path | None, compute: Any) -> EvaluationResult:
    """Run ``compute(staging)`` writing into a temporary sibling of ``out_dir``, renamed into place only when
    everything succeeded: a failure leaves nothing behind."""
    staging = None
    if out_dir is not None:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        result = compute(staging)
        if staging is not None and out_dir is not None:
            if out_dir.exists():
                out_dir.rmdir()
            staging.rename(out_dir)
            result.out = out_dir
            staging = None
    except ValueError as exc:  # a metric refusing its input (too few samples, ...): one line, not a traceback
        raise ConfigError(f"evaluation failed: {exc}") from exc
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return result


def _check_sets(real: ImageSet, fake: ImageSet, train: ImageSet | None) -> None:
    """Refuse sets too small for the metrics, before anything is computed."""
    for s in (real, fake):
        if len(s.images) <= 5:
            raise ConfigError(f"{s.source}: {len(s.images)} {s.role} images; precision/recall need more than 5")
    if train is not None and len(train.images) < 2:
        raise ConfigError(f"{train.source}: the training set needs at least 2 images")
    if min(real.images.shape[-2:]) < 8:
        raise ConfigError(f"{real.source}: images of {tuple(real.images.shape[-2:])} px are too small to evaluate")


def _evaluate_sets(real_set: ImageSet, fake_set: ImageSet, train_set: ImageSet | None, names: list[str],
                   out_dir: Path | None, domain_model: str | Path | None, inception_weights: str | Path | None,
                   device: str, progress: bool, bootstrap: int, kid_subsets: int, diversity_pairs: int, seed: int,
                   timings: dict[str, float]) -> EvaluationResult:
    result = EvaluationResult(metrics=[], sets={s.role: s.describe() for s in (real_set, fake_set, train_set) if s},
                              extractors={})
    if train_set is not None:
        # Held-out images that also sit in the training set contaminate both the reference and the baseline.
        d, _ = nearest_neighbours(real_set.images.flatten(1), train_set.images.flatten(1))
        shared = int((d == 0).sum())
        if shared:
            result.warnings.append(f"{shared} of the {len(real_set.images)} held-out real images also appear in the "
                                   "training set: the reference is not held out")
    n_real, n_fake_images = len(real_set.images), len(fake_set.images)
    classes = class_subsets(real_set, fake_set, result.warnings)
    extractors = {}
    for name in names:  # build all first: a missing weight file fails before any work is done
        t0 = time.perf_counter()
        extractors[name] = _build_extractor(name, train_set, real_set, out_dir, domain_model, inception_weights,
                                            device, progress)
        timings[f"{name}:build"] = time.perf_counter() - t0
    for name, extractor in extractors.items():
        t0 = time.perf_counter()
        reference = None
        if name == "radiomics":
            reference = train_set if train_set is not None else real_set
            extractor.fit_standardizer(extractor.extract(reference.images, raw=True))  # type: ignore[attr-defined]
        real_f = extractor.extract(real_set.images, progress=progress)
        fake_f = extractor.extract(fake_set.images, progress=progress)
        train_f = extractor.extract(train_set.images, progress=progress) if train_set is not None else None
        timings[f"{name}:features"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        result.extractors[name] = extractor.describe()
        if reference is not None:
            result.extractors[name]["standardizer_reference"] = {"role": reference.role, **reference.describe()}
            if reference is real_set:
                result.warnings.append("radiomics: standardised with the held-out set's statistics (no --train)")
        _fidelity(result, name, real_f, fake_f, bootstrap, kid_subsets, seed)
        _per_class(result, name, extractor.dim, real_f, fake_f, classes, kid_subsets, seed)
        if name == "inception" and getattr(extractor, "has_classifier", False):
            probs = extractor.extract_probabilities(fake_set.images, progress=progress)  # type: ignore[attr-defined]
            splits = min(10, max(1, len(probs) // 50))
            mean, std = inception_score(probs, splits=splits)
            result.metrics.append(MetricValue("inception_score", mean, name, n_real=None, n_fake=n_fake_images,
                                              interval=None, std=std,
                                              note=f"exp E KL(p(y|x) || p(y)); std over {splits} splits"))
        if train_f is not None and train_set is not None:
            mem = memorisation(fake_f, train_f, real_f, space="feature")
            result.memorisation[name] = mem.to_dict()
            if out_dir is not None:
                _save_pairs(out_dir / f"closest_pairs_{name}.png", fake_set, train_set, mem)
        if out_dir is not None:
            _save_histograms(out_dir / f"features_{name}.png", extractor, real_f, fake_f)
        timings[f"{name}:metrics"] = time.perf_counter() - t0
        message = sample_size_warning(min(n_real, n_fake_images), extractor.dim)
        if message:
            result.warnings.append(f"{name}: {message}")

    t0 = time.perf_counter()
    _diversity(result, real_set, fake_set, diversity_pairs, seed)
    if train_set is not None:
        pixel = memorisation(fake_set.images.flatten(1), train_set.images.flatten(1), real_set.images.flatten(1),
                             space="pixel")
        result.memorisation["pixel"] = pixel.to_dict()
        if out_dir is not None:
            _save_pairs(out_dir / "closest_pairs_pixel.png", fake_set, train_set, pixel)
    timings["diversity_and_pixels"] = time.perf_counter() - t0
    return result


def _is_run_like(source: object) -> bool:
    return source is not None and not _in_memory(source) and _is_run(source)  # type: ignore[arg-type]


def _kid_subset_size(n_real: int, n_fake: int) -> int:
    """Half the smaller set, so that the spread over subsets means something for small sets too."""
    return max(2, min(1000, min(n_real, n_fake) // 2))


def exact_fid(real_f: np.ndarray, fake_f: np.ndarray) -> float:
    """FID by a route that is exact and never fails on an imaginary part: the Gram route when both sets have
    fewer samples than dimensions (small medical sets in Inception space: seconds instead of minutes with a
    bootstrap), else the symmetric eigenvalue route."""
    small = max(len(real_f), len(fake_f)) < real_f.shape[1]
    return fid(real_f, fake_f, method="gram" if small else "eigh")


def fidelity_scores(real_f: np.ndarray, fake_f: np.ndarray, kid_subsets: int, seed: int) -> dict[str, float]:
    """The point values reported per feature space (and per class): FID, KID with its std over subsets, and
    precision, recall, density, coverage (k = 5). Both sets need more than :data:`PRDC_K` rows."""
    with warnings.catch_warnings():  # the sample-size warning is reported once, by the caller
        warnings.simplefilter("ignore")
        value = exact_fid(real_f, fake_f)
    mean, std = kid(real_f, fake_f, subsets=kid_subsets, subset_size=_kid_subset_size(len(real_f), len(fake_f)),
                    seed=seed)
    scores = prdc(real_f, fake_f, k=PRDC_K)
    return {"fid": float(value), "kid": float(mean), "kid_std": float(std),
            **{key: float(scores[key]) for key in ("precision", "recall", "density", "coverage")}}


def _fidelity(result: EvaluationResult, name: str, real_f: np.ndarray, fake_f: np.ndarray, bootstrap: int,
              kid_subsets: int, seed: int) -> None:
    n_real, n_fake = len(real_f), len(fake_f)
    scores = fidelity_scores(real_f, fake_f, kid_subsets, seed)
    interval = None
    if bootstrap > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            interval = bootstrap_interval(exact_fid, real_f, fake_f, n_boot=bootstrap,
                                          seed=seed, recentre=True)
        interval = (max(0.0, interval[0]), interval[1])
    result.metrics.append(MetricValue("fid", scores["fid"], name, n_real, n_fake, interval, None,
                                      f"Frechet distance; 95% bootstrap interval over {bootstrap} resamples of both "
                                      "sets, re-centred on the value (resampling inflates FID)"
                                      if bootstrap else "Frechet distance"))
    subset = _kid_subset_size(n_real, n_fake)
    result.metrics.append(MetricValue("kid", scores["kid"], name, n_real, n_fake, None, scores["kid_std"],
                                      f"unbiased MMD^2, cubic polynomial kernel; mean and std over {kid_subsets} "
                                      f"subsets of {subset}"))
    for key in ("precision", "recall", "density", "coverage"):
        result.metrics.append(MetricValue(key, scores[key], name, n_real, n_fake, None, None,
                                          f"k = {PRDC_K} nearest neighbours (Kynkaanniemi 2019; Naeem 2020)"))


@dataclass(frozen=True)
class ClassSubset:
    """One class both sets have: its name and which real and synthetic rows belong to it."""

    name: str
    real_rows: np.ndarray  # bool, one per real image
    fake_rows: np.ndarray  # bool, one per synthetic image

    @property
    def counts(self) -> tuple[int, int]:
        return int(self.real_rows.sum()), int(self.fake_rows.sum())

    @property
    def usable(self) -> bool:
        return min(self.counts) > PRDC_K


def class_subsets(real: ImageSet, fake: ImageSet, notes: list[str] | None = None) -> list[ClassSubset]:
    """The classes both sets are labelled with, matched by name, in the real set's order (none when either set is
    unlabelled). Classes only one set has, and classes too small to score, are described in ``notes``."""
    if real.labels is None or fake.labels is None:
        return []
    notes = notes if notes is not None else []
    only_real = [n for n, c in real.class_counts().items() if c and not fake.class_counts().get(n)]
    only_fake = [n for n, c in fake.class_counts().items() if c and not real.class_counts().get(n)]
    if only_real or only_fake:
        notes.append(f"per class: classes {', '.join(map(repr, only_real + only_fake))} have images in only one of "
                     "the real and synthetic sets and are left out of the per-class figures")
    subsets = []
    for real_label, name in enumerate(real.class_names):
        if name in only_real or name not in fake.class_names:
            continue
        subset = ClassSubset(name, (real.labels == real_label).numpy(),
                             (fake.labels == fake.class_names.index(name)).numpy())
        if not subset.usable and min(subset.counts) > 0:
            notes.append(f"class {name!r}: {subset.counts[0]} real and {subset.counts[1]} synthetic images; "
                         f"per-class metrics need more than {PRDC_K} of each")
        if min(subset.counts) > 0:
            subsets.append(subset)
    return subsets


def _per_class(result: EvaluationResult, space: str, dim: int, real_f: np.ndarray, fake_f: np.ndarray,
               classes: list[ClassSubset], kid_subsets: int, seed: int) -> None:
    """The overall point values of ``space`` recomputed on each class's real and synthetic images alone."""
    for subset in classes:
        n_real, n_fake = subset.counts
        entry: dict[str, Any] = {"n_real": n_real, "n_fake": n_fake}
        if not subset.usable:
            entry["skipped"] = f"more than {PRDC_K} real and synthetic images needed"
        else:
            entry.update(fidelity_scores(real_f[subset.real_rows], fake_f[subset.fake_rows], kid_subsets, seed))
            message = sample_size_warning(min(n_real, n_fake), dim)
            if message:
                entry["warning"] = message
                result.warnings.append(f"{space}, class {subset.name!r}: {message}")
        result.per_class.setdefault(space, {})[subset.name] = entry


def _default_cas_scorer() -> CasScorer | None:
    """The library's classification accuracy score, where this installation has it."""
    try:
        from synthmed.metrics.classification import classification_accuracy_score
    except ImportError:
        return None
    return classification_accuracy_score


def _classification_accuracy(result: EvaluationResult, real: ImageSet, fake: ImageSet, scorer: CasScorer | None,
                             seed: int, device: str) -> None:
    """CAS: a classifier trained on the synthetic images of the classes both sets share, tested on the real images
    of those classes (labels renumbered 0..K-1 in the real set's order)."""
    classes = [c for c in class_subsets(real, fake) if min(c.counts) >= 2]
    scorer = scorer or _default_cas_scorer()
    if scorer is None or len(classes) < 2:
        if real.labels is not None and fake.labels is not None:
            why = ("synthmed.metrics.classification is missing" if scorer is None
                   else "fewer than 2 classes have 2 or more real and synthetic images")
            result.warnings.append(f"classification accuracy score not computed: {why}")
        return
    real_rows = np.zeros(len(real.images), dtype=np.int64) - 1
    fake_rows = np.zeros(len(fake.images), dtype=np.int64) - 1
    for k, subset in enumerate(classes):
        real_rows[subset.real_rows], fake_rows[subset.fake_rows] = k, k
    real_keep, fake_keep = torch.from_numpy(real_rows >= 0), torch.from_numpy(fake_rows >= 0)
    scores = scorer(fake.images[fake_keep], torch.from_numpy(fake_rows)[fake_keep], real.images[real_keep],
                    torch.from_numpy(real_rows)[real_keep], seed=seed, device=device)
    result.classification = {**{k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in scores.items()},
                             "classes": [c.name for c in classes],
                             "n_synthetic": int(fake_keep.sum()), "n_real": int(real_keep.sum()),
                             "note": "classifier trained on the synthetic images, tested on the held-out real "
                                     "images (Ravuri & Vinyals 2019)"}


def _diversity(result: EvaluationResult, real: ImageSet, fake: ImageSet, pairs: int, seed: int) -> None:
    for role, images in (("fake", fake.images), ("real", real.images)):
        div = ms_ssim_diversity(images, pairs=pairs, seed=seed)
        n = len(images)
        note = (f"mean MS-SSIM over {div['pairs']} random pairs within the {role} set ({div['scales']} scales, "
                f"{div['window']} px window); higher = less diverse; compare synthetic with real")
        result.metrics.append(MetricValue(f"ms_ssim_{role}", float(div["mean"]), "pixels",
                                          n if role == "real" else None, n if role == "fake" else None, None,
                                          float(div["std"]), note))


def _save_pairs(path: Path, fake: ImageSet, train: ImageSet, mem: MemorisationResult) -> None:
    from synthmed.viz.grid import save_grid

    grid = closest_pairs_grid(fake.images, train.images, mem, n=16)
    save_grid(path, grid, nrow=8, scale=max(1, min(4, 128 // fake.images.shape[-1])))


def _save_histograms(path: Path, extractor: FeatureExtractor, real_f: np.ndarray, fake_f: np.ndarray) -> None:
    """Histograms of a few features, real against synthetic (radiomics: named features; else principal axes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from synthmed.io import atomic_write

    names = getattr(extractor, "feature_names", None)
    if names:
        picks = list(range(min(len(names), 8)))
        real_cols, fake_cols, labels = real_f[:, picks], fake_f[:, picks], [names[i] for i in picks]
    else:  # principal axes of the real features
        mean = real_f.mean(0)
        _, _, vt = np.linalg.svd(real_f - mean, full_matrices=False)
        axes = vt[:8].T
        real_cols, fake_cols = (real_f - mean) @ axes, (fake_f - mean) @ axes
        labels = [f"principal axis {i + 1}" for i in range(axes.shape[1])]
    cols = len(labels)
    fig, grid = plt.subplots(2, (cols + 1) // 2, figsize=(3.2 * ((cols + 1) // 2), 5.2), squeeze=False)
    for i, label in enumerate(labels):
        ax = grid[i % 2, i // 2]
        lo = min(real_cols[:, i].min(), fake_cols[:, i].min())
        hi = max(real_cols[:, i].max(), fake_cols[:, i].max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
        ax.hist(real_cols[:, i], bins=bins, alpha=0.55, density=True, label="real")
        ax.hist(fake_cols[:, i], bins=bins, alpha=0.55, density=True, label="synthetic")
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=7)
    for j in range(len(labels), grid.size):
        grid[j % 2, j // 2].axis("off")
    grid[0, 0].legend(fontsize=7)
    fig.suptitle(f"{extractor.name} features: real vs synthetic", fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)


def _write_outputs(result: EvaluationResult, out: Path, real: ImageSet, fake: ImageSet) -> None:
    from synthmed.viz.grid import save_grid

    scale = max(1, min(4, 256 // real.images.shape[-1]))
    for role, images in (("real", real.images), ("fake", fake.images)):
        pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:64]
        save_grid(out / f"{role}_grid.png", images[pick], scale=scale)
    atomic_write_text(out / "metrics.json", json.dumps(result.to_dict(), indent=1))
    atomic_write_text(out / "report.md", render_report(result, out))


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.4g}"


def _per_class_section(result: EvaluationResult) -> list[str]:
    """The per-class table (nothing when either set is unlabelled)."""
    if not result.per_class:
        return []
    lines = ["", "## Per class (held-out real vs synthetic images of one class)", "",
             "Each class's real images against the synthetic images of that class, in the same feature spaces (no "
             "bootstrap). FID falls with n: compare classes, and runs, at equal n only.", "",
             "| feature space | class | n real | n synthetic | fid | kid (std) | precision | recall | density | "
             "coverage | note |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for space, classes in result.per_class.items():
        for name, entry in classes.items():
            if "skipped" in entry:
                lines.append(f"| {space} | {name} | {entry['n_real']} | {entry['n_fake']} | | | | | | | "
                             f"skipped: {entry['skipped']} |")
                continue
            note = "too few samples for a stable FID (see Warnings)" if entry.get("warning") else ""
            lines.append(f"| {space} | {name} | {entry['n_real']} | {entry['n_fake']} | {_fmt(entry['fid'])} | "
                         f"{_fmt(entry['kid'])} ({_fmt(entry['kid_std'])}) | {_fmt(entry['precision'])} | "
                         f"{_fmt(entry['recall'])} | {_fmt(entry['density'])} | {_fmt(entry['coverage'])} | {note} |")
    return lines


def _classification_section(result: EvaluationResult) -> list[str]:
    """The classification accuracy score (nothing when it did not run)."""
    cas = result.classification
    if not cas:
        return []
    auc = cas.get("auc")
    positive = cas.get("positive_class")
    positive_name = cas["classes"][positive] if isinstance(positive, int) and positive < len(cas["classes"]) else ""
    return ["", "## Classification accuracy score (trained on synthetic, tested on real)", "",
            "| classes | n synthetic (training) | n real (test) | accuracy | AUC | balanced accuracy |",
            "|---|---|---|---|---|---|",
            f"| {', '.join(cas['classes'])} | {cas.get('n_synthetic_train', cas['n_synthetic'])} | "
            f"{cas.get('n_real_test', cas['n_real'])} | {_fmt(cas.get('accuracy'))} | {_fmt(auc)} | "
            f"{_fmt(cas.get('balanced_accuracy'))} |", "",
            f"{cas['note']}" + (f"; AUC of {positive_name!r} against the rest" if positive_name else "") + "."]


def render_report(result: EvaluationResult, out: Path | None = None) -> str:
    """The Markdown report: sets, a table per feature space, memorisation, diversity, pictures."""
    lines = ["# synthmed evaluation", ""]
    lines += ["| set | source | split | n | size | note |", "|---|---|---|---|---|---|"]
    for role, info in result.sets.items():
        lines.append(f"| {role} | {info['source']} | {info.get('split', '')} | {info['n']} | "
                     f"{info['channels']}x{info['size'][0]}x{info['size'][1]} | {info.get('note', '')} |")
    lines += ["", "## Fidelity (held-out real vs synthetic)", "",
              "| feature space | metric | value | 95% interval / std | n real | n synthetic | how |",
              "|---|---|---|---|---|---|---|"]
    for m in result.metrics:
        if m.extractor == "pixels":
            continue
        spread = f"[{_fmt(m.interval[0])}, {_fmt(m.interval[1])}]" if m.interval else (
            f"std {_fmt(m.std)}" if m.std is not None else "")
        lines.append(f"| {m.extractor} | {m.name} | {_fmt(m.value)} | {spread} | {m.n_real} | {m.n_fake} | "
                     f"{m.note or ''} |")
    lines += ["", "Feature spaces:", ""]
    for name, info in result.extractors.items():
        summary = {k: v for k, v in info.items() if k not in ("standardizer", "features")}
        lines.append(f"- **{name}** ({info.get('dim')}-d): `{json.dumps(summary, default=str)[:400]}`")
    lines += _per_class_section(result) + _classification_section(result)
    lines += ["", "## Diversity (MS-SSIM within a set)", ""]
    for m in result.metrics:
        if m.extractor == "pixels":
            n = m.n_real if m.n_real is not None else m.n_fake
            lines.append(f"- {m.name}: {_fmt(m.value)} (std {_fmt(m.std)}, n = {n}); {m.note}")
    if result.memorisation:
        lines += ["", "## Memorisation (nearest training image of each synthetic image)", "",
                  "| space | n synthetic / train / held-out | copies (synthetic) | copies (held-out real, baseline) "
                  "| closer to train than to held-out | expected without memorisation |", "|---|---|---|---|---|---|"]
        for space, mem in result.memorisation.items():
            counts = f"{mem.get('n_fake')} / {mem.get('n_train')} / {mem.get('n_holdout')}"
            lines.append(f"| {space} | {counts} | {_fmt(mem.get('copy_fraction'))} | "
                         f"{_fmt(mem.get('holdout_copy_fraction'))} | {_fmt(mem.get('closer_to_train_fraction'))} | "
                         f"{_fmt(mem.get('expected_closer_to_train_fraction'))} |")
        lines += ["", "A synthetic image counts as a copy when it is closer to its nearest training image than that "
                  "training image is to any other training image; the same test on held-out real images is the "
                  "baseline a generator that does not memorise should match."]
    if result.warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in result.warnings]
    if out is not None:
        lines += ["", "## Pictures", "", "| real (held-out) | synthetic |", "|---|---|",
                  "| ![real](real_grid.png) | ![synthetic](fake_grid.png) |", ""]
        for png in sorted(out.glob("closest_pairs_*.png")):
            lines += [f"Closest pairs in {png.stem.removeprefix('closest_pairs_')} space (synthetic, then its "
                      "nearest training image):", "", f"![pairs]({png.name})", ""]
        for png in sorted(out.glob("features_*.png")):
            lines += [f"![histograms]({png.name})", ""]
    lines += ["", f"Timings (s): `{json.dumps(result.seconds)}`", ""]
    return "\n".join(lines)


def _record_in_run(run_dir: Path, result: EvaluationResult) -> None:
    path = run_dir / "metrics.json"
    try:
        metrics = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except ValueError as exc:  # never overwrite the training record with a blank one
        raise SynthmedError(f"{path}: unreadable ({exc}); evaluation results were not recorded in the run") from exc
    metrics["evaluation"] = result.to_dict()
    atomic_write_text(path, json.dumps(metrics, indent=1))

"""Per-class evaluation: labelled real and synthetic sets give FID/KID/precision/recall per class and the CAS."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from PIL import Image

import synthmed
from synthmed.data import DataInfo, ImageDataset
from synthmed.metrics import evaluate
from synthmed.metrics.evaluate import labels_in_proportion
from synthmed.training.config import RunConfig
from synthmed.viz.grid import to_uint8

# Tiny sets have fewer images than radiomics dimensions: that warning is expected here (and checked once, below).
pytestmark = pytest.mark.filterwarnings("ignore:.*rank-deficient:UserWarning")

CLASSES = ("benign", "malignant")
FAST = {"features": ("radiomics",), "bootstrap": 0, "kid_subsets": 5, "diversity_pairs": 10, "progress": False}
SIDE = 16  # tiny images: the protocol is under test, not the features' quality


def _images(label: int, n: int, seed: int) -> torch.Tensor:
    """Class 0: a smooth bright disc; class 1: a darker, noisier disc (so the classes differ in radiomics)."""
    gen = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(SIDE), torch.arange(SIDE), indexing="ij")
    radius = 3 + 3 * torch.rand(n, 1, 1, generator=gen)
    disc = (((yy - SIDE / 2) ** 2 + (xx - SIDE / 2) ** 2) < radius**2).float()
    noise = torch.randn(n, SIDE, SIDE, generator=gen) * (0.1 if label == 0 else 0.4)
    return ((0.8 - 0.6 * label) * disc - 0.5 + noise).clamp(-1, 1)[:, None]


def _labelled(counts: tuple[int, int], seed: int) -> ImageDataset:
    images = torch.cat([_images(k, n, seed + k) for k, n in enumerate(counts)])
    labels = torch.cat([torch.full((n,), k, dtype=torch.long) for k, n in enumerate(counts)])
    info = DataInfo(source="test", channels=1, height=SIDE, width=SIDE, num_classes=2, class_names=CLASSES)
    return ImageDataset(images=images, info=info, labels=labels)


@pytest.fixture(scope="module")
def train() -> torch.Tensor:
    return _labelled((24, 16), seed=100).images


def test_per_class_values_equal_the_overall_metrics_on_each_class_subset(train: torch.Tensor,
                                                                        tmp_path: Path) -> None:
    real, fake = _labelled((24, 16), seed=0), _labelled((20, 12), seed=50)
    result = evaluate(real, fake, train=train, out=tmp_path / "eval", cas=False, **FAST)
    doc = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(doc["per_class"]["radiomics"]) == set(CLASSES)
    assert doc["sets"]["real"]["class_counts"] == {"benign": 24, "malignant": 16}
    for k, name in enumerate(CLASSES):
        # The overall function applied to the class's images alone (the same training set fixes the features).
        alone = evaluate(real.images[real.labels == k], fake.images[fake.labels == k], train=train, cas=False, **FAST)
        entry = doc["per_class"]["radiomics"][name]
        assert (entry["n_real"], entry["n_fake"]) == ((24, 20), (16, 12))[k]
        for metric in ("fid", "kid", "precision", "recall", "density", "coverage"):
            assert entry[metric] == pytest.approx(alone.value(metric, "radiomics"), rel=1e-9, abs=1e-12), metric
        assert entry["kid_std"] == pytest.approx(next(m.std for m in alone.metrics if m.name == "kid"), rel=1e-9)
        assert "warning" in entry  # 12-24 samples in 29 radiomics dimensions: FID biased high
        assert any(f"class {name!r}" in w and "rank-deficient" in w for w in result.warnings)
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "## Per class" in report and "| feature space | class | n real | n synthetic | fid |" in report
    assert "| radiomics | malignant | 16 | 12 |" in report and "too few samples for a stable FID" in report


def test_unlabelled_synthetic_images_give_no_per_class_section(train: torch.Tensor, tmp_path: Path) -> None:
    real, fake = _labelled((24, 16), seed=0), _labelled((20, 12), seed=50)
    called = []
    evaluate(real, fake.images, train=train, out=tmp_path / "eval", cas_scorer=lambda *a, **k: called.append(1),
             **FAST)
    doc = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "per_class" not in doc and "classification_accuracy_score" not in doc and not called
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "Per class" not in report and "Classification accuracy score" not in report


def test_classes_too_small_are_skipped_with_a_warning(train: torch.Tensor) -> None:
    real, fake = _labelled((24, 16), seed=0), _labelled((20, 4), seed=50)
    result = evaluate(real, fake, train=train, cas=False, **FAST)
    entry = result.per_class["radiomics"]["malignant"]
    assert entry["n_fake"] == 4 and "skipped" in entry and "fid" not in entry
    assert any("class 'malignant': 16 real and 4 synthetic" in w for w in result.warnings)
    assert "fid" in result.per_class["radiomics"]["benign"]


def test_labels_in_proportion_sum_to_n_by_largest_remainder() -> None:
    labels = labels_in_proportion(("a", "b", "c"), {"a": 1, "b": 2, "x": 5}, 4)
    assert labels.tolist() == [0, 1, 1, 1]  # exact 1.33 / 2.67: the larger remainder gets the spare image
    assert labels_in_proportion(("a", "b"), {"x": 3}, 5).tolist() == [0, 1, 0, 1, 0]  # nothing shared: in turn


class _ConditionalStub:
    """What evaluate uses of a loaded conditional run: step, conditional, class_names, sample(n, seed, labels)."""

    def __init__(self, calls: list[dict[str, Any]]) -> None:
        self.step, self.conditional, self.class_names, self.calls = 7, True, CLASSES, calls

    def sample(self, n: int, seed: int = 0, labels: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append({"n": n, "seed": seed, "labels": labels})
        return torch.cat([_images(int(k), 1, seed * 1000 + i) for i, k in enumerate(labels.tolist())])


def _run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(RunConfig(recipe="conditional").to_dict()))
    return run


def test_a_conditional_run_is_sampled_per_class_in_the_real_proportions(train: torch.Tensor, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    loaded: list[Any] = []

    def load(run: Path, checkpoint: Any = None) -> _ConditionalStub:
        loaded.append(checkpoint)
        return _ConditionalStub(calls)

    monkeypatch.setattr(synthmed, "load", load)
    real = _labelled((30, 18), seed=0)
    result = evaluate(real, _run_dir(tmp_path), train=train, n_fake=24, checkpoint="best", seed=3, cas=False, **FAST)
    assert loaded == ["best"] and len(calls) == 1 and calls[0]["seed"] == 3
    assert torch.bincount(calls[0]["labels"]).tolist() == [15, 9]  # 30 : 18 of 24
    fake = result.sets["fake"]
    assert (fake["checkpoint_step"], fake["checkpoint"], fake["sampling_seed"]) == (7, "best", 3)
    assert fake["class_counts"] == {"benign": 15, "malignant": 9}
    assert {e["n_fake"] for e in result.per_class["radiomics"].values()} == {15, 9}


def test_cas_trains_on_the_synthetic_images_and_tests_on_the_real_ones(train: torch.Tensor, tmp_path: Path) -> None:
    real, fake = _labelled((24, 16), seed=0), _labelled((20, 12), seed=50)
    seen: dict[str, Any] = {}

    def scorer(fake_x: torch.Tensor, fake_y: torch.Tensor, real_x: torch.Tensor, real_y: torch.Tensor,
               **options: Any) -> dict[str, Any]:
        seen.update(fake_x=fake_x, fake_y=fake_y, real_x=real_x, real_y=real_y, options=options)
        return {"accuracy": 0.75, "auc": 0.8, "n_synthetic_train": 29, "n_real_test": len(real_x),
                "positive_class": 1}

    result = evaluate(real, fake, train=train, out=tmp_path / "eval", cas_scorer=scorer, seed=5, **FAST)
    assert torch.equal(seen["fake_x"], fake.images) and torch.equal(seen["fake_y"], fake.labels)
    assert torch.equal(seen["real_x"], real.images) and torch.equal(seen["real_y"], real.labels)
    assert seen["options"] == {"seed": 5, "device": "cpu"}
    assert result.classification["classes"] == list(CLASSES) and result.classification["accuracy"] == 0.75
    doc = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert doc["classification_accuracy_score"]["n_real"] == 40
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "## Classification accuracy score" in report and "| benign, malignant | 29 | 40 | 0.75 | 0.8 |" in report


def test_cas_with_the_library_classifier(train: torch.Tensor) -> None:
    classification = pytest.importorskip("synthmed.metrics.classification")
    real, fake = _labelled((24, 16), seed=0), _labelled((20, 12), seed=50)
    scorer = functools.partial(classification.classification_accuracy_score, max_epochs=2)
    cas = evaluate(real, fake, train=train, cas_scorer=scorer, **FAST).classification
    assert 0.0 <= cas["accuracy"] <= 1.0 and 0.0 <= cas["auc"] <= 1.0 and cas["n_real_test"] == 40


def _png_folder(folder: Path, images: torch.Tensor, names: list[str]) -> None:
    for img, name in zip(to_uint8(images), names, strict=True):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0]).save(folder / name)


def test_folders_labelled_by_a_csv_and_by_class_folders(train: torch.Tensor, tmp_path: Path) -> None:
    real, fake = _labelled((14, 10), seed=0), _labelled((12, 8), seed=50)
    real_names = [f"r{i:02d}.png" for i in range(len(real))]
    _png_folder(tmp_path / "real", real.images, real_names)
    table = tmp_path / "real.csv"
    table.write_text("image,grade\n" + "\n".join(f"r{i:02d},{int(k)}" for i, k in enumerate(real.labels)) + "\n")
    fake_names = [f"{CLASSES[int(k)]}/f{i:02d}.png" for i, k in enumerate(fake.labels)]  # class sub-folders
    _png_folder(tmp_path / "fake", fake.images, fake_names)
    with pytest.warns(UserWarning):  # the per-image split warning, the classes chosen for the fake folder, ...
        result = evaluate(tmp_path / "real", tmp_path / "fake", train=train, labels=table,
                          label_map="0=benign,1=malignant", cas=False, **FAST)
    assert result.sets["real"]["class_counts"] == {"benign": 14, "malignant": 10}
    assert {name: e["n_fake"] for name, e in result.per_class["radiomics"].items()} == {"benign": 12, "malignant": 8}

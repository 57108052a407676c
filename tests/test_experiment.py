"""The augmentation experiment: arms and their counts, outputs, validation-only model selection, refusal of
generators that saw more than the training split, and the paired statistics over seeds (hand-made cases).

Tiny 16 px data, a fake class-conditional generator, 2 seeds and 1-2 epochs keep the file fast; one test trains
a real (test-only) conditional recipe for 2 steps to check that run directories are read and loaded.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from scipy import stats as scipy_stats
from torch import nn

import synthmed
from synthmed.errors import ConfigError, SynthmedError
from synthmed.experiments import augmentation
from synthmed.experiments.augmentation import (
    build_training_set,
    load_splits,
    plan_arms,
    run_augmentation_experiment,
    summarise_arm,
    synthetic_counts,
)
from synthmed.metrics.stats import mean_interval, paired_bootstrap_interval, paired_comparison
from synthmed.optim import adam
from synthmed.recipes import ConditionalGenerativeRecipe, StepContext, register_recipe

SIZE = 16
COUNTS = {"train": (8, 22), "val": (5, 7), "test": (6, 10)}  # class 0 is the minority
FAST = {"seeds": 2, "max_epochs": 2, "patience": 1, "batch_size": 16, "progress": False}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on shared, busy cores two threads spin against each other (~3x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _pattern(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 images: class 0 has a bright square top-left, class 1 bottom-right, on noise."""
    images = rng.integers(0, 80, size=(len(labels), SIZE, SIZE))
    for i, label in enumerate(labels):
        corner = slice(2, 7) if label == 0 else slice(9, 14)
        images[i, corner, corner] += 150
    return images.astype(np.uint8)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An npz in MedMNIST layout with train / val / test splits."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, per_class in COUNTS.items():
        labels = np.concatenate([np.full(n, k) for k, n in enumerate(per_class)])
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = _pattern(labels, rng), labels[:, None]
    path = tmp_path_factory.mktemp("data") / "toy.npz"
    np.savez(path, **arrays)
    return path


@dataclass
class FakeGenerator:
    """Stands in for a loaded class-conditional run: the class picks the square, the seed the noise."""

    class_names: tuple[str, ...] = ("0", "1")
    conditional: bool = True
    step: int = 7

    def sample(self, n: int, seed: int = 0, labels: torch.Tensor | int | str | None = None) -> torch.Tensor:
        labels = torch.as_tensor(labels).expand(n) if labels is not None else torch.arange(n) % 2
        images = _pattern(labels.numpy(), np.random.default_rng(seed))
        return torch.from_numpy(images).float().div(127.5).sub(1.0)[:, None]


@pytest.fixture(scope="module")
def experiment(data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One whole experiment (every arm, 2 seeds), with a spy on what each classifier trains and selects on."""
    calls: list[dict] = []
    original = augmentation.train_classifier

    def spy(train_images, train_labels, val_images, val_labels, **options):
        calls.append({"train": train_images.clone(), "train_labels": train_labels.clone(), "val": val_images.clone(),
                      "augment": options["augment"], "seed": options["seed"]})
        return original(train_images, train_labels, val_images, val_labels, **options)

    out = tmp_path_factory.mktemp("experiment") / "out"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(augmentation, "train_classifier", spy)
        result = run_augmentation_experiment(data, [], out, loaded_generators={"fakeG": FakeGenerator()}, **FAST)
    return {"result": result, "calls": calls, "out": out}


# --- arms and counts ------------------------------------------------------------------------------------------
def test_synthetic_counts_per_arm_kind() -> None:
    assert synthetic_counts("balanced", [8, 22]) == [14, 0]
    assert synthetic_counts("only", [8, 22]) == [22, 22]
    assert synthetic_counts("none", [8, 22]) == [0, 0]
    assert synthetic_counts("ratio", [8, 22], 0.5) == [8, 7]  # 15 images, the odd one to the rarest class
    assert synthetic_counts("ratio", [5, 1, 9], 1.0) == [5, 5, 5]


def test_arms_per_generator_and_subsets() -> None:
    names = [a.name for a in plan_arms(["runA", "runB"])]
    assert names[:2] == ["real", "real+traditional"]
    assert {"real+runA:balanced", "real+runA:ratio", "real+traditional+runA", "runA:synthetic-only",
            "runB:synthetic-only"} <= set(names) and len(names) == 10
    assert [a.name for a in plan_arms(["runA", "runB"], ["real+G:balanced"])] == [
        "real", "real+runA:balanced", "real+runB:balanced"]  # real always: it is the reference
    with pytest.raises(ConfigError, match="unknown arm"):
        plan_arms(["runA"], ["real+runB:balanced"])


def test_training_sets_of_the_balanced_ratio_and_synthetic_only_arms(data: Path) -> None:
    splits = load_splits(data)
    assert splits.minority == 0 and splits.majority == 1
    generators = {"fakeG": augmentation._Generator("fakeG", FakeGenerator(), {})}
    arms = {a.template: a for a in plan_arms(["fakeG"])}
    _, labels, counts = build_training_set(arms["real+G:balanced"], splits, generators, 0, 0.5)
    assert torch.bincount(labels).tolist() == [22, 22] and counts == [14, 0]
    images, labels, counts = build_training_set(arms["real+G:ratio"], splits, generators, 0, 0.5)
    assert len(labels) == 30 + 15 and counts == [8, 7] and images.shape[1:] == (1, SIZE, SIZE)
    _, labels, _ = build_training_set(arms["G:synthetic-only"], splits, generators, 0, 0.5)
    assert torch.bincount(labels).tolist() == [22, 22]
    real_x, _, _ = build_training_set(arms["real"], splits, generators, 0, 0.5)
    assert torch.equal(real_x, splits.train.images)


# --- the experiment -------------------------------------------------------------------------------------------
def test_outputs_exist_and_results_json_describes_the_experiment(experiment: dict) -> None:
    out = experiment["out"]
    assert sorted(p.name for p in out.iterdir()) == ["arms.png", "results.json", "results.md", "saliency.png"]
    assert not list(out.parent.glob(".out.*"))  # the staging folder was renamed, nothing left behind
    doc = json.loads((out / "results.json").read_text())
    assert doc == experiment["result"].results
    assert doc["seeds"] == [0, 1] and doc["classifiers"] == ["cnn"]
    assert doc["data"]["split_sizes"] == {"train": 30, "val": 12, "test": 16}
    assert doc["data"]["minority_class"] == {"index": 0, "name": "0"}
    assert doc["budgets"]["max_epochs"] == 2 and "paired bootstrap" in doc["statistics"]
    assert doc["generators"] == [{"name": "fakeG", "run": None, "checkpoint_step": 7}]
    arms = doc["results"]["cnn"]
    assert list(arms) == ["real", "real+traditional", "real+fakeG:balanced", "real+fakeG:ratio",
                          "real+traditional+fakeG", "fakeG:synthetic-only"]
    for name, entry in arms.items():
        assert [r["seed"] for r in entry["per_seed"]] == [0, 1]
        assert all(0 <= r["auc"] <= 1 and r["wall_seconds"] > 0 for r in entry["per_seed"])
        assert entry["summary"]["auc"]["n"] == 2 and len(entry["summary"]["auc"]["interval"]) == 2
        assert (entry["vs_real"] is None) == (name == "real")
    real_auc = [r["auc"] for r in arms["real"]["per_seed"]]
    ratio = arms["real+fakeG:ratio"]
    assert ratio["per_seed"][0]["synthetic_per_class"] == [8, 7]
    expected = np.mean([r["auc"] for r in ratio["per_seed"]]) - np.mean(real_auc)
    assert ratio["vs_real"]["auc"]["mean_difference"] == pytest.approx(expected)
    assert arms["fakeG:synthetic-only"]["per_seed"][0]["n_real_train"] == 0
    table = (out / "results.md").read_text()
    assert "| real+fakeG:balanced |" in table and "(reference)" in table and "p=" in table


def test_classifiers_never_see_test_images_and_select_on_validation(experiment: dict, data: Path) -> None:
    splits = load_splits(data)
    test_rows = {tuple(img.flatten().tolist()) for img in splits.test.images}
    calls = experiment["calls"]
    assert len(calls) == 6 * 2
    for call in calls:
        assert torch.equal(call["val"], splits.val.images)  # early stopping sees the validation split only
        assert not test_rows & {tuple(img.flatten().tolist()) for img in call["train"]}
    balanced = [c for c in calls if c["train"].shape[0] == 44 and not c["augment"]]  # and synthetic-only
    assert len(balanced) == 4 and all(torch.bincount(c["train_labels"]).tolist() == [22, 22] for c in balanced)
    assert [c["augment"] for c in calls[:6]] == [False, True, False, False, True, False]
    assert {c["seed"] for c in calls} == {0, 1}


def test_progress_bar_and_a_subset_of_arms(data: Path, tmp_path: Path) -> None:
    result = run_augmentation_experiment(data, [], tmp_path / "out", loaded_generators={"fakeG": FakeGenerator()},
                                         arms=["real+G:balanced"], seeds=[3, 4], max_epochs=1, patience=1,
                                         batch_size=16, progress=True)
    assert list(result.results["results"]["cnn"]) == ["real", "real+fakeG:balanced"]
    assert result.results["seeds"] == [3, 4] and (tmp_path / "out" / "saliency.png").is_file()


def test_a_failure_while_writing_leaves_nothing_behind(data: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(augmentation, "plot_arms", broken)
    with pytest.raises(OSError, match="disk full"):
        run_augmentation_experiment(data, [], tmp_path / "out", seeds=2, arms=["real"], max_epochs=1, patience=1,
                                    batch_size=16, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_non_empty_output_folder_is_refused(data: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(SynthmedError, match="not empty"):
        run_augmentation_experiment(data, [], tmp_path / "out", loaded_generators={"g": FakeGenerator()}, **FAST)


@pytest.mark.parametrize("generator,message", [
    (FakeGenerator(conditional=False), "not class-conditional"),
    (FakeGenerator(class_names=("benign", "malignant")), "classes"),
])
def test_unsuitable_generators_are_refused(data: Path, tmp_path: Path, generator: FakeGenerator,
                                           message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        run_augmentation_experiment(data, [], tmp_path / "out", loaded_generators={"g": generator}, **FAST)
    assert not (tmp_path / "out").exists()


def _fake_run(root: Path, data: Path, **data_options: object) -> Path:
    """A run directory holding only a config.yaml, trained (so it says) on ``data`` with ``data_options``."""
    run = root / "run"
    run.mkdir()
    info = {"source": str(data), "channels": 1, "height": SIZE, "width": SIZE, "num_classes": 2,
            "class_names": ["0", "1"], "split": data_options.get("split", "train")}
    config = {"recipe": "test-experiment-paint", "data": {"source": str(data), **data_options}, "data_info": info}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return run


@pytest.mark.parametrize("options,message", [
    ({"split": "all"}, "trained on split 'all'"),
    ({"split": "val"}, "trained on split 'val'"),
    ({"source": "medmnist:breastmnist"}, "trained on medmnist:breastmnist"),
    ({"split_seed": 3}, "split seed"),
])
def test_runs_that_saw_more_than_the_training_split_are_refused(data: Path, tmp_path: Path, options: dict,
                                                                message: str) -> None:
    run = _fake_run(tmp_path, data, **options)
    if "source" in options:  # the run says it learnt from another source
        doc = yaml.safe_load((run / "config.yaml").read_text())
        doc["data_info"]["source"] = options["source"]
        (run / "config.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=message) as caught:
        run_augmentation_experiment(data, [run], tmp_path / "out", **FAST)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


# --- a real run directory -------------------------------------------------------------------------------------
@dataclass
class _PaintConfig:
    """Args:
        latent_dim: Length of the noise vector.
    """

    latent_dim: int = 4


class _Painter(nn.Module):
    def __init__(self, classes: int, latent_dim: int, size: int) -> None:
        super().__init__()
        self.size = size
        self.embed = nn.Embedding(classes, 1)
        self.noise = nn.Linear(latent_dim, size * size)

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.embed(label)[:, :, None, None] + 0.1 * self.noise(z).view(-1, 1, self.size, self.size))


@register_recipe
class _ExperimentPaint(ConditionalGenerativeRecipe):
    name = "test-experiment-paint"
    Config = _PaintConfig

    def __init__(self, config, data_info):
        super().__init__(config, data_info)
        self.set_classes(data_info)
        self.latent_dim = config.latent_dim
        self.networks["G"] = _Painter(self.num_classes, self.latent_dim, data_info.image_size)

    def configure_optimizers(self):
        return {"G": adam(self.networks["G"].parameters(), 1e-3, (0.5, 0.999), self.device)}

    def loss_names(self):
        return ["loss_g"]

    def train_step(self, batch, ctx: StepContext):
        z = torch.randn(batch["image"].shape[0], self.latent_dim)
        loss = (self.networks["G"](z, batch["label"]) - batch["image"]).pow(2).mean()
        ctx.optimize("G", loss)
        return {"loss_g": loss.detach()}

    @torch.no_grad()
    def generate(self, z, **conditions):
        return self.networks["G"](z.to(self.device), conditions["label"].to(self.device)).clamp(-1, 1)

    def preview_inputs(self, n, seed):
        return self.class_grid_inputs(n, seed)

    def preview(self, inputs):
        return self.class_grid(inputs)


def test_a_conditional_run_directory_is_checked_loaded_and_recorded(data: Path, tmp_path: Path) -> None:
    train = {"batch_size": 8, "log_every": 1, "sample_every": 1000, "checkpoint_every": 1000, "ema_beta": 0.0,
             "device": "cpu", "steps": 2}
    run = synthmed.train(data, recipe="test-experiment-paint", out=tmp_path / "paint", progress=False,
                         **train).run_dir
    result = run_augmentation_experiment(data, [run], tmp_path / "out", arms=["real+G:balanced"], seeds=2,
                                         max_epochs=1, patience=1, batch_size=16, progress=False)
    (generator,) = result.results["generators"]
    assert generator["name"] == run.name and generator["checkpoint_step"] == 2
    assert generator["trained_on"]["split"] == "train" and generator["run"] == str(run)
    assert f"real+{run.name}:balanced" in result.results["results"]["cnn"]


# --- paired statistics over seeds (hand-made cases) -----------------------------------------------------------
def test_paired_comparison_of_a_hand_made_case() -> None:
    reference = np.array([0.70, 0.72, 0.69, 0.75, 0.71])
    arm = reference + np.array([0.01, 0.02, 0.03, 0.04, 0.05])  # differences 1..5 hundredths
    result = paired_comparison(arm, reference, seed=0)
    # mean 0.03; sd of (1..5)/100 = sqrt(2.5)/100; t = 0.03 / (sqrt(2.5)/100 / sqrt(5)) = 3 / sqrt(0.5)
    t_by_hand = 3 / math.sqrt(0.5)
    assert result["mean_difference"] == pytest.approx(0.03)
    assert result["t_statistic"] == pytest.approx(t_by_hand)
    assert result["p_value"] == pytest.approx(2 * scipy_stats.t.sf(t_by_hand, df=4))
    assert result["p_value"] == pytest.approx(0.013236, abs=1e-6)
    low, high = result["interval"]
    assert 0.01 <= low < 0.03 < high <= 0.05 and result["n"] == 5
    assert result["interval"] == paired_comparison(arm, reference, seed=0)["interval"]  # seeded


def test_equal_differences_give_a_point_interval_and_no_p_value() -> None:
    result = paired_comparison([1.5, 2.5, 3.5], [1.0, 2.0, 3.0])  # exact in binary: every difference is 0.5
    assert result["mean_difference"] == 0.5
    assert result["interval"] == [0.5, 0.5] and result["p_value"] is None


def test_paired_bootstrap_of_two_values() -> None:
    # Resampling two seeds gives means 0 (both first), 1 (both second) or 0.5: the interval spans [0, 1].
    assert paired_bootstrap_interval([0.0, 1.0], n_boot=4000, seed=1) == pytest.approx((0.0, 1.0))


def test_mean_and_t_interval_of_a_hand_made_case() -> None:
    result = mean_interval([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4) * sd / sqrt(n)
    assert result["mean"] == 3.0 and result["interval"] == pytest.approx([3 - half, 3 + half])
    assert mean_interval([0.5])["interval"] is None


def test_summaries_pair_arms_by_seed() -> None:
    reference = [{"seed": s, "auc": a, "balanced_accuracy": 0.5, "sensitivity_at_90_specificity": 0.1,
                  "wall_seconds": 1.0} for s, a in [(0, 0.7), (1, 0.8)]]
    arm = [dict(r, auc=r["auc"] + 0.1) for r in reference]
    summary = summarise_arm(arm, reference)
    assert summary["vs_real"]["auc"]["mean_difference"] == pytest.approx(0.1)
    assert summary["summary"]["auc"]["mean"] == pytest.approx(0.85)
    with pytest.raises(ValueError, match="same seeds"):
        summarise_arm(arm[::-1], reference)

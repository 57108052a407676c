"""``synthmed sample --class`` and ``synthmed augment``: counts, manifest, formats, and bad input.

A test-only conditional recipe (a class embedding painted into a constant image, trained 2 steps) stands in for
the real conditional GANs, so these tests pin the writing of augmented sets, not a generator's quality.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import synthmed
from synthmed.cli import app
from synthmed.data import load_dataset
from synthmed.errors import ConfigError
from synthmed.optim import adam
from synthmed.rebalance import augment, folder_name, parse_per_class, synthetic_counts
from synthmed.recipes import ConditionalGenerativeRecipe, StepContext, register_recipe

TRAIN = {"batch_size": 8, "log_every": 1, "sample_every": 1000, "checkpoint_every": 1000, "ema_beta": 0.0,
         "device": "cpu", "steps": 2}


@dataclass
class _ClassPaintConfig:
    """Args:
        latent_dim: Length of the noise vector.
    """

    latent_dim: int = 4


class _Painter(nn.Module):
    """Image = tanh(class embedding + a linear map of z), so the class sets the mean brightness."""

    def __init__(self, classes: int, latent_dim: int, shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.shape = shape
        self.embed = nn.Embedding(classes, 1)
        with torch.no_grad():
            self.embed.weight.copy_(torch.linspace(-2, 2, classes)[:, None])
        self.noise = nn.Linear(latent_dim, int(np.prod(shape)))

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.embed(label)[:, :, None, None] + 0.1 * self.noise(z).view(-1, *self.shape))


@register_recipe
class _ClassPaint(ConditionalGenerativeRecipe):
    name = "test-class-paint"
    Config = _ClassPaintConfig

    def __init__(self, config, data_info):
        super().__init__(config, data_info)
        self.set_classes(data_info)
        self.latent_dim = config.latent_dim
        size = data_info.image_size
        self.networks["G"] = _Painter(self.num_classes, self.latent_dim, (data_info.channels, size, size))

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


def _labelled_npz(path: Path, counts: dict[str, tuple[int, int, int]]) -> Path:
    """An npz with train/val/test splits; ``counts`` = {split: (class 0, class 1, class 2) image counts}."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, per_class in counts.items():
        labels = np.concatenate([np.full(n, k) for k, n in enumerate(per_class)])
        images = (rng.random((len(labels), 8, 8)) * 60 + labels[:, None, None] * 90).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels[:, None]
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cond")
    data = _labelled_npz(root / "three.npz", {"train": (10, 4, 2), "val": (3, 3, 3), "test": (5, 5, 5)})
    return synthmed.train(data, recipe="test-class-paint", out=root / "run", progress=False, **TRAIN).run_dir


@pytest.fixture(scope="module")
def unconditional_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("uncond")
    data = _labelled_npz(root / "three.npz", {"train": (10, 4, 2)})
    return synthmed.train(data, out=root / "run", progress=False, arch="dcgan", g_channels=4, d_channels=4,
                          latent_dim=4, size=28, **TRAIN).run_dir


def test_balanced_augment_tops_every_class_up_to_the_largest(conditional_run: Path, tmp_path: Path) -> None:
    result = augment(conditional_run, tmp_path / "aug", to="balanced", seed=3)
    assert result.real_counts == (10, 4, 2) and result.synthetic_counts == (0, 6, 8)
    manifest = json.loads((tmp_path / "aug" / "manifest.json").read_text())
    assert manifest["synthetic_per_class"] == {"0": 0, "1": 6, "2": 8}
    assert manifest["real_per_class"] == {"0": 10, "1": 4, "2": 2}
    assert manifest["source"]["seed"] == 3 and manifest["source"]["checkpoint_step"] == 2
    assert manifest["source"]["run"] == str(conditional_run)
    synthetic_files = {entry["file"] for entry in manifest["synthetic"]}
    written = {str(p.relative_to(tmp_path / "aug")) for p in (tmp_path / "aug").rglob("synthetic_*.png")}
    assert synthetic_files == written and len(written) == 14
    assert len(list((tmp_path / "aug").rglob("real_*.png"))) == 16  # the train split only: no val, no test
    # Read back as a labelled folder: every class has the same count, in the run's label order.
    back = load_dataset(tmp_path / "aug", split="all", folder_groups="class")
    assert torch.bincount(back.labels).tolist() == [10, 10, 10]


def test_synthetic_images_are_of_the_requested_class(conditional_run: Path, tmp_path: Path) -> None:
    """The painter's class sets the brightness, so the labels written must match the pixels."""
    augment(conditional_run, tmp_path / "aug", per_class="0=5,1=5,2=5", fmt="npz")
    with np.load(tmp_path / "aug" / "augmented.npz") as data:
        images, labels, synthetic = data["images"], data["labels"], data["synthetic"]
        assert str(data["source_run"]) == str(conditional_run)
        assert list(data["class_names"]) == ["0", "1", "2"]
    assert images.shape == (16 + 15, 8, 8) and synthetic.sum() == 15 and not synthetic[:16].any()
    means = [images[synthetic & (labels == k)].mean() for k in range(3)]
    assert means[0] < means[1] < means[2]


def test_per_class_counts_by_index_or_name() -> None:
    names = ("benign", "malignant")

    def index(value: str) -> int:
        return names.index(value) if value in names else int(value)

    assert parse_per_class("0=400,malignant=7", index) == {0: 400, 1: 7}
    assert synthetic_counts([5, 2], None, {1: 7}) == [0, 7]
    assert synthetic_counts([5, 2, 9], "balanced", None) == [4, 7, 0]
    with pytest.raises(ConfigError, match="whole number"):
        parse_per_class("0=many", index)
    with pytest.raises(ConfigError, match="exactly one"):
        synthetic_counts([5, 2], "balanced", {0: 1})
    assert folder_name(3, "normal, benign", 12) == "03_normal_benign"


def test_sample_class_writes_only_that_class(conditional_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sample", str(conditional_run), "-n", "6", "--class", "2", "--format", "npz",
                                      "--out", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "s" / "samples.npz") as data:
        assert data["labels"].tolist() == [2] * 6
        assert data["images"].mean() > 200  # class 2 is painted bright


@pytest.mark.parametrize("arguments, message", [
    (["--to", "balanced", "--per-class", "0=1"], "exactly one"),
    (["--per-class", "7=10"], "class '7' is not one of this run's 3 classes"),
    (["--per-class", "nodule=10"], "class 'nodule' is not one of"),
    (["--to", "everything"], "--to must be 'balanced'"),
    (["--to", "balanced", "--format", "tiff"], "--format must be folder or npz"),
])
def test_augment_bad_arguments_are_one_line_errors(conditional_run: Path, tmp_path: Path, arguments: list[str],
                                                   message: str) -> None:
    out = tmp_path / "aug"
    result = CliRunner().invoke(app, ["augment", str(conditional_run), "--out", str(out), *arguments])
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.count("\n") == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_sample_class_not_in_the_run_is_a_one_line_error(conditional_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sample", str(conditional_run), "--class", "5", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "class '5' is not one of this run's 3 classes" in result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "s").exists()


def test_augment_of_an_unconditional_run_is_refused(unconditional_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["augment", str(unconditional_run), "--to", "balanced",
                                      "--out", str(tmp_path / "aug")])
    assert result.exit_code == 2 and "is not class-conditional" in result.output
    assert result.output.count("\n") == 1 and list(tmp_path.iterdir()) == []
    result = CliRunner().invoke(app, ["sample", str(unconditional_run), "--class", "0", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "is not class-conditional" in result.output


def test_augment_refuses_a_generator_that_saw_the_test_split(tmp_path: Path) -> None:
    data = _labelled_npz(tmp_path / "three.npz", {"train": (6, 3, 2), "val": (2, 2, 2), "test": (3, 3, 3)})
    run = synthmed.train(data, recipe="test-class-paint", out=tmp_path / "run", progress=False, split="all",
                         **TRAIN).run_dir
    with pytest.raises(ConfigError, match="trained on split 'all'"):
        augment(run, tmp_path / "aug", to="balanced")
    assert not (tmp_path / "aug").exists()


def test_conditional_recipe_on_unlabelled_data_is_refused(tmp_path: Path) -> None:
    images = (np.random.default_rng(0).random((20, 8, 8)) * 255).astype(np.uint8)
    np.savez(tmp_path / "plain.npz", images=images)
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "plain.npz"), "--recipe", "test-class-paint",
                                      "--steps", "2", "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 2, result.output
    assert "needs 'label'" in result.output or "needs labelled images" in result.output
    assert result.output.count("\n") == 1 and not (tmp_path / "run").exists()


def test_evaluate_compares_at_the_size_the_run_trained_at(tmp_path: Path) -> None:
    """A run trained with --size 16 on 8 px files is scored at 16 px, not at the files' own size (bug: the real
    images were read at their own size and the samples resized to it)."""
    from synthmed.metrics.evaluate import evaluate

    data = _labelled_npz(tmp_path / "three.npz", {"train": (12, 12, 12), "val": (3, 3, 3), "test": (12, 12, 12)})
    run = synthmed.train(data, recipe="test-class-paint", out=tmp_path / "run", progress=False, size=16,
                         **TRAIN).run_dir
    result = evaluate(None, run, features=("radiomics",), bootstrap=0, cas=False, progress=False)
    assert result.sets["real"]["size"] == [16, 16] and result.sets["fake"]["size"] == [16, 16]


def test_explore_walks_each_row_within_one_class(conditional_run: Path, tmp_path: Path) -> None:
    """Conditional runs: row i walks in class i mod K (before, walks fed N(0, I) latents with classes in turn
    along the row, mixing classes within a walk)."""
    from PIL import Image

    path = synthmed.load(conditional_run).explore(tmp_path / "walks.png", walks=3, steps=4)
    grid = np.asarray(Image.open(path).convert("L"), dtype=float)
    thirds = [part.mean() for part in np.array_split(grid, 3, axis=0)]
    assert thirds[0] < thirds[1] < thirds[2]  # the painter's classes are dark, mid and bright
    columns = [part.mean() for part in np.array_split(grid[: grid.shape[0] // 3], 4, axis=1)]
    assert max(columns) - min(columns) < 40  # one class along the row


def test_evaluate_reads_the_runs_data_with_its_split_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder without its own split is split by the run's split seed; evaluate must re-read it with that seed,
    or its "test" images may be the run's training images (bug: the seed was dropped)."""
    import importlib

    from PIL import Image

    evaluation = importlib.import_module("synthmed.metrics.evaluate")  # the module (the package exports a function)
    rng = np.random.default_rng(0)
    for k in range(2):
        (tmp_path / "data" / f"c{k}").mkdir(parents=True)
        for i in range(20):
            pixels = (rng.random((8, 8)) * 60 + 120 * k).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "data" / f"c{k}" / f"{i}.png")
    run = synthmed.train(tmp_path / "data", recipe="test-class-paint", out=tmp_path / "run", progress=False,
                         split_seed=3, size=16, **TRAIN).run_dir
    seeds: list[int] = []
    real_load = evaluation.load_dataset

    def spy(*args: object, **kwargs: object) -> object:
        seeds.append(int(kwargs.get("seed", 0)))  # type: ignore[arg-type]
        return real_load(*args, **kwargs)

    monkeypatch.setattr(evaluation, "load_dataset", spy)
    evaluation.evaluate(None, run, features=("radiomics",), bootstrap=0, cas=False, progress=False)
    assert seeds and set(seeds) == {3}

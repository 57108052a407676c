"""Segmentation recipes (unet, segan, pix2pix-seg): a step on tiny data, binary and 3-class; the pure helpers
on hand-made cases; the SegAN critic's scales and clipping; best-checkpoint selection on the validation split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import synthmed
from synthmed.data.dataset import DataInfo
from synthmed.errors import ConfigError
from synthmed.nn.segmentation import segmentation_depth
from synthmed.recipes import build_recipe
from synthmed.recipes.segmentation import (
    class_probabilities,
    masked_images,
    one_hot_foreground,
    pooled_dice,
    segmentation_loss,
)
from synthmed.recipes.step import StepContext

TINY = {"base_channels": 4}
ADVERSARIAL = {"segan": {"d_base_channels": 4}, "pix2pix-seg": {"d_base_channels": 4, "d_layers": 1}, "unet": {}}
TRAIN = {"batch_size": 4, "log_every": 1, "sample_every": 1000, "checkpoint_every": 2, "ema_beta": 0.0,
         "device": "cpu", "progress": False}


def _info(classes: int = 0, channels: int = 1, size: int = 16) -> DataInfo:
    return DataInfo(source="memory", channels=channels, height=size, width=size, kind="paired", target_channels=1,
                    target_names=("mask",), target_is_mask=True, mask_classes=classes)


def _batch(classes: int, channels: int = 1, n: int = 4, size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, max(classes, 2), (n, 1, size, size), generator=gen).float()
    image = (labels / max(classes - 1, 1)) * 2 - 1 + 0.1 * torch.randn(n, channels, size, size, generator=gen)
    return {"image": image.clamp(-1, 1), "target": labels}


def _step(recipe, batch: dict[str, torch.Tensor], step: int = 0) -> dict[str, torch.Tensor]:
    ctx = StepContext(device=torch.device("cpu"), optimizers=recipe.configure_optimizers(), total_steps=10, step=step)
    return recipe.train_step(batch, ctx)


@pytest.mark.parametrize("name", ["unet", "segan", "pix2pix-seg"])
@pytest.mark.parametrize("classes", [0, 3])
def test_one_step_binary_and_three_class(name: str, classes: int) -> None:
    torch.manual_seed(0)
    recipe = build_recipe(name, {**TINY, **ADVERSARIAL[name]}, _info(classes))
    assert recipe.num_classes == (classes or 2)
    before = {k: [p.detach().clone() for p in net.parameters()] for k, net in recipe.networks.items()}
    losses = _step(recipe, _batch(classes or 2))
    assert set(losses) == set(recipe.loss_names())
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    for key, net in recipe.networks.items():  # every network was trained by this step
        assert any(not torch.equal(a, b) for a, b in zip(before[key], net.parameters(), strict=True)), key
    probabilities = recipe.segment(torch.zeros(2, 1, 16, 16))
    assert probabilities.shape == (2, 1 if classes == 0 else 3, 16, 16)
    if classes:
        torch.testing.assert_close(probabilities.sum(1), torch.ones(2, 16, 16))
    labels = recipe.labels_from_probabilities(probabilities)
    assert labels.shape == (2, 16, 16) and int(labels.max()) < (classes or 2)


def test_segan_critic_sees_one_masked_copy_per_foreground_class_and_is_clipped() -> None:
    recipe = build_recipe("segan", {**TINY, "d_base_channels": 4, "clip": 0.01}, _info(3, channels=2))
    critic = recipe.networks["C"]
    assert critic.blocks[0][0].in_channels == 2 * 2  # 2 image channels x 2 foreground classes
    _step(recipe, _batch(3, channels=2))
    assert all(float(p.detach().abs().max()) <= 0.01 + 1e-7 for p in critic.parameters())
    features = critic(torch.zeros(1, 4, 16, 16))
    assert [f.shape[-1] for f in features] == [16, 8, 4, 2]  # the input, then one scale per block (depth 3)


def test_segan_without_adversary_is_the_unet_loss() -> None:
    recipe = build_recipe("segan", {**TINY, "adversarial_weight": 0.0}, _info())
    assert "C" not in recipe.networks
    losses = _step(recipe, _batch(2))
    assert float(losses["loss_c"]) == 0.0 and float(losses["multiscale_l1"]) == 0.0


def test_masked_images_scale_to_unit_range_and_stack_classes() -> None:
    image = torch.tensor([[[[-1.0, 1.0]]]])  # (1, 1, 1, 2): black and white pixels
    masks = torch.tensor([[[[1.0, 1.0]], [[0.0, 0.5]]]])  # class 1 everywhere, class 2 half on the white pixel
    out = masked_images(image, masks)
    torch.testing.assert_close(out, torch.tensor([[[[0.0, 1.0]], [[0.0, 0.5]]]]))


def test_one_hot_probabilities_and_losses_on_a_hand_case() -> None:
    labels = torch.tensor([[[[0.0, 1.0, 2.0, 2.0]]]])
    one_hot = one_hot_foreground(labels, 3)
    torch.testing.assert_close(one_hot, torch.tensor([[[[0.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0, 1.0]]]]))
    # Binary: logit 0 everywhere -> p = 0.5; BCE = log 2; Dice = 2 * 0.5 * 1 / (4 * 0.5 + 1) = 1/3 -> loss 2/3.
    logits = torch.zeros(1, 1, 1, 4)
    binary = (labels == 1).float()
    torch.testing.assert_close(class_probabilities(logits), torch.full((1, 1, 1, 4), 0.5))
    ce, dice = segmentation_loss(logits, binary, 2)
    assert ce.item() == pytest.approx(np.log(2.0))
    assert dice.item() == pytest.approx(2.0 / 3.0, abs=1e-5)
    # 3 classes, equal logits: CE = log 3; each foreground class p = 1/3.
    ce3, _ = segmentation_loss(torch.zeros(1, 3, 1, 4), labels, 3, dice_weight=0.0)
    assert ce3.item() == pytest.approx(np.log(3.0))
    counts = pooled_dice(torch.tensor([[[[0.9, 0.9, 0.1, 0.6]]]]), binary, 2)
    assert counts[0].tolist() == [1.0, 3.0, 1.0]  # overlap, predicted, true


def test_depth_default_and_option_errors() -> None:
    assert segmentation_depth(128) == 5 and segmentation_depth(16) == 3 and segmentation_depth(8) == 2
    with pytest.raises(ConfigError, match="holds images"):
        build_recipe("unet", TINY, DataInfo(source="x", channels=1, height=16, width=16, kind="paired",
                                            target_channels=1))
    with pytest.raises(ConfigError, match="hold 3 classes"):
        build_recipe("unet", {**TINY, "classes": 2}, _info(3))
    with pytest.raises(ConfigError, match="multiple of 2\\*\\*depth"):
        build_recipe("unet", {**TINY, "crop": 10}, _info())
    with pytest.raises(ConfigError, match="d_layers"):
        build_recipe("pix2pix-seg", {**TINY, "d_layers": 3}, _info())
    assert build_recipe("unet", {**TINY, "classes": 4}, _info(3)).num_classes == 4
    with pytest.raises(ConfigError, match="no option"):
        build_recipe("unet", {"d_base_channels": 4}, _info())


def _disc_npz(path: Path, n: int = 24, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        cy, cx = rng.integers(5, size - 5, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 9
        images.append((rng.integers(0, 60, (size, size)) + 150 * disc).astype(np.uint8))
        masks.append(disc.astype(np.uint8))
    np.savez(path, images=np.stack(images), masks=np.stack(masks), patient=np.arange(n) // 2)
    return path


def test_validation_dice_keeps_the_best_checkpoint_and_survives_resume(tmp_path: Path) -> None:
    data = _disc_npz(tmp_path / "discs.npz")
    options = {"recipe": "segan", "pair": "image:mask", **TINY, "d_base_channels": 4, "lr_decay_start": 1.0}
    run = synthmed.train(data, out=tmp_path / "run", steps=6, eval_every=2, **TRAIN, **options)
    with open(run.run_dir / "eval.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["step"]) for r in rows] == [2, 4, 6] and all(0.0 <= float(r["val_dice"]) <= 1.0 for r in rows)
    best_step = max(rows, key=lambda r: float(r["val_dice"]))["step"]  # first of equals: the earliest best
    best = json.loads((run.run_dir / "checkpoints" / "best.json").read_text())
    assert best["step"] == int(best_step)
    summary = json.loads((run.run_dir / "metrics.json").read_text())["training_evaluation"]
    assert summary["metric"] == "val_dice" and summary["split"] == "val" and summary["n_val"] > 0

    split = synthmed.train(data, out=tmp_path / "split", steps=4, eval_every=2, **TRAIN, **options)
    synthmed.train(resume_run=split.run_dir, steps=6, progress=False)
    with open(split.run_dir / "eval.csv", newline="") as fh:
        assert list(csv.DictReader(fh)) == rows  # exact resume: the same scores at the same steps


def test_eval_every_needs_the_train_split(tmp_path: Path) -> None:
    data = _disc_npz(tmp_path / "discs.npz")
    with pytest.raises(ConfigError, match="split 'train'"):
        synthmed.train(data, out=tmp_path / "run", steps=2, eval_every=1, split="all", recipe="unet",
                       pair="image:mask", **TRAIN, **TINY)


def test_evaluate_reads_a_runs_own_split_fractions(tmp_path: Path) -> None:
    """Regression: ``synthmed evaluate`` re-split a run trained with --val-fraction/--test-fraction by the defaults."""
    from synthmed.metrics.evaluate import _run_data

    data = _disc_npz(tmp_path / "discs.npz")
    run = synthmed.train(data, out=tmp_path / "run", steps=1, recipe="unet", pair="image:mask", val_fraction=0.3,
                         test_fraction=0.25, **TRAIN, **TINY)
    options = _run_data(run.run_dir)[2]
    assert options["val_fraction"] == 0.3 and options["test_fraction"] == 0.25


def test_preview_shows_samples_with_foreground(tmp_path: Path) -> None:
    """Regression: the preview showed the first samples, on LGG slices without tumour: empty masks only."""
    from synthmed.data import load_training_set

    path = tmp_path / "mostly_empty.npz"
    images = np.zeros((12, 16, 16), np.uint8)
    masks = np.zeros((12, 16, 16), np.uint8)
    masks[[7, 9, 10, 11], 4:8, 4:8] = 1
    np.savez(path, images=images, masks=masks)
    data = load_training_set(path, pair="image:mask", split="all")
    recipe = build_recipe("unet", TINY, data.info)
    recipe.prepare_data(data)
    assert recipe.preview_batch["target"].flatten(1).amax(1).tolist() == [1.0] * 4


def test_segan_critic_step_raises_the_multiscale_l1_it_maximises() -> None:
    """The sign of SegAN's game: one critic step (segmentor fixed) increases the feature distance."""
    from synthmed import losses as L
    from synthmed.recipes.segmentation import class_probabilities, foreground

    torch.manual_seed(0)
    recipe = build_recipe("segan", {**TINY, "d_base_channels": 4, "clip": 0.0, "d_lr": 1e-2,
                                    "adversarial_weight": 1.0}, _info())
    batch = _batch(2)
    critic, segmentor = recipe.networks["C"], recipe.networks["S"]

    def distance() -> float:
        with torch.no_grad():
            p = foreground(class_probabilities(segmentor(batch["image"])))
            truth = masked_images(batch["image"], one_hot_foreground(batch["target"], 2))
            return float(L.multiscale_l1_loss(critic(masked_images(batch["image"], p)), critic(truth)))

    before = distance()
    recipe.config.lr = 0.0  # freeze the segmentor: only the critic moves
    optimizers = recipe.configure_optimizers()
    recipe.train_step(batch, StepContext(device=torch.device("cpu"), optimizers=optimizers, total_steps=10))
    assert distance() > before


def test_validation_crops_padding_off(tmp_path: Path) -> None:
    """Regression: validation padded images and masks with zeros and counted the padded strip as pixels."""
    recipe = build_recipe("unet", TINY, _info(size=12))  # depth 2: 10 px validation images are padded to 12

    class Held:
        def __init__(self, image: torch.Tensor, target: torch.Tensor) -> None:
            self.image, self.target = image, target

        def __len__(self) -> int:
            return len(self.image)

        def batch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"image": self.image[rows], "target": self.target[rows]}

    image = torch.full((2, 1, 10, 10), -1.0)
    target = torch.zeros(2, 1, 10, 10)
    target[:, :, 2:6, 2:6] = 1
    # A segmentor that predicts the truth on the image and foreground on every padded pixel.
    recipe.segment = lambda x: torch.nn.functional.pad(  # type: ignore[method-assign]
        target[:x.shape[0]], (0, x.shape[-1] - 10, 0, x.shape[-2] - 10), value=1.0)
    assert recipe.size_multiple() == 4
    assert recipe.validation_score(Held(image, target)) == 1.0  # padding (12 px) predicted 1, cropped off

"""Downstream classifiers, their metrics (hand-computed cases), traditional augmentation, seeded training with
early stopping on validation only, the classification accuracy score, and saliency maps."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from synthmed.errors import ConfigError
from synthmed.metrics.classification import (
    _validation_score,
    balanced_accuracy,
    classification_accuracy_score,
    classification_metrics,
    one_vs_rest_auc,
    roc_auc,
    sensitivity_at_specificity,
    traditional_augment,
    train_classifier,
)
from synthmed.nn.classifiers import CLASSIFIERS, build_classifier
from synthmed.viz.saliency import grad_cam, occlusion


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on shared, busy cores two threads spin against each other (~3x slower here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- metrics against hand-computed values ---------------------------------------------------------------------
def test_auc_of_a_hand_computed_case() -> None:
    # Positives 0.35, 0.8 vs negatives 0.1, 0.4: of the 4 pairs, 3 are ordered right.
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)


def test_auc_counts_a_tie_between_classes_as_one_half() -> None:
    # Positives {0.5, 0.9} vs negatives {0.5, 0.2}: pairs 0.5 (tie), 1, 1, 1 -> 3.5 / 4.
    assert roc_auc([0.5, 0.5, 0.2, 0.9], [1, 0, 0, 1]) == pytest.approx(0.875)


def test_auc_equals_pair_counting_with_many_ties() -> None:
    rng = np.random.default_rng(0)
    scores, positives = rng.integers(0, 5, 60).astype(float), rng.random(60) < 0.3
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0)
             for p, n in itertools.product(scores[positives], scores[~positives])]
    assert roc_auc(scores, positives) == pytest.approx(np.mean(pairs))
    assert roc_auc(-scores, positives) == pytest.approx(1 - np.mean(pairs))


def test_auc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="positive and one negative"):
        roc_auc([0.1, 0.2], [1, 1])


def test_one_vs_rest_auc_is_the_mean_of_per_class_aucs() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    probabilities = np.array([[.8, .1, .1], [.3, .4, .3], [.5, .4, .1], [.1, .8, .1], [.2, .2, .6], [.1, .3, .6]])
    # Class 0: positives .8,.3 vs .5,.1,.2,.1 -> (4+3)/8; class 1: .4,.8 vs .1,.4,.2,.3 -> (3.5+4)/8;
    # class 2: .6,.6 vs .1,.3,.1,.1 -> 8/8.
    assert one_vs_rest_auc(probabilities, labels) == pytest.approx((7 / 8 + 7.5 / 8 + 1.0) / 3)
    two = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4]])
    assert one_vs_rest_auc(two, [0, 1, 1, 1]) == pytest.approx(roc_auc(two[:, 1], [0, 1, 1, 1]))


def test_balanced_accuracy_of_a_hand_computed_case() -> None:
    # Class 0: 3 of 4 right; class 1: 1 of 2 right -> (0.75 + 0.5) / 2.
    assert balanced_accuracy([0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 1, 1]) == pytest.approx(0.625)
    assert balanced_accuracy([1, 1, 1], [1, 1, 1]) == 1.0  # only classes present in the labels count


def test_sensitivity_at_90_specificity_of_a_hand_computed_case() -> None:
    negatives = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    positives = [0.95, 0.85, 0.5, 0.05]
    scores = np.array(negatives + positives)
    labels = np.array([0] * 10 + [1] * 4)
    # Specificity >= 0.9 allows one of ten negatives at or above the threshold: t = 0.85 (only 0.9 above) keeps
    # 0.95 and 0.85 -> 2 of 4; t = 0.8 lets two negatives through (specificity 0.8).
    assert sensitivity_at_specificity(scores, labels, 0.9) == pytest.approx(0.5)
    assert sensitivity_at_specificity(scores, labels, 0.8) == pytest.approx(0.5)  # t=0.8: 0.95, 0.85 again
    assert sensitivity_at_specificity(scores, labels, 0.5) == pytest.approx(0.75)  # t=0.5: 5 negatives at >= 0.5
    assert sensitivity_at_specificity([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert sensitivity_at_specificity([0.9, 0.8, 0.1], [0, 0, 1]) == 0.0  # only "nothing positive" is specific


def test_classification_metrics_use_the_positive_class_column() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    metrics = classification_metrics(probabilities, np.array([0, 1, 1, 0]), positive_class=0)
    assert metrics["auc"] == pytest.approx(roc_auc(probabilities[:, 0], [1, 0, 0, 1]))
    assert metrics["accuracy"] == pytest.approx(0.5)
    assert metrics["balanced_accuracy"] == pytest.approx(0.5)


# --- networks -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CLASSIFIERS))
@pytest.mark.parametrize("channels,classes,size", [(1, 2, 16), (3, 5, 28), (1, 3, 64)])
def test_classifiers_give_one_logit_per_class(name: str, channels: int, classes: int, size: int) -> None:
    torch.manual_seed(0)
    net = build_classifier(name, channels, classes, size)
    assert net(torch.randn(2, channels, size, size)).shape == (2, classes)
    assert isinstance(net.cam_layer, nn.Module)


def test_resnet18_has_four_stages_of_two_basic_blocks() -> None:
    net = build_classifier("resnet18", 1, 2, 28)
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert not any(isinstance(m, nn.MaxPool2d) for m in net.stem)  # 28 px: 3x3 stem, no max-pool


def test_unknown_classifier_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown classifier 'vgg'"):
        build_classifier("vgg", 1, 2, 28)


# --- traditional augmentation ---------------------------------------------------------------------------------
def test_augmentation_without_any_change_is_the_identity() -> None:
    images = torch.rand(3, 1, 12, 12) * 2 - 1
    same = traditional_augment(images, torch.Generator().manual_seed(0), max_degrees=0, flip=False,
                               brightness=0, contrast=0)
    torch.testing.assert_close(same, images, atol=1e-5, rtol=0)


def test_flip_alone_mirrors_or_keeps_each_image() -> None:
    images = torch.rand(16, 2, 9, 9) * 2 - 1
    out = traditional_augment(images, torch.Generator().manual_seed(1), max_degrees=0, brightness=0, contrast=0)
    mirrored = [torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, images, strict=True)]
    kept = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, images, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True)) and any(mirrored) and any(kept)


def test_augmentation_is_seeded_bounded_and_varies_per_image() -> None:
    images = torch.rand(8, 1, 16, 16) * 2 - 1
    first = traditional_augment(images, torch.Generator().manual_seed(3))
    again = traditional_augment(images, torch.Generator().manual_seed(3))
    other = traditional_augment(images, torch.Generator().manual_seed(4))
    torch.testing.assert_close(first, again, atol=0, rtol=0)
    assert not torch.allclose(first, other)
    assert first.min() >= -1 and first.max() <= 1 and first.shape == images.shape


# --- training -------------------------------------------------------------------------------------------------
def _toy(n: int, seed: int, size: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Class 1 images have a bright square in the top-left corner; class 0 do not."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.rand(n, 1, size, size, generator=g) * 0.4 - 0.8
    images[labels == 1, :, 1:5, 1:5] += 1.4
    return images, labels


def test_training_is_deterministic_given_the_seed_and_restores_the_best_epoch() -> None:
    x, y = _toy(32, 0)
    vx, vy = _toy(12, 1)
    options = {"arch": "cnn", "max_epochs": 3, "patience": 2, "batch_size": 8, "augment": True}
    model_a, history_a = train_classifier(x, y, vx, vy, seed=5, **options)
    model_b, history_b = train_classifier(x, y, vx, vy, seed=5, **options)
    model_c, _ = train_classifier(x, y, vx, vy, seed=6, **options)
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0, msg=name)
    assert history_a.epochs == history_b.epochs
    assert not torch.equal(model_a.block1[0].weight, model_c.block1[0].weight)
    # The weights returned are the selected epoch's: their validation score is the one recorded for it.
    auc, loss = _validation_score(model_a, vx, vy, 8)
    best = history_a.epochs[history_a.best_epoch - 1]
    assert auc == pytest.approx(best["val_auc"]) and loss == pytest.approx(best["val_loss"], rel=1e-5)


def test_early_stopping_stops_patience_epochs_after_the_best() -> None:
    x, y = _toy(24, 0)
    vx, vy = _toy(8, 1)
    _, history = train_classifier(x, y, vx, vy, seed=0, max_epochs=12, patience=1, batch_size=8)
    if history.stopped_early:
        assert len(history.epochs) == history.best_epoch + 1
    keys = [(e["val_auc"], -e["val_loss"]) for e in history.epochs]
    assert keys.index(max(keys)) + 1 == history.best_epoch


def test_bad_budgets_are_refused() -> None:
    x, y = _toy(8, 0)
    with pytest.raises(ConfigError, match="max_epochs, patience and batch_size"):
        train_classifier(x, y, x, y, max_epochs=0)


def test_classification_accuracy_score_trains_on_synthetic_and_tests_on_real() -> None:
    synthetic_x, synthetic_y = _toy(40, 2)
    real_x, real_y = _toy(20, 3)
    result = classification_accuracy_score(synthetic_x, synthetic_y, real_x, real_y, seed=0, max_epochs=8,
                                           patience=8, batch_size=8)
    assert result["n_synthetic_train"] == 36 and result["n_real_test"] == 20  # 10% of each class held out
    assert result["validation"].startswith("10% of the synthetic")
    assert result["accuracy"] > 0.8 and result["auc"] > 0.9  # the square is easy to find
    with_val = classification_accuracy_score(synthetic_x, synthetic_y, real_x, real_y, val_images=real_x[:6],
                                             val_labels=real_y[:6], max_epochs=1, patience=1, batch_size=8)
    assert with_val["n_synthetic_train"] == 40 and with_val["validation"] == "the real validation images given"


# --- saliency -------------------------------------------------------------------------------------------------
class _MaskLayer(nn.Module):
    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


class _LooksTopLeft(nn.Module):
    """A hand-made classifier whose class-1 logit is the mean brightness of the top-left 6x6 pixels only."""

    def __init__(self, size: int = 16) -> None:
        super().__init__()
        mask = torch.zeros(1, 1, size, size)
        mask[..., :6, :6] = 1
        self.features = _MaskLayer(mask)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = self.scale * self.features(x).sum(dim=(1, 2, 3)) / 36.0
        return torch.stack([-score, score], dim=1)


def test_grad_cam_highlights_the_only_region_the_model_looks_at() -> None:
    model = _LooksTopLeft()
    images = torch.rand(3, 1, 16, 16) * 0.8 + 0.2
    maps = grad_cam(model, images, 1, model.features)
    assert maps.shape == (3, 16, 16)
    assert (maps[:, :6, :6] > 0).all() and maps[:, 6:, :].abs().max() == 0 and maps[:, :, 6:].abs().max() == 0
    assert model.scale.grad is None  # parameter gradients are left alone


def test_occlusion_highlights_the_only_region_the_model_looks_at() -> None:
    model = _LooksTopLeft()
    images = torch.rand(2, 1, 16, 16) * 0.8 + 0.2
    maps = occlusion(model, images, torch.tensor([1, 1]), patch=4, stride=2, fill=-1.0)
    assert maps.shape == (2, 16, 16)
    assert (maps[:, :6, :6] > 0).all()
    assert maps[:, 8:, :].max() == 0 and maps[:, :, 8:].max() == 0  # squares that miss the region change nothing
    peak = maps.flatten(1).argmax(dim=1)
    assert all(int(p) // 16 < 6 and int(p) % 16 < 6 for p in peak)


def test_grad_cam_runs_on_both_classifiers() -> None:
    for name in CLASSIFIERS:
        net = build_classifier(name, 1, 2, 16).eval()
        maps = grad_cam(net, torch.randn(2, 1, 16, 16), torch.tensor([0, 1]), net.cam_layer)
        assert maps.shape == (2, 16, 16) and maps.min() >= 0 and maps.max() <= 1

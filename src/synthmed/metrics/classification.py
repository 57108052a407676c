"""Downstream classification: metrics, a seeded classifier trainer, traditional augmentation, and the
classification accuracy score (CAS: train on synthetic, test on real; Ravuri & Vinyals 2019).

Metrics (numpy, no scikit-learn):

* :func:`roc_auc`: area under the ROC curve in its rank form, the Mann-Whitney U statistic divided by
  ``n_pos * n_neg``; tied scores get the average of their ranks, so a tie between a positive and a negative
  counts one half (equal to the trapezoidal area under the empirical ROC curve).
* :func:`one_vs_rest_auc`: the mean over classes of each class's probability scored against the rest.
* :func:`balanced_accuracy`: the mean over the classes present in ``labels`` of each class's recall.
* :func:`sensitivity_at_specificity`: the largest sensitivity over thresholds ``t`` (a case is called positive
  when ``score >= t``) at which the specificity on the evaluated set is at least the target (0.9). The threshold
  is chosen on the evaluated set itself, so the value is optimistic for new data; it compares arms on one
  test set, it is not a deployable operating point.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from torch import nn

from synthmed.devices import select_device
from synthmed.errors import ConfigError
from synthmed.nn.classifiers import build_classifier

#: Default budgets, chosen on BreastMNIST's validation split (28 px, small CNN: validation AUC peaked at epochs 9-17
#: of two 25-40-epoch runs), about 1 s per epoch on two CPU cores.
DEFAULT_MAX_EPOCHS = 20
DEFAULT_PATIENCE = 6
DEFAULT_BATCH_SIZE = 64
DEFAULT_LEARNING_RATE = 1e-3
DEFAULT_WEIGHT_DECAY = 1e-4


# --- metrics -------------------------------------------------------------------------------------------------
def _as_numpy(values: np.ndarray | torch.Tensor | Sequence[float]) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def roc_auc(scores: np.ndarray | torch.Tensor | Sequence[float],
            positives: np.ndarray | torch.Tensor | Sequence[bool]) -> float:
    """Area under the ROC curve of ``scores`` for the cases where ``positives`` is true (ties averaged).

    Args:
        scores: (N,) scores, higher meaning more likely positive.
        positives: (N,) booleans (or 0/1): which cases are positive.
    """
    scores = _as_numpy(scores).astype(np.float64).ravel()
    positives = _as_numpy(positives).astype(bool).ravel()
    if scores.shape != positives.shape:
        raise ValueError(f"{scores.shape[0]} scores for {positives.shape[0]} labels")
    n_pos = int(positives.sum())
    n_neg = int(positives.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs at least one positive and one negative case")
    ranks = rankdata(scores, method="average")  # ties share the mean of their ranks
    u_statistic = ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u_statistic / (n_pos * n_neg))


def one_vs_rest_auc(probabilities: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor) -> float:
    """Mean over classes of :func:`roc_auc` of that class's column against all other cases.

    For two classes this equals the AUC of either column. Classes absent from ``labels`` (or making up all of
    it) have no AUC and are left out of the mean.

    Args:
        probabilities: (N, K) class scores.
        labels: (N,) class indices.
    """
    probabilities = _as_numpy(probabilities)
    labels = _as_numpy(labels).astype(np.int64).ravel()
    values = [roc_auc(probabilities[:, k], labels == k) for k in range(probabilities.shape[1])
              if 0 < int((labels == k).sum()) < labels.size]
    if not values:
        raise ValueError("one-vs-rest AUC needs at least two classes present in the labels")
    return float(np.mean(values))


def balanced_accuracy(predictions: np.ndarray | torch.Tensor | Sequence[int],
                      labels: np.ndarray | torch.Tensor | Sequence[int]) -> float:
    """Mean recall over the classes present in ``labels`` (predictions of other classes count as errors).

    Args:
        predictions: (N,) predicted class indices.
        labels: (N,) true class indices.
    """
    predictions = _as_numpy(predictions).astype(np.int64).ravel()
    labels = _as_numpy(labels).astype(np.int64).ravel()
    if predictions.shape != labels.shape or labels.size == 0:
        raise ValueError(f"{predictions.size} predictions for {labels.size} labels")
    recalls = [float(np.mean(predictions[labels == k] == k)) for k in np.unique(labels)]
    return float(np.mean(recalls))


def sensitivity_at_specificity(scores: np.ndarray | torch.Tensor | Sequence[float],
                               positives: np.ndarray | torch.Tensor | Sequence[bool],
                               specificity: float = 0.9) -> float:
    """The largest sensitivity at a threshold whose specificity on these cases is at least ``specificity``.

    A case is called positive when its score is ``>=`` the threshold; every distinct score and +infinity
    (nothing positive: specificity 1) are tried, so a value always exists.

    Args:
        scores: (N,) scores, higher meaning more likely positive.
        positives: (N,) booleans: which cases are positive.
        specificity: The minimum specificity, in (0, 1].
    """
    scores = _as_numpy(scores).astype(np.float64).ravel()
    positives = _as_numpy(positives).astype(bool).ravel()
    if not 0.0 < specificity <= 1.0:
        raise ValueError(f"specificity must be in (0, 1], got {specificity}")
    positive_scores = np.sort(scores[positives])
    negative_scores = np.sort(scores[~positives])
    if positive_scores.size == 0 or negative_scores.size == 0:
        raise ValueError("sensitivity at specificity needs at least one positive and one negative case")
    thresholds = np.append(np.unique(scores), np.inf)
    # Negatives below t are called negative (specific); positives at or above t are found (sensitive).
    spec = np.searchsorted(negative_scores, thresholds, side="left") / negative_scores.size
    sens = 1.0 - np.searchsorted(positive_scores, thresholds, side="left") / positive_scores.size
    return float(sens[spec >= specificity - 1e-12].max())


def classification_metrics(probabilities: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor,
                           positive_class: int) -> dict[str, float]:
    """AUC, balanced accuracy, accuracy and sensitivity at 90% specificity, ``positive_class`` vs the rest.

    Args:
        probabilities: (N, K) softmax outputs.
        labels: (N,) true class indices.
        positive_class: The class scored as positive for ``auc`` and ``sensitivity_at_90_specificity``
            (balanced accuracy and accuracy use the arg-max over all classes).
    """
    probabilities = _as_numpy(probabilities)
    labels = _as_numpy(labels).astype(np.int64)
    predictions = probabilities.argmax(axis=1)
    positives = labels == positive_class
    metrics = {
        "auc": roc_auc(probabilities[:, positive_class], positives),
        "balanced_accuracy": balanced_accuracy(predictions, labels),
        "sensitivity_at_90_specificity": sensitivity_at_specificity(probabilities[:, positive_class], positives),
        "accuracy": float(np.mean(predictions == labels)),
    }
    if probabilities.shape[1] > 2:
        metrics["auc_one_vs_rest_mean"] = one_vs_rest_auc(probabilities, labels)
    return metrics


# --- traditional augmentation --------------------------------------------------------------------------------
def traditional_augment(images: torch.Tensor, generator: torch.Generator, *, max_degrees: float = 10.0,
                        flip: bool = True, brightness: float = 0.1, contrast: float = 0.1) -> torch.Tensor:
    """Random horizontal flip, rotation, brightness and contrast per image, drawn from ``generator``.

    One affine resampling (``affine_grid`` + bilinear ``grid_sample``, border padding so no black corners
    appear) does the flip (probability 1/2) and a rotation by U(-max_degrees, max_degrees); then each image's
    contrast about its mean is scaled by U(1 - contrast, 1 + contrast) and U(-brightness, brightness) is added
    (on the [-1, 1] scale), and the result is clamped to [-1, 1].

    Args:
        images: (N, C, H, W) in [-1, 1].
        generator: Random generator on ``images.device`` (a seeded one makes training reproducible).
        max_degrees: Largest rotation in degrees.
        flip: Whether to flip left-right with probability 1/2.
        brightness: Largest added offset.
        contrast: Largest relative change of contrast.
    """
    n = images.shape[0]

    def uniform(half_width: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator, device=images.device, dtype=images.dtype) * 2 - 1) * half_width

    angle = uniform(math.radians(max_degrees))
    mirror = torch.where(uniform(1.0) < 0, -1.0, 1.0).to(images.dtype) if flip else torch.ones_like(angle)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(angle)
    # Output (x, y) reads input R(angle) @ diag(mirror, 1) @ (x, y): mirror first, then rotate.
    theta = torch.stack([torch.stack([cos * mirror, -sin, zero], 1), torch.stack([sin * mirror, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    scale = (1.0 + uniform(contrast)).view(-1, 1, 1, 1)
    offset = uniform(brightness).view(-1, 1, 1, 1)
    return ((out - mean) * scale + mean + offset).clamp(-1.0, 1.0)


# --- training ------------------------------------------------------------------------------------------------
@dataclass
class TrainingHistory:
    """Per-epoch losses and validation AUC, the epoch restored, and whether early stopping ended training."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    selection: str = ("the epoch with the highest validation AUC (one-vs-rest mean; the AUC for two classes), "
                      "ties broken by the lower validation loss; by validation loss alone when the validation "
                      "split lacks a class")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def predict_probabilities(model: nn.Module, images: torch.Tensor, batch_size: int = 256,
                          device: str | torch.device = "cpu") -> torch.Tensor:
    """Softmax outputs (N, K) on the CPU, the model in eval mode.

    Args:
        model: A classifier returning logits.
        images: (N, C, H, W).
        batch_size: Images per forward pass.
        device: Where the model is.
    """
    model.eval()
    device = torch.device(device)
    chunks = [F.softmax(model(images[i:i + batch_size].to(device)).float(), dim=1).cpu()
              for i in range(0, images.shape[0], batch_size)]
    return torch.cat(chunks) if chunks else torch.empty(0, 0)


def _check_training_inputs(train_images: torch.Tensor, train_labels: torch.Tensor, val_images: torch.Tensor,
                           val_labels: torch.Tensor, max_epochs: int, patience: int, batch_size: int) -> None:
    if train_images.shape[0] != train_labels.shape[0] or val_images.shape[0] != val_labels.shape[0]:
        raise ConfigError("images and labels differ in number")
    if train_images.shape[0] < 2 or val_images.shape[0] < 1:
        raise ConfigError(f"a classifier needs >= 2 training and >= 1 validation images "
                          f"(got {train_images.shape[0]} and {val_images.shape[0]})")
    if max_epochs < 1 or patience < 1 or batch_size < 1:
        raise ConfigError(f"max_epochs, patience and batch_size must be at least 1 "
                          f"(got {max_epochs}, {patience}, {batch_size})")


def _train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor,
                     batch_size: int, order: torch.Generator, augment: torch.Generator | None) -> float:
    model.train()
    permutation = torch.randperm(images.shape[0], generator=order).to(images.device)
    total, seen = 0.0, 0
    for start in range(0, images.shape[0], batch_size):
        index = permutation[start:start + batch_size]
        if index.numel() < 2:  # BatchNorm cannot normalise a lone image at 1x1 resolution; skip the remainder
            continue
        batch = images.index_select(0, index)
        if augment is not None:
            batch = traditional_augment(batch, augment)
        loss = F.cross_entropy(model(batch), labels.index_select(0, index))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * index.numel()
        seen += index.numel()
    return total / max(seen, 1)


def _validation_score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      batch_size: int) -> tuple[float, float]:
    """(validation AUC or NaN when undefined, validation cross-entropy)."""
    probabilities = predict_probabilities(model, images, batch_size=max(batch_size, 256), device=images.device)
    cpu_labels = labels.cpu()
    loss = float(F.nll_loss(torch.log(probabilities.clamp_min(1e-12)), cpu_labels))
    try:
        auc = one_vs_rest_auc(probabilities, cpu_labels)
    except ValueError:
        auc = float("nan")
    return auc, loss


def _selection_key(auc: float, loss: float) -> tuple[float, float]:
    return (-math.inf if math.isnan(auc) else auc, -loss)


def train_classifier(train_images: torch.Tensor, train_labels: torch.Tensor, val_images: torch.Tensor,
                     val_labels: torch.Tensor, *, arch: str = "cnn", seed: int = 0,
                     max_epochs: int = DEFAULT_MAX_EPOCHS, patience: int = DEFAULT_PATIENCE,
                     batch_size: int = DEFAULT_BATCH_SIZE, augment: bool = False, device: str = "cpu",
                     num_classes: int | None = None, learning_rate: float = DEFAULT_LEARNING_RATE,
                     weight_decay: float = DEFAULT_WEIGHT_DECAY) -> tuple[nn.Module, TrainingHistory]:
    """Train a classifier with early stopping on the validation images only; return it at its best epoch.

    Adam, cross-entropy, up to ``max_epochs`` epochs; after each, validation AUC and loss are computed and the
    best epoch (:attr:`TrainingHistory.selection`) is kept; training stops after ``patience`` epochs without a
    better one, and the best weights are restored. ``seed`` fixes the initial weights, the batch order, dropout
    and the augmentation draws (the caller's global RNG state is left untouched), so a seed gives the same
    classifier on the same device and thread count.

    Args:
        train_images: (N, C, H, W) in [-1, 1].
        train_labels: (N,) class indices.
        val_images: Validation images: the only data model selection looks at.
        val_labels: Their class indices.
        arch: A name from :data:`synthmed.nn.classifiers.CLASSIFIERS` (``cnn``, ``resnet18``).
        seed: Seed of everything random in training.
        max_epochs: Most epochs.
        patience: Epochs without a better validation score before stopping.
        batch_size: Images per step.
        augment: Apply :func:`traditional_augment` to every training batch.
        device: ``cpu``, ``cuda``, ``auto``, ...
        num_classes: Classes (logits); default: the largest label seen + 1.
        learning_rate: Adam's step size.
        weight_decay: Adam's L2 penalty.
    """
    _check_training_inputs(train_images, train_labels, val_images, val_labels, max_epochs, patience, batch_size)
    target = select_device(device)
    if num_classes is None:
        num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    images, labels = train_images.float().to(target), train_labels.long().to(target)
    val_x, val_y = val_images.float().to(target), val_labels.long().to(target)
    with torch.random.fork_rng(devices=[target] if target.type == "cuda" else []):
        torch.manual_seed(seed)
        model = build_classifier(arch, images.shape[1], num_classes, max(images.shape[-2:])).to(target)
        optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate, weight_decay=weight_decay)
        order = torch.Generator().manual_seed(seed)
        draws = torch.Generator(device=target).manual_seed(seed + 1) if augment else None
        history = _fit(model, optimizer, (images, labels), (val_x, val_y), batch_size, max_epochs, patience,
                       order, draws)
    model.eval()
    return model, history


def _fit(model: nn.Module, optimizer: torch.optim.Optimizer, train: tuple[torch.Tensor, torch.Tensor],
         val: tuple[torch.Tensor, torch.Tensor], batch_size: int, max_epochs: int, patience: int,
         order: torch.Generator, draws: torch.Generator | None) -> TrainingHistory:
    history = TrainingHistory()
    best_key: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] = {}
    for epoch in range(1, max_epochs + 1):
        train_loss = _train_one_epoch(model, optimizer, *train, batch_size, order, draws)
        val_auc, val_loss = _validation_score(model, *val, batch_size)
        history.epochs.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                               "val_auc": None if math.isnan(val_auc) else val_auc})
        key = _selection_key(val_auc, val_loss)
        if best_key is None or key > best_key:
            best_key, history.best_epoch = key, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - history.best_epoch >= patience:
            history.stopped_early = True
            break
    model.load_state_dict(best_state)
    return history


def evaluate_classifier(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, positive_class: int,
                        device: str | torch.device = "cpu") -> dict[str, float]:
    """:func:`classification_metrics` of ``model`` on ``images``.

    Args:
        model: A trained classifier.
        images: (N, C, H, W) evaluation images.
        labels: (N,) true classes.
        positive_class: The class scored as positive.
        device: Where the model is.
    """
    return classification_metrics(predict_probabilities(model, images, device=device), labels, positive_class)


# --- classification accuracy score ---------------------------------------------------------------------------
def _hold_out(images: torch.Tensor, labels: torch.Tensor, fraction: float,
              seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A stratified, seeded split of (images, labels) into (train, validation)."""
    rng = np.random.default_rng(seed)
    val_rows: list[np.ndarray] = []
    for k in torch.unique(labels).tolist():
        rows = np.flatnonzero(labels.numpy() == k)
        rng.shuffle(rows)
        val_rows.append(rows[:max(1, round(fraction * rows.size))] if rows.size > 1 else rows[:0])
    is_val = np.zeros(labels.shape[0], bool)
    is_val[np.concatenate(val_rows)] = True
    keep, hold = torch.from_numpy(np.flatnonzero(~is_val)), torch.from_numpy(np.flatnonzero(is_val))
    return images[keep], labels[keep], images[hold], labels[hold]


def classification_accuracy_score(synthetic_images: torch.Tensor, synthetic_labels: torch.Tensor,
                                  real_images: torch.Tensor, real_labels: torch.Tensor, *,
                                  val_images: torch.Tensor | None = None, val_labels: torch.Tensor | None = None,
                                  arch: str = "cnn", seed: int = 0, max_epochs: int = DEFAULT_MAX_EPOCHS,
                                  patience: int = DEFAULT_PATIENCE, batch_size: int = DEFAULT_BATCH_SIZE,
                                  device: str = "cpu", positive_class: int | None = None) -> dict[str, Any]:
    """Classification accuracy score: a classifier trained on synthetic images only, tested on real ones.

    A generator whose samples carry the class information of the real data gives a CAS near that of a
    classifier trained on real data (Ravuri & Vinyals 2019). Early stopping uses ``val_images`` (real images
    that are not the test images, e.g. the validation split) when given, else 10% of the synthetic images held
    out per class; ``real_images`` are only ever scored.

    Args:
        synthetic_images: (N, C, H, W) generated images in [-1, 1].
        synthetic_labels: (N,) the classes they were generated for.
        real_images: (M, C, H, W) real test images.
        real_labels: (M,) their classes.
        val_images: Optional real validation images for early stopping.
        val_labels: Their classes.
        arch: Classifier name (``cnn`` or ``resnet18``).
        seed: Seed of the classifier's training (and of the synthetic hold-out).
        max_epochs: Most epochs.
        patience: Early-stopping patience in epochs.
        batch_size: Images per step.
        device: ``cpu``, ``cuda``, ``auto``, ...
        positive_class: Class scored for ``auc`` and sensitivity (default: the rarest class of ``real_labels``).

    Returns:
        ``accuracy``, ``auc``, ``balanced_accuracy``, ``sensitivity_at_90_specificity`` (and
        ``auc_one_vs_rest_mean`` for more than two classes) on the real images, with ``n_synthetic_train``,
        ``n_real_test``, ``positive_class``, ``validation``, ``best_epoch`` and ``arch``.
    """
    if (val_images is None) != (val_labels is None):
        raise ConfigError("give both val_images and val_labels, or neither")
    synthetic_labels = synthetic_labels.long().cpu()
    real_labels = real_labels.long().cpu()
    num_classes = int(max(synthetic_labels.max(), real_labels.max())) + 1
    if val_images is None:
        train_x, train_y, val_x, val_y = _hold_out(synthetic_images.cpu(), synthetic_labels, 0.1, seed)
        validation = "10% of the synthetic images per class, held out"
    else:
        train_x, train_y, val_x, val_y = synthetic_images, synthetic_labels, val_images, val_labels.long()
        validation = "the real validation images given"
    model, history = train_classifier(train_x, train_y, val_x, val_y, arch=arch, seed=seed, max_epochs=max_epochs,
                                      patience=patience, batch_size=batch_size, device=device,
                                      num_classes=num_classes)
    if positive_class is None:
        counts = torch.bincount(real_labels, minlength=num_classes)
        positive_class = int(torch.where(counts > 0, counts, counts.max() + 1).argmin())
    metrics: dict[str, Any] = evaluate_classifier(model, real_images, real_labels, positive_class,
                                                  device=next(model.parameters()).device)
    metrics.update(n_synthetic_train=int(train_x.shape[0]), n_real_test=int(real_images.shape[0]),
                   positive_class=positive_class, validation=validation, best_epoch=history.best_epoch, arch=arch)
    return metrics

"""Memorisation: is a synthetic sample a copy of a training sample?

For every synthetic sample we find its nearest training sample and its nearest held-out real sample, in a
feature space or in pixel space (flattened images), with chunked exact-enough Euclidean distances so 10,000 x
10,000 sets fit in memory. Two summaries:

* ``copy_fraction``: share of synthetic samples x whose nearest training sample t is closer to x than to any
  other training sample, d(x, t) < d(t, NN_train(t)) ("closer to a training image than any real image is"; the
  authenticity test of Alaa et al. 2022). Beware: this is *not* near 0 without memorisation. It says that x and
  t are mutual nearest neighbours, which happens by chance for 15-60 % of fresh samples depending on the
  dimension (about 0.6 in 2-D, 0.15-0.2 for 256-D Gaussians). ``holdout_copy_fraction`` applies the same test
  to held-out real samples, which were never trained on: that is the no-memorisation baseline to compare with.
* ``closer_to_train_fraction``: share of synthetic samples whose nearest training sample is closer than their
  nearest held-out sample. Without memorisation (fake, train and held-out drawn from one distribution) it is
  n_train / (n_train + n_holdout) by exchangeability, i.e. 0.5 for equal-size sets; memorisation pushes it to 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def as_float64_tensor(x: ArrayLike, name: str = "features", flatten: bool = False) -> torch.Tensor:
    """A CPU float64 tensor (N, D) from a numpy array or tensor; ``flatten`` turns (N, ...) images into (N, D)."""
    t = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if flatten:
        t = t.reshape(t.shape[0], -1)
    if t.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, D), got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def sq_distance_chunks(
    query: torch.Tensor, reference: torch.Tensor, chunk: int, exclude_self: bool = False
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield (start, squared distances (c, n_ref)) for consecutive query chunks of c <= ``chunk`` rows.

    ||q - r||^2 = ||q||^2 + ||r||^2 - 2 q.r via one matrix product per chunk (like torch.cdist's mm mode and
    sklearn's euclidean_distances): memory is chunk x n_ref instead of n x n_ref. ``exclude_self`` (query is
    reference) sets the diagonal to +inf.
    """
    r_sq = reference.square().sum(1)
    for start in range(0, query.shape[0], chunk):
        q = query[start : start + chunk]
        d2 = torch.addmm(r_sq.unsqueeze(0), q, reference.T, beta=1.0, alpha=-2.0)
        d2.add_(q.square().sum(1, keepdim=True)).clamp_(min=0.0)
        if exclude_self:
            rows = torch.arange(q.shape[0])
            d2[rows, rows + start] = float("inf")
        yield start, d2


def nearest_neighbours(
    query: ArrayLike, reference: ArrayLike, k: int = 1, exclude_self: bool = False, chunk: int = 2048
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean k nearest neighbours of every query row among the reference rows.

    Returns ``(distances, indices)``, each (n_query, k), nearest first. ``exclude_self=True`` requires query and
    reference to be the same set and skips each row's own index (duplicates of a row still count). Neighbours
    are found with the fast matrix-product distances; the returned distances are then recomputed directly as
    ||q - r|| so an exact copy has distance exactly 0.
    """
    q = as_float64_tensor(query, "query")
    r = as_float64_tensor(reference, "reference")
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query has dimension {q.shape[1]} but reference has {r.shape[1]}")
    if exclude_self and q.shape[0] != r.shape[0]:
        raise ValueError("exclude_self=True needs query and reference to be the same set")
    n_ref = r.shape[0] - (1 if exclude_self else 0)
    if not 1 <= k <= n_ref:
        raise ValueError(f"k={k} must be between 1 and the number of reference samples ({n_ref})")
    indices = torch.empty(q.shape[0], k, dtype=torch.long)
    distances = torch.empty(q.shape[0], k, dtype=torch.float64)
    for start, d2 in sq_distance_chunks(q, r, chunk, exclude_self):
        stop = start + d2.shape[0]
        idx = d2.topk(k, dim=1, largest=False).indices
        indices[start:stop] = idx
        # Direct differences for the k winners only (c * k * D work): no cancellation error in the reported values.
        distances[start:stop] = (q[start:stop].unsqueeze(1) - r[idx]).norm(dim=2)
    return distances.numpy(), indices.numpy()


def kth_neighbour_sq_distance(features: torch.Tensor, k: int, chunk: int = 2048) -> torch.Tensor:
    """Squared distance of every row to its k-th nearest other row (the k-NN radius of PRDC), shape (N,)."""
    radii = torch.empty(features.shape[0], dtype=features.dtype)
    for start, d2 in sq_distance_chunks(features, features, chunk, exclude_self=True):
        radii[start : start + d2.shape[0]] = d2.topk(k, dim=1, largest=False).values[:, -1]
    return radii


@dataclass
class MemorisationResult:
    """Nearest-neighbour evidence of memorisation; per-sample arrays plus the summaries of ``to_dict``."""

    space: str
    n_fake: int
    n_train: int
    n_holdout: int | None
    train_index: np.ndarray  # (n_fake,) nearest training sample of each synthetic sample
    train_distance: np.ndarray  # (n_fake,)
    holdout_index: np.ndarray | None  # (n_fake,) nearest held-out real sample
    holdout_distance: np.ndarray | None  # (n_fake,)
    train_nn_distance: np.ndarray  # (n_train,) each training sample's distance to its nearest other one
    is_copy: np.ndarray  # (n_fake,) bool
    copy_score: np.ndarray  # (n_fake,) d(x, t) / d(t, NN_train(t)); below copy_ratio means a copy
    copy_fraction: float
    closer_to_train_fraction: float | None
    expected_closer_to_train_fraction: float | None
    holdout_copy_fraction: float | None
    closest_pairs: np.ndarray  # (k, 2) [fake index, train index], most copy-like first
    copy_ratio: float = 1.0
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary: fractions, baselines, median distances and the closest pairs (no per-sample arrays)."""

        def _median(a: np.ndarray | None) -> float | None:
            return None if a is None else float(np.median(a))

        return {
            "space": self.space,
            "n_fake": self.n_fake,
            "n_train": self.n_train,
            "n_holdout": self.n_holdout,
            "copy_ratio": self.copy_ratio,
            "copy_fraction": self.copy_fraction,
            "holdout_copy_fraction": self.holdout_copy_fraction,
            "closer_to_train_fraction": self.closer_to_train_fraction,
            "expected_closer_to_train_fraction": self.expected_closer_to_train_fraction,
            "median_fake_to_train_distance": _median(self.train_distance),
            "median_fake_to_holdout_distance": _median(self.holdout_distance),
            "median_train_nn_distance": _median(self.train_nn_distance),
            "closest_pairs": [
                {"fake": int(f), "train": int(t), "distance": float(self.train_distance[f])}
                for f, t in self.closest_pairs
            ],
            "note": self.note,
        }


_NOTE = (
    "copy_fraction: synthetic samples closer to their nearest training sample than any other training sample is "
    "(mutual nearest neighbours); compare with holdout_copy_fraction, the same test on held-out real samples, not "
    "with 0. closer_to_train_fraction is n_train/(n_train+n_holdout) (0.5 for equal sizes) without memorisation."
)


def _copy_test(
    distance: np.ndarray, index: np.ndarray, train_nn: np.ndarray, copy_ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """(is_copy, copy_score) for samples at ``distance`` from training sample ``index``."""
    radius = train_nn[index]
    # An exact duplicate of a training sample is a copy even if that training sample is itself duplicated
    # (radius 0), hence the explicit distance == 0.
    is_copy = (distance < copy_ratio * radius) | (distance == 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = np.where(distance == 0.0, 0.0, distance / radius)
    return is_copy, score


def memorisation(
    fake: ArrayLike,
    train: ArrayLike,
    holdout: ArrayLike | None,
    space: Literal["feature", "pixel"] = "feature",
    k_pairs: int = 16,
    copy_ratio: float = 1.0,
    chunk: int = 2048,
) -> MemorisationResult:
    """Nearest training / held-out neighbours of every synthetic sample and the copy statistics.

    ``space="feature"``: inputs are feature arrays (N, D). ``space="pixel"``: inputs are images (N, ...) that are
    flattened, so the distance is the pixel-wise L2 distance. ``copy_ratio`` < 1 makes the copy test stricter:
    d(x, t) < copy_ratio * d(t, NN_train(t)). ``holdout`` may be None (no held-out statistics then).
    ``closest_pairs`` lists the ``k_pairs`` synthetic samples with the lowest copy score (distance relative to
    the local spacing of the training set, so dark or blank images are not favoured as plain distance would).
    """
    if space not in ("feature", "pixel"):
        raise ValueError(f"space must be 'feature' or 'pixel', got {space!r}")
    flat = space == "pixel"
    if not flat and any(np.ndim(a) != 2 for a in (fake, train)):
        raise ValueError("space='feature' needs 2-D feature arrays (N, D); pass space='pixel' for images")
    f = as_float64_tensor(fake, "fake", flatten=flat)
    t = as_float64_tensor(train, "train", flatten=flat)
    if t.shape[0] < 2:
        raise ValueError("memorisation needs at least 2 training samples")

    d_ft, i_ft = nearest_neighbours(f, t, 1, chunk=chunk)
    d_ft, i_ft = d_ft[:, 0], i_ft[:, 0]
    train_nn = nearest_neighbours(t, t, 1, exclude_self=True, chunk=chunk)[0][:, 0]
    is_copy, score = _copy_test(d_ft, i_ft, train_nn, copy_ratio)

    d_fh = i_fh = None
    closer = expected = holdout_copy = None
    n_holdout = 0
    if holdout is not None:
        h = as_float64_tensor(holdout, "holdout", flatten=flat)
        n_holdout = h.shape[0]
        d_fh, i_fh = nearest_neighbours(f, h, 1, chunk=chunk)
        d_fh, i_fh = d_fh[:, 0], i_fh[:, 0]
        closer = float(np.mean(d_ft < d_fh))
        expected = t.shape[0] / (t.shape[0] + n_holdout)
        d_ht, i_ht = nearest_neighbours(h, t, 1, chunk=chunk)
        holdout_copy = float(np.mean(_copy_test(d_ht[:, 0], i_ht[:, 0], train_nn, copy_ratio)[0]))

    order = np.argsort(score, kind="stable")[: min(k_pairs, f.shape[0])]
    return MemorisationResult(
        space=space,
        n_fake=f.shape[0],
        n_train=t.shape[0],
        n_holdout=None if holdout is None else n_holdout,
        train_index=i_ft,
        train_distance=d_ft,
        holdout_index=i_fh,
        holdout_distance=d_fh,
        train_nn_distance=train_nn,
        is_copy=is_copy,
        copy_score=score,
        copy_fraction=float(np.mean(is_copy)),
        closer_to_train_fraction=closer,
        expected_closer_to_train_fraction=expected,
        holdout_copy_fraction=holdout_copy,
        closest_pairs=np.stack([order, i_ft[order]], axis=1),
        copy_ratio=copy_ratio,
        note=_NOTE,
    )


def closest_pairs_grid(
    fake_images: torch.Tensor, train_images: torch.Tensor, result: MemorisationResult, n: int = 16
) -> torch.Tensor:
    """(2n, C, H, W): the n most copy-like synthetic images, each followed by its nearest training image.

    Ranked by ``result.copy_score`` (lowest first). With 2 columns per pair a grid of 2 * m columns shows m pairs
    per row, synthetic on the left.
    """
    n = min(n, result.n_fake)
    order = torch.as_tensor(np.argsort(result.copy_score, kind="stable")[:n])
    fakes = torch.as_tensor(fake_images)[order]
    trains = torch.as_tensor(train_images)[torch.as_tensor(result.train_index)[order]].to(fakes.dtype)
    return torch.stack([fakes, trains], dim=1).reshape(2 * n, *fakes.shape[1:])

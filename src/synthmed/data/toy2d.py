"""Two-dimensional toy distributions by name, each a mixture of axis-aligned Gaussians truncated to a square.

>>> points = sample("ring", 300, torch.Generator().manual_seed(0))     # (300, 2), inside [-2, 2]^2
>>> cells = density_grid("ring", bins=40)                             # (40, 40) cell probabilities, sum 1

Every distribution lives inside ``[-EXTENT, EXTENT]^2`` (EXTENT = 2), so plots of them share fixed axes: samples
falling outside the square are redrawn (rejection sampling), which makes the sampled law the mixture truncated to
the square, and :func:`density_grid` gives exactly that law's cell probabilities (mixture CDFs, renormalised by the
mass inside the square).

Grids (:func:`density_grid`, :func:`histogram`, :func:`cell_centres`) share one layout: ``grid[j, i]`` is the cell
with y in the j-th and x in the i-th of ``bins`` equal intervals of ``[-extent, extent]``, index 0 at ``-extent``
(row 0 is the bottom row of a plot with y pointing up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import torch

from synthmed.errors import ConfigError

#: Half the side of the square every distribution lives in: ``[-EXTENT, EXTENT]^2``.
EXTENT = 2.0


@dataclass(frozen=True)
class Mixture:
    """Equal-or-weighted axis-aligned Gaussians: component k has ``means[k]``, per-axis ``stds[k]``, ``weights[k]``.

    Tensors are float64: means and stds (K, 2), weights (K,) summing to 1.
    """

    means: torch.Tensor
    stds: torch.Tensor
    weights: torch.Tensor


def _uniform(means: torch.Tensor, std: tuple[float, float]) -> Mixture:
    k = means.shape[0]
    return Mixture(means.double(), torch.tensor(std, dtype=torch.float64).expand(k, 2).clone(),
                   torch.full((k,), 1.0 / k, dtype=torch.float64))


def _ring() -> Mixture:
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return _uniform(1.5 * torch.stack([angles.cos(), angles.sin()], dim=1), (0.08, 0.08))


def _grid() -> Mixture:
    ticks = torch.linspace(-1.5, 1.5, 5, dtype=torch.float64)
    ys, xs = torch.meshgrid(ticks, ticks, indexing="ij")
    return _uniform(torch.stack([xs.flatten(), ys.flatten()], dim=1), (0.07, 0.07))


def _spiral() -> Mixture:
    # 64 small Gaussians along the Archimedean spiral r = 0.2 + 1.5 t, angle 3 pi t, t in [0, 1]: one and a half
    # turns; equal steps in t put more components per unit length near the centre, like the usual spiral toy.
    t = torch.linspace(0.0, 1.0, 64, dtype=torch.float64)
    radius, angle = 0.2 + 1.5 * t, 3 * math.pi * t
    return _uniform(torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1), (0.06, 0.06))


def _gaussian() -> Mixture:
    # One Gaussian away from the origin (where an untrained generator's points start) and longer along x than y.
    return _uniform(torch.tensor([[0.75, 0.5]], dtype=torch.float64), (0.3, 0.15))


_BUILDERS = {"ring": _ring, "grid": _grid, "spiral": _spiral, "gaussian": _gaussian}

#: The distributions by name.
NAMES = tuple(_BUILDERS)


@cache
def mixture(name: str) -> Mixture:
    """The Gaussian mixture called ``name`` (before truncation to the square); one-line ConfigError if unknown."""
    try:
        builder = _BUILDERS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown 2-D distribution {name!r}; choose one of {', '.join(NAMES)}") from None
    return builder()


def sample(name: str, n: int, generator: torch.Generator | None = None, extent: float = EXTENT) -> torch.Tensor:
    """``n`` points of distribution ``name`` as a float32 (n, 2) tensor, every one inside ``[-extent, extent]^2``.

    Args:
        name: One of :data:`NAMES`.
        n: How many points.
        generator: The random source (fixes the points); torch's global one when ``None``.
        extent: Points outside ``[-extent, extent]^2`` are redrawn.
    """
    mix = mixture(name)
    kept: list[torch.Tensor] = []
    missing = n
    while missing > 0:
        # Draw a little more than needed: the rejected tails are rare, so one round almost always suffices.
        draw = missing + missing // 8 + 16
        component = torch.multinomial(mix.weights, draw, replacement=True, generator=generator)
        noise = torch.randn(draw, 2, dtype=torch.float64, generator=generator)
        points = mix.means[component] + mix.stds[component] * noise
        points = points[(points.abs() <= extent).all(dim=1)][:missing]
        kept.append(points)
        missing -= points.shape[0]
    return torch.cat(kept).float() if kept else torch.zeros(0, 2)


def _axis_mass(centre: torch.Tensor, std: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """(K, bins): each component's probability of each interval between consecutive ``edges`` along one axis."""
    cdf = torch.special.ndtr((edges[None, :] - centre[:, None]) / std[:, None])
    return cdf[:, 1:] - cdf[:, :-1]


def density_grid(name: str, bins: int = 40, extent: float = EXTENT) -> torch.Tensor:
    """The exact probability of each cell of a ``bins`` x ``bins`` grid over ``[-extent, extent]^2`` (float64).

    Each Gaussian's mass in a cell is the product of its two axis CDF differences (its axes are independent); the
    mixture's is their weighted sum, divided by the mixture's mass inside the square so the cells sum to 1 (the law
    that :func:`sample` draws from). No sampling is involved. Layout: ``grid[j, i]``, y bin j, x bin i (module doc).

    Args:
        name: One of :data:`NAMES`.
        bins: Cells per axis.
        extent: Half the side of the square.
    """
    if bins < 1:
        raise ConfigError(f"bins must be at least 1 (got {bins})")
    mix = mixture(name)
    edges = torch.linspace(-extent, extent, bins + 1, dtype=torch.float64)
    mass_x = _axis_mass(mix.means[:, 0], mix.stds[:, 0], edges)
    mass_y = _axis_mass(mix.means[:, 1], mix.stds[:, 1], edges)
    cells = torch.einsum("k,kj,ki->ji", mix.weights, mass_y, mass_x)
    return cells / cells.sum()


def histogram(points: torch.Tensor, bins: int = 40, extent: float = EXTENT) -> torch.Tensor:
    """The fraction of ``points`` (N, 2) in each cell of the ``bins`` x ``bins`` grid (float64, sums to 1).

    Points outside the square count in the nearest border cell, so no mass is lost; non-finite points are dropped
    (all-zero grid when none is left). Layout: ``grid[j, i]``, y bin j, x bin i (module doc).
    """
    points = points.detach().double().reshape(-1, 2)
    points = points[torch.isfinite(points).all(dim=1)]
    counts = torch.zeros(bins * bins, dtype=torch.float64)
    if points.shape[0] == 0:
        return counts.view(bins, bins)
    index = ((points + extent) / (2 * extent) * bins).floor().clamp(0, bins - 1).long()
    counts.index_add_(0, index[:, 1] * bins + index[:, 0], torch.ones(points.shape[0], dtype=torch.float64))
    return (counts / points.shape[0]).view(bins, bins)


def cell_centres(bins: int = 40, extent: float = EXTENT) -> torch.Tensor:
    """The (bins * bins, 2) float32 (x, y) centres of the grid's cells, row-major in the ``grid[j, i]`` layout."""
    ticks = (torch.arange(bins, dtype=torch.float32) + 0.5) * (2 * extent / bins) - extent
    ys, xs = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([xs.flatten(), ys.flatten()], dim=1)

"""Latent-space exploration: spherical interpolation between seeds, as in "explore latent space"."""

from __future__ import annotations

import torch


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation between latents ``a`` and ``b`` (..., D) at fractions ``t`` (T,) -> (T, ..., D).

    Gaussian latents concentrate on a sphere; linear interpolation passes through low-norm points the
    generator never saw, spherical interpolation stays on the shell (White 2016).
    """
    a_n = a / a.norm(dim=-1, keepdim=True)
    b_n = b / b.norm(dim=-1, keepdim=True)
    omega = torch.arccos((a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    t = t.reshape(-1, *([1] * a.dim()))
    so = torch.sin(omega)
    # Nearly parallel vectors: fall back to linear interpolation (sin(omega) -> 0).
    out = (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b
    linear = (1 - t) * a + t * b
    return torch.where(so.abs() < 1e-6, linear, out)


def latent_walks(latent_dim: int, walks: int, steps: int, seed: int = 0) -> torch.Tensor:
    """``walks`` rows of ``steps`` latents each; row ``i`` goes from seed point ``i`` to seed point ``i + 1``."""
    gen = torch.Generator().manual_seed(seed)
    anchors = torch.randn(walks + 1, latent_dim, generator=gen)
    t = torch.linspace(0, 1, steps)
    rows = [slerp(anchors[i], anchors[i + 1], t) for i in range(walks)]
    return torch.stack(rows)  # (walks, steps, D)

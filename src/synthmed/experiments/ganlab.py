"""GAN Lab: a two-dimensional GAN small enough to train step by step while a browser watches (after Kahng et al.,
"GAN Lab: Understanding Complex Deep Generative Models using Interactive Visual Experimentation", 2018).

>>> session = GanLabSession(GanLabConfig(distribution="ring", loss="wgan-gp"))
>>> session.step(50)
>>> picture = session.state()      # strict-JSON-able: points, D's verdict on a grid, G's gradients, histories

The generator maps noise z ~ N(0, I) to points in the plane, the discriminator maps points to a score; both are
small MLPs trained with Adam on the named adversarial loss of :mod:`synthmed.losses` (its ``d_loss`` / ``g_loss``,
plus ``gp_weight`` x :func:`synthmed.losses.gradient_penalty` for a critic loss), the real points coming from
:mod:`synthmed.data.toy2d`. One training step is ``n_critic`` discriminator updates, then one generator update.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from synthmed import losses
from synthmed.data import toy2d
from synthmed.errors import ConfigError

#: Cells per axis of the discriminator's verdict and of the divergence histograms.
GRID = 40
#: Real and fake points drawn, and gradient arrows.
SHOWN_POINTS = 300
#: G's samples (one fixed noise batch) behind the fake histogram of the divergences.
DIVERGENCE_SAMPLES = 10_000
#: Added to every cell of both histograms before KL and JS (then renormalised): log q stays finite.
SMOOTHING = 1e-6
#: Divergences are estimated at step 0 and then every this many steps (doubling as the history is compacted).
DIVERGENCE_EVERY = 10
#: Histories keep at most this many entries: when full, neighbouring entries are merged and the spacing doubles.
HISTORY_LIMIT = 1000

LIMITS = {"hidden": (1, 256), "layers": (1, 6), "latent_dim": (1, 16), "batch_size": (2, 1024),
          "n_critic": (1, 10), "seed": (0, 2**31 - 1)}
LEARNING_RATE_RANGE = (1e-6, 0.1)
GP_WEIGHT_RANGE = (0.0, 100.0)

DIVERGENCE_NOTE = (
    f"KL(real || fake) and JS(real, fake) in nats on a {GRID} x {GRID} grid over the square: real = the exact "
    f"probability of each cell under the target distribution; fake = the share of G's points in each cell for a "
    f"fixed batch of {DIVERGENCE_SAMPLES} noise vectors (points outside the square counted in the border cell). "
    f"Both get {SMOOTHING:g} per cell and are renormalised, so KL stays finite (at most about "
    f"{math.log(1 / SMOOTHING):.1f}); JS is at most ln 2 = 0.693. Cell counts miss structure finer than a cell, and "
    f"even a perfect G scores above zero from sampling noise: 'divergence_floor' is what {DIVERGENCE_SAMPLES} real "
    f"points score."
)


@dataclass
class GanLabConfig:
    """One GAN Lab set-up; every field is checked (one-line ConfigError) so a browser cannot ask for much.

    Args:
        distribution: The real data, one of :data:`synthmed.data.toy2d.NAMES`.
        g_hidden: Units per hidden layer of the generator (1-256).
        g_layers: Hidden layers of the generator (1-6).
        d_hidden: Units per hidden layer of the discriminator (1-256).
        d_layers: Hidden layers of the discriminator (1-6).
        latent_dim: Noise dimensions (1-16).
        loss: An adversarial loss of :data:`synthmed.losses.ADVERSARIAL_LOSSES` (bce, lsgan, wgan-gp, hinge).
        lr_g: Adam learning rate of G. The loss presets' rates (1e-4 to 4e-4) are tuned for images; these small
            2-D networks move visibly within a few hundred steps at 1e-3.
        lr_d: Adam learning rate of D.
        batch_size: Real and fake points per update (2-1024).
        n_critic: D updates per G update; ``None``: the loss preset's (5 for wgan-gp, else 1).
        gp_weight: Weight of the gradient penalty for critic losses (wgan-gp); unused otherwise.
        seed: Fixes the initial weights, every batch, and the fixed points and noise the pictures use.
    """

    distribution: str = "ring"
    g_hidden: int = 64
    g_layers: int = 2
    d_hidden: int = 64
    d_layers: int = 2
    latent_dim: int = 2
    loss: str = "bce"
    lr_g: float = 1e-3
    lr_d: float = 1e-3
    batch_size: int = 128
    n_critic: int | None = None
    gp_weight: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        toy2d.mixture(self.distribution)
        losses.get_adversarial_loss(self.loss)
        for name in ("g_hidden", "d_hidden"):
            _check_int(name, getattr(self, name), *LIMITS["hidden"])
        for name in ("g_layers", "d_layers"):
            _check_int(name, getattr(self, name), *LIMITS["layers"])
        for name in ("latent_dim", "batch_size", "seed"):
            _check_int(name, getattr(self, name), *LIMITS[name])
        if self.n_critic is not None:
            _check_int("n_critic", self.n_critic, *LIMITS["n_critic"])
        for name in ("lr_g", "lr_d"):
            _check_number(name, getattr(self, name), *LEARNING_RATE_RANGE)
        _check_number("gp_weight", self.gp_weight, *GP_WEIGHT_RANGE)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> GanLabConfig:
        """A config from JSON-like values (a request body): unknown keys and wrong types are one-line ConfigErrors.

        Args:
            values: Field names to values; missing fields take their defaults, ``None`` n_critic the preset's.
        """
        if values is None:
            return cls()
        if not isinstance(values, Mapping):
            raise ConfigError("the GAN Lab config must be an object of settings")
        known = {f.name for f in fields(cls)}
        unknown = sorted(str(key) for key in values if key not in known)
        if unknown:
            raise ConfigError(f"unknown GAN Lab setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for key in ("distribution", "loss"):
            if key in values and not isinstance(values[key], str):
                raise ConfigError(f"{key} must be a name (a string), got {values[key]!r}")
        return cls(**dict(values))

    @property
    def critic_updates(self) -> int:
        """n_critic, or the loss preset's when unset."""
        return self.n_critic or losses.get_adversarial_loss(self.loss).preset.n_critic

    def resolved(self) -> dict[str, Any]:
        """The settings as a plain dict, n_critic resolved to the number used."""
        return {**asdict(self), "n_critic": self.critic_updates}


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high} (got {value})")


def _check_number(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low:g} and {high:g} (got {value:g})")


def mlp(inputs: int, hidden: int, layers: int, outputs: int, spectral_norm: bool = False) -> nn.Sequential:
    """``layers`` hidden Linear + LeakyReLU(0.2) blocks and a Linear output; no normalisation layers (a critic
    must treat samples independently, and 2-D batches need none). ``spectral_norm`` wraps every Linear."""
    sizes = [inputs] + [hidden] * layers
    blocks: list[nn.Module] = []
    for size_in, size_out in zip(sizes[:-1], sizes[1:], strict=True):
        blocks += [nn.Linear(size_in, size_out), nn.LeakyReLU(0.2)]
    blocks.append(nn.Linear(sizes[-1], outputs))
    if spectral_norm:
        blocks = [nn.utils.parametrizations.spectral_norm(b) if isinstance(b, nn.Linear) else b for b in blocks]
    return nn.Sequential(*blocks)


def _smoothed(histogram: torch.Tensor, epsilon: float) -> torch.Tensor:
    h = histogram.double().flatten() + epsilon
    return h / h.sum()


def kl_divergence(p: torch.Tensor, q: torch.Tensor, epsilon: float = SMOOTHING) -> float:
    """KL(p || q) = sum p log(p / q) in nats, of two histograms (any shape, each summing to 1).

    Both get ``epsilon`` per cell and are renormalised first (``epsilon=0``: none; cells where p is 0 add 0).
    """
    p, q = _smoothed(p, epsilon), _smoothed(q, epsilon)
    mask = p > 0
    return float((p[mask] * (p[mask] / q[mask]).log()).sum())


def js_divergence(p: torch.Tensor, q: torch.Tensor, epsilon: float = SMOOTHING) -> float:
    """JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2 with m = (p + q) / 2, in nats (symmetric, at most ln 2).

    Both get ``epsilon`` per cell and are renormalised first, as in :func:`kl_divergence`.
    """
    p, q = _smoothed(p, epsilon), _smoothed(q, epsilon)
    m = (p + q) / 2
    return 0.5 * kl_divergence(p, m, 0.0) + 0.5 * kl_divergence(q, m, 0.0)


class _LossHistory:
    """Mean losses per window of ``stride`` steps (1 at first); at :data:`HISTORY_LIMIT` entries neighbouring
    windows are merged and the stride doubles, so memory stays bounded and the entries evenly spaced."""

    def __init__(self) -> None:
        self.stride = 1
        self.steps: list[int] = []
        self.loss_d: list[float] = []
        self.loss_g: list[float] = []
        self._sum_d = self._sum_g = 0.0
        self._count = 0

    def add(self, step: int, loss_d: float, loss_g: float) -> None:
        self._sum_d += loss_d
        self._sum_g += loss_g
        self._count += 1
        if step % self.stride:
            return
        self.steps.append(step)
        self.loss_d.append(self._sum_d / self._count)
        self.loss_g.append(self._sum_g / self._count)
        self._sum_d = self._sum_g = 0.0
        self._count = 0
        if len(self.steps) >= HISTORY_LIMIT:
            self.steps = self.steps[1::2]
            self.loss_d = [(a + b) / 2 for a, b in zip(self.loss_d[::2], self.loss_d[1::2], strict=True)]
            self.loss_g = [(a + b) / 2 for a, b in zip(self.loss_g[::2], self.loss_g[1::2], strict=True)]
            self.stride *= 2


class GanLabSession:
    """A G and a D being trained on one 2-D distribution, with what the GAN Lab page draws.

    Deterministic given ``config.seed``: the weights are initialised under a fork of torch's global RNG seeded with
    it (the global state is left as it was), and every later draw (batches, the gradient penalty's mixing weights)
    comes from the session's own generator.

    Args:
        config: The set-up (checked when it was made).
    """

    def __init__(self, config: GanLabConfig) -> None:
        self.config = config
        self.loss = losses.get_adversarial_loss(config.loss)
        preset = self.loss.preset
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.generator = mlp(config.latent_dim, config.g_hidden, config.g_layers, 2)
            self.discriminator = mlp(2, config.d_hidden, config.d_layers, 1, spectral_norm=preset.spectral_norm)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr_g, betas=preset.betas,
                                      fused=True)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr_d, betas=preset.betas,
                                      fused=True)
        self.rng = torch.Generator().manual_seed(config.seed)
        # The pictures' fixed draws come from their own generator, so they do not depend on the training's.
        shown = torch.Generator().manual_seed(config.seed + 1)
        self.real_shown = toy2d.sample(config.distribution, SHOWN_POINTS, shown)
        self.noise_shown = torch.randn(SHOWN_POINTS, config.latent_dim, generator=shown)
        self.noise_divergence = torch.randn(DIVERGENCE_SAMPLES, config.latent_dim, generator=shown)
        self.real_cells = toy2d.density_grid(config.distribution, GRID)
        floor_sample = toy2d.sample(config.distribution, DIVERGENCE_SAMPLES, shown)
        self.divergence_floor = self._divergences(toy2d.histogram(floor_sample, GRID))
        self.steps_done = 0
        self.losses = _LossHistory()
        self.divergence_every = DIVERGENCE_EVERY
        self.divergences: list[tuple[int, float, float]] = []
        self._record_divergences()

    # --- training -----------------------------------------------------------------------------------------
    def _score(self, points: torch.Tensor) -> torch.Tensor:
        return self.discriminator(points).squeeze(-1)

    def _train_discriminator(self) -> float:
        cfg = self.config
        real = toy2d.sample(cfg.distribution, cfg.batch_size, self.rng)
        noise = torch.randn(cfg.batch_size, cfg.latent_dim, generator=self.rng)
        with torch.no_grad():
            fake = self.generator(noise)
        # One forward for both halves (D treats samples independently): half the calls of two forwards.
        real_scores, fake_scores = self._score(torch.cat([real, fake])).split(cfg.batch_size)
        loss_d = self.loss.d_loss(real_scores, fake_scores)
        if self.loss.critic:
            mixing = torch.rand(cfg.batch_size, generator=self.rng)
            loss_d = loss_d + cfg.gp_weight * losses.gradient_penalty(self._score, real, fake, epsilon=mixing)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        return loss_d.item()

    def _train_generator(self) -> float:
        cfg = self.config
        noise = torch.randn(cfg.batch_size, cfg.latent_dim, generator=self.rng)
        self.discriminator.requires_grad_(False)  # G's update needs no gradients of D's weights
        try:
            loss_g = self.loss.g_loss(self._score(self.generator(noise)))
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
        finally:
            self.discriminator.requires_grad_(True)
        return loss_g.item()

    def step(self, n: int = 1) -> None:
        """Run ``n`` training steps: each ``n_critic`` D updates on fresh batches, then one G update.

        The loss history gets each step's mean D loss (including the gradient penalty for wgan-gp: the objective
        D minimises) and G loss; the divergences are re-estimated every ``divergence_every`` steps.
        """
        self.generator.train()
        self.discriminator.train()
        for _ in range(n):
            updates = self.config.critic_updates
            loss_d = sum(self._train_discriminator() for _ in range(updates)) / updates
            loss_g = self._train_generator()
            self.steps_done += 1
            self.losses.add(self.steps_done, loss_d, loss_g)
            if self.steps_done % self.divergence_every == 0:
                self._record_divergences()

    # --- what the page draws ------------------------------------------------------------------------------
    def _divergences(self, fake_cells: torch.Tensor) -> tuple[float, float]:
        return kl_divergence(self.real_cells, fake_cells), js_divergence(self.real_cells, fake_cells)

    def current_divergences(self) -> tuple[float, float]:
        """(KL(real || fake), JS(real, fake)) of G now, estimated as :data:`DIVERGENCE_NOTE` says."""
        self.generator.eval()
        with torch.no_grad():
            fake = self.generator(self.noise_divergence)
        return self._divergences(toy2d.histogram(fake, GRID))

    def _record_divergences(self) -> None:
        kl, js = self.current_divergences()
        self.divergences.append((self.steps_done, kl, js))
        if len(self.divergences) > HISTORY_LIMIT:
            self.divergence_every *= 2
            self.divergences = [entry for entry in self.divergences if entry[0] % self.divergence_every == 0]

    def _verdict(self, grid: int) -> dict[str, Any]:
        with torch.no_grad():
            scores = self._score(toy2d.cell_centres(grid)).double()
        finite = scores[torch.isfinite(scores)]
        low, high = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 0.0)
        if self.config.loss == "bce":
            values, kind = torch.sigmoid(scores), "probability"
            note = "sigmoid(D(x)): D's probability that a point at x is real"
        elif self.config.loss == "lsgan":
            values, kind = scores.clamp(0.0, 1.0), "clamped"
            note = "D(x) clamped to [0, 1]: least-squares D is trained towards 1 on real points and 0 on fakes"
        else:
            spread = high - low
            values = (scores - low) / spread if spread > 0 else torch.full_like(scores, 0.5)
            kind = "rescaled"
            note = (f"D(x) rescaled from its range on the grid [{low:.3g}, {high:.3g}] to [0, 1]: a {self.config.loss} "
                    f"critic's score is not a probability, only higher means more real")
        return {"grid": grid, "values": _rounded(values.view(grid, grid)), "kind": kind,
                "score_range": [_finite(low), _finite(high)], "note": note}

    def _gradients(self, fake: torch.Tensor) -> dict[str, Any]:
        # g_loss is a batch mean: times N, each row is the gradient of that point's own loss term.
        points = fake.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.loss.g_loss(self._score(points)) * points.shape[0], points)
        push = -grad
        norms = push.norm(dim=1)
        finite = norms[torch.isfinite(norms)]
        longest = float(finite.max()) if finite.numel() else 0.0
        vectors = push / longest if longest > 0 else torch.zeros_like(push)
        return {"vectors": _rounded(vectors), "max_norm": _finite(longest),
                "note": "minus the gradient of G's loss with respect to each fake point (where G's update pushes it), "
                        "divided by the longest one's norm ('max_norm')"}

    def state(self, grid: int = GRID) -> dict[str, Any]:
        """Everything the page draws, as a strict-JSON-able dict (non-finite numbers become ``None``).

        Keys: ``step``; ``config`` (n_critic resolved); ``extent`` (the plots' square is [-extent, extent]^2);
        ``real`` and ``fake``: :data:`SHOWN_POINTS` [x, y] points (a fixed real sample; G of a fixed noise batch);
        ``verdict``: D on the centres of a ``grid`` x ``grid`` grid, ``values[j][i]`` for y bin j (bottom first) and
        x bin i, in [0, 1] with its ``kind``, ``score_range`` and ``note``; ``gradients``: one unit-scaled arrow per
        fake point with ``max_norm``; ``losses``: columns ``step``, ``loss_d``, ``loss_g`` (``stride`` steps per
        entry); ``divergences``: columns ``step``, ``kl``, ``js`` every ``every`` steps, with ``divergence_floor``
        and ``divergence_note``; ``diverged``: whether any recorded loss is not finite.

        Args:
            grid: Cells per axis of the verdict grid (1-100).
        """
        if not 1 <= grid <= 100:
            raise ConfigError(f"grid must be between 1 and 100 (got {grid})")
        self.generator.eval()
        self.discriminator.eval()  # spectral norm: no power iteration (no change to D) while drawing
        with torch.no_grad():
            fake = self.generator(self.noise_shown)
        history = self.losses
        return {
            "step": self.steps_done,
            "config": self.config.resolved(),
            "extent": toy2d.EXTENT,
            "real": _rounded(self.real_shown),
            "fake": _rounded(fake),
            "verdict": self._verdict(grid),
            "gradients": self._gradients(fake),
            "losses": {"step": list(history.steps), "loss_d": [_finite(v) for v in history.loss_d],
                       "loss_g": [_finite(v) for v in history.loss_g], "stride": history.stride},
            "divergences": {"step": [s for s, _, _ in self.divergences],
                            "kl": [_finite(kl) for _, kl, _ in self.divergences],
                            "js": [_finite(js) for _, _, js in self.divergences],
                            "every": self.divergence_every, "bins": GRID},
            "divergence_floor": {"kl": _finite(self.divergence_floor[0]), "js": _finite(self.divergence_floor[1])},
            "divergence_note": DIVERGENCE_NOTE,
            "diverged": not all(math.isfinite(v) for v in history.loss_d + history.loss_g),
        }


def _finite(value: float, digits: int = 6) -> float | None:
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def _rounded(values: torch.Tensor, digits: int = 4) -> list:
    """Nested lists of rounded floats, ``None`` for non-finite entries (strict JSON has no NaN or Infinity)."""
    values = values.detach().double()
    clean = torch.where(torch.isfinite(values), values, torch.zeros_like(values)).round(decimals=digits)
    rows = clean.tolist()
    if bool(torch.isfinite(values).all()):
        return rows
    mask = torch.isfinite(values).tolist()

    def merge(row: list | float, ok: list | bool) -> list | float | None:
        if isinstance(row, list):
            return [merge(r, o) for r, o in zip(row, ok, strict=True)]
        return row if ok else None

    return merge(rows, mask)

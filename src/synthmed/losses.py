"""GAN objectives and regularisers as small pure functions on logits and tensors.

Conventions: ``*_logits`` are raw discriminator outputs (no sigmoid), shaped (N,) or (N, 1); every loss is a
scalar mean over the batch, to be minimised. Weights (lambda, gamma) are applied by the caller.

``ADVERSARIAL_LOSSES`` names the adversarial objectives (bce, lsgan, wgan-gp, hinge) with their papers' optimiser
presets; adding one is one :func:`register_adversarial_loss` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from synthmed.errors import ConfigError

Target = float | torch.Tensor


def _bce(logits: torch.Tensor, target: Target) -> torch.Tensor:
    # full_like fills on the logits' device: no host-to-device copy of a Python scalar every step.
    if isinstance(target, torch.Tensor):
        target = target.to(logits).expand_as(logits)
    else:
        target = torch.full_like(logits, target)
    return F.binary_cross_entropy_with_logits(logits, target)


# Standard (Goodfellow et al. 2014)


def d_loss_bce(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, real_target: Target = 1.0, fake_target: Target = 0.0
) -> torch.Tensor:
    """mean BCE(real_logits, real_target) + mean BCE(fake_logits, fake_target).

    BCE(l, t) = -[t log sigmoid(l) + (1 - t) log(1 - sigmoid(l))]. ``real_target=0.9`` is one-sided label
    smoothing (Salimans et al. 2016); tensor targets broadcastable to the logits' shape give per-sample
    noisy or flipped labels.
    """
    return _bce(real_logits, real_target) + _bce(fake_logits, fake_target)


def g_loss_nonsaturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """-mean log sigmoid(fake_logits) = mean softplus(-fake_logits) (the non-saturating generator loss)."""
    return F.softplus(-fake_logits).mean()


# Hinge (Lim & Ye 2017; Miyato et al. 2018)


def d_loss_hinge(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """mean relu(1 - real_logits) + mean relu(1 + fake_logits)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def g_loss_hinge(fake_logits: torch.Tensor) -> torch.Tensor:
    """-mean fake_logits."""
    return -fake_logits.mean()


# Wasserstein (Arjovsky et al. 2017; with gradient_penalty: Gulrajani et al. 2017)


def d_loss_wasserstein(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """mean critic(fake) - mean critic(real)."""
    return fake_scores.mean() - real_scores.mean()


def g_loss_wasserstein(fake_scores: torch.Tensor) -> torch.Tensor:
    """-mean critic(fake)."""
    return -fake_scores.mean()


# Least squares (Mao et al. 2017, a=0, b=1, c=1)


def d_loss_least_squares(
    real_logits: torch.Tensor,
    fake_logits: torch.Tensor,
    real_target: Target = 1.0,
    fake_target: Target = 0.0,
) -> torch.Tensor:
    """0.5 mean (real - b)^2 + 0.5 mean (fake - a)^2 with b = ``real_target``, a = ``fake_target``.

    Targets other than (1, 0), scalars or per-sample tensors, carry label smoothing, noise and flips.
    """
    return 0.5 * (real_logits - real_target).square().mean() + 0.5 * (fake_logits - fake_target).square().mean()


def g_loss_least_squares(fake_logits: torch.Tensor) -> torch.Tensor:
    """0.5 mean (fake - 1)^2."""
    return 0.5 * (fake_logits - 1.0).square().mean()


# Gradient regularisers


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    epsilon: torch.Tensor | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017, Algorithm 1): mean_i (||grad critic(x_hat_i)||_2 - 1)^2.

    x_hat_i = eps_i real_i + (1 - eps_i) fake_i with one eps_i ~ U[0, 1] per sample (or the given
    ``epsilon``, shaped (N,) or broadcastable to ``real``). ``real`` and ``fake`` are detached, so the
    penalty's gradient reaches only the critic; the graph is kept (create_graph=True) for that backward.
    The critic may return (N,) or (N, 1) and must treat samples independently (no BatchNorm).
    """
    real, fake = real.detach(), fake.detach()
    if epsilon is None:
        epsilon = torch.rand(real.shape[0], device=real.device, dtype=real.dtype)
    if epsilon.dim() == 1:
        epsilon = epsilon.view(-1, *([1] * (real.dim() - 1)))
    x_hat = (epsilon * real + (1.0 - epsilon) * fake).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1.0).square().mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): mean_i ||grad_{x_i} D(x_i)||_2^2 on real data; scale by gamma/2 outside.

    ``real_images`` must have had ``requires_grad_(True)`` before ``real_logits = D(real_images)``.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.square().flatten(1).sum(1).mean()


def lecam_penalty(
    real_logits: torch.Tensor, fake_logits: torch.Tensor, real_anchor: Target, fake_anchor: Target
) -> torch.Tensor:
    """LeCam regulariser (Tseng et al. 2021): mean relu(D(x) - a_F)^2 + mean relu(a_R - D(G(z)))^2.

    The relu is the authors' code's (their eq. 3 squares every deviation): only outputs past the other class's
    anchor are penalised.

    ``real_anchor`` (a_R) and ``fake_anchor`` (a_F) are moving averages of the discriminator's mean output on
    real and on generated images (:class:`LogitAnchors`). A real output above the fake anchor, or a fake output
    below the real anchor, is pulled back: the discriminator cannot drive the two classes arbitrarily far
    apart, which is how it overfits a small training set. Anchors are constants here (no gradient).
    """
    if isinstance(real_anchor, torch.Tensor):
        real_anchor = real_anchor.detach()
    if isinstance(fake_anchor, torch.Tensor):
        fake_anchor = fake_anchor.detach()
    return F.relu(real_logits - fake_anchor).square().mean() + F.relu(real_anchor - fake_logits).square().mean()


class LogitAnchors:
    """The moving averages LeCam's penalty anchors to: a_R <- decay a_R + (1 - decay) mean D(real), same for a_F.

    The first update sets the anchors to the batch means (no bias from a zero start; the authors' code instead
    tracks the current means without averaging for its first 1,000 iterations). ``state``/``load_state`` carry
    them through a checkpoint, so a resumed run continues exactly.

    Args:
        decay: the averages' decay per update (the paper's 0.99).
    """

    def __init__(self, decay: float = 0.99) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the LeCam anchors' decay must be in [0, 1) (got {decay})")
        self.decay = decay
        self.values = torch.zeros(2)  # (a_R, a_F)
        self.updates = 0

    def update(self, real_mean: torch.Tensor, fake_mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold in this step's mean outputs (detached); return the new (a_R, a_F)."""
        current = torch.stack([real_mean.detach().float(), fake_mean.detach().float()])
        decay = self.decay if self.updates else 0.0
        self.values = decay * self.values.to(current) + (1.0 - decay) * current
        self.updates += 1
        return self.values[0], self.values[1]

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        """The anchors and the update count as tensors named ``prefix/...`` (for a checkpoint)."""
        return {f"{prefix}/values": self.values.detach().cpu().clone(),
                f"{prefix}/updates": torch.tensor(self.updates, dtype=torch.int64)}

    def load_state(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        """Restore what :meth:`state` saved under ``prefix``; keep the fresh anchors where it saved nothing."""
        if f"{prefix}/values" in state:  # absent in checkpoints of runs that trained without the penalty
            self.values = state[f"{prefix}/values"].clone()
            self.updates = int(state[f"{prefix}/updates"])


# Reconstruction and feature losses


def l1_loss(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean |input - target| (e.g. pix2pix's L1 term)."""
    return (input - target).abs().mean()


def cycle_consistency_loss(real: torch.Tensor, reconstructed: torch.Tensor) -> torch.Tensor:
    """mean |real - F(G(real))| (CycleGAN, Zhu et al. 2017); the caller scales by lambda_cyc."""
    return l1_loss(reconstructed, real)


def multiscale_l1_loss(
    features_a: Sequence[torch.Tensor], features_b: Sequence[torch.Tensor]
) -> torch.Tensor:
    """SegAN (Xue et al. 2018): (1/L) sum_l mean |f_l(a) - f_l(b)| over the L critic scales."""
    if len(features_a) != len(features_b) or not features_a:
        n_a, n_b = len(features_a), len(features_b)
        raise ValueError(f"need equally many (>= 1) feature maps, got {n_a} and {n_b}")
    return torch.stack([l1_loss(a, b) for a, b in zip(features_a, features_b, strict=True)]).mean()


def soft_dice_loss(probabilities: torch.Tensor, one_hot: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 - mean_c 2 sum(p_c t_c) / (sum p_c + sum t_c), each class's sums over the whole batch (batch Dice).

    Pooling the batch keeps the loss defined on images without foreground (most LGG slices show no tumour),
    where a per-image Dice is 0/0; ``eps`` keeps the ratio finite (a class with no truth pixel and exactly zero
    predicted mass scores 1; sigmoid / softmax outputs are never exactly 0, so such a class pulls towards 0 mass).

    Args:
        probabilities: (N, C, *spatial) in [0, 1], one channel per scored class.
        one_hot: the truth, same shape, in {0, 1}.
        eps: added to numerator and denominator.
    """
    if probabilities.shape != one_hot.shape:
        raise ValueError(f"probabilities {tuple(probabilities.shape)} and truth {tuple(one_hot.shape)} differ")
    dims = [0, *range(2, probabilities.dim())]
    overlap = (probabilities * one_hot).sum(dims)
    total = probabilities.sum(dims) + one_hot.sum(dims)
    return 1.0 - ((2.0 * overlap + eps) / (total + eps)).mean()


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """Salimans et al. 2016: mean_k (E_real f_k - E_fake f_k)^2, batch means of flattened features.

    The real side is detached: only the generator is trained towards the real statistics.
    """
    real_mean = real_features.detach().flatten(1).mean(0)
    fake_mean = fake_features.flatten(1).mean(0)
    return (real_mean - fake_mean).square().mean()


def mode_seeking_loss(images: torch.Tensor, latents: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mao et al. 2019 (MSGAN): 1 / (mean|G(z1) - G(z2)| / mean|z1 - z2| + eps), to be minimised by the generator.

    The batch's first half is paired with its second (an odd last sample is left out), so no extra generator pass
    is needed; a generator that maps different latents to similar images (mode collapse) pays for it.
    """
    half = images.shape[0] // 2
    if half == 0:
        raise ValueError(f"the mode-seeking loss needs at least 2 samples (got {images.shape[0]})")
    image_distance = (images[:half] - images[half:2 * half]).abs().mean()
    latent_distance = (latents[:half] - latents[half:2 * half]).abs().mean()
    return 1.0 / (image_distance / latent_distance + eps)


# Adversarial losses by name: one registration per loss


@dataclass(frozen=True)
class OptimizerPreset:
    """The paper's training settings that come with a loss (each may be overridden by a recipe option).

    ``d_norm`` is the discriminator normalisation for network families that take a ``norm`` option;
    ``spectral_norm`` puts spectral norm on every discriminator layer.
    """

    lr_g: float
    lr_d: float
    betas: tuple[float, float]
    n_critic: int = 1
    d_norm: str = "batch"
    spectral_norm: bool = False


@dataclass(frozen=True)
class AdversarialLoss:
    """An adversarial objective as the recipes use it.

    Args:
        name: The ``loss=`` option that selects it.
        d_loss: ``d_loss(real_logits, fake_logits)``, or with ``targets`` ``d_loss(real_logits, fake_logits,
            real_target, fake_target)``; a scalar to minimise.
        g_loss: ``g_loss(fake_logits)``; a scalar to minimise.
        preset: The optimiser and discriminator settings of its paper.
        targets: The discriminator loss takes real/fake targets, so label smoothing, noise and flips apply.
        critic: A Wasserstein critic: the recipe adds ``gp_weight`` x :func:`gradient_penalty`, which is per
            sample, so the discriminator must not couple samples (no BatchNorm, no minibatch discrimination).
    """

    name: str
    d_loss: Callable[..., torch.Tensor]
    g_loss: Callable[[torch.Tensor], torch.Tensor]
    preset: OptimizerPreset
    targets: bool = False
    critic: bool = False


#: Every adversarial loss by name, in registration order.
ADVERSARIAL_LOSSES: dict[str, AdversarialLoss] = {}


def register_adversarial_loss(
    name: str,
    d_loss: Callable[..., torch.Tensor],
    g_loss: Callable[[torch.Tensor], torch.Tensor],
    preset: OptimizerPreset,
    *,
    targets: bool = False,
    critic: bool = False,
) -> AdversarialLoss:
    """Make ``loss=name`` available to the recipes; returns the entry. ValueError if the name is taken."""
    if name in ADVERSARIAL_LOSSES:
        raise ValueError(f"adversarial loss {name!r} is already registered")
    entry = AdversarialLoss(name, d_loss, g_loss, preset, targets=targets, critic=critic)
    ADVERSARIAL_LOSSES[name] = entry
    return entry


def get_adversarial_loss(name: str) -> AdversarialLoss:
    """The registered loss called ``name``; a one-line ConfigError listing the valid names otherwise."""
    try:
        return ADVERSARIAL_LOSSES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(ADVERSARIAL_LOSSES)}") from None


_DCGAN_ADAM = {"lr_g": 2e-4, "lr_d": 2e-4, "betas": (0.5, 0.999)}  # Radford et al. 2016

# Goodfellow et al. 2014 with the non-saturating generator loss; DCGAN settings, BatchNorm in D.
register_adversarial_loss("bce", d_loss_bce, g_loss_nonsaturating, OptimizerPreset(**_DCGAN_ADAM), targets=True)
# Mao et al. 2017; DCGAN settings.
register_adversarial_loss("lsgan", d_loss_least_squares, g_loss_least_squares, OptimizerPreset(**_DCGAN_ADAM),
                          targets=True)
# Gulrajani et al. 2017, Algorithm 1: n_critic 5, Adam 1e-4 (0, 0.9), a critic without BatchNorm.
register_adversarial_loss("wgan-gp", d_loss_wasserstein, g_loss_wasserstein,
                          OptimizerPreset(1e-4, 1e-4, (0.0, 0.9), n_critic=5, d_norm="layer"), critic=True)
# Miyato et al. 2018: spectral norm on every D layer; SAGAN's TTUR rates 1e-4 / 4e-4 and betas (0, 0.9).
register_adversarial_loss("hinge", d_loss_hinge, g_loss_hinge,
                          OptimizerPreset(1e-4, 4e-4, (0.0, 0.9), d_norm="none", spectral_norm=True))

"""Unconditional image GANs: DCGAN, WGAN-GP and hinge + spectral norm, with the usual stabilising switches.

Loss presets (``loss=``) follow their papers unless an option overrides them:

* ``bce``: Goodfellow et al. 2014 with the non-saturating generator loss; DCGAN settings (Radford et al.
  2016): Adam lr_g 2e-4, betas (0.5, 0.999), BatchNorm in the discriminator; but TTUR (lr_d = 4 x lr_g = 8e-4)
  instead of DCGAN's equal rates, and DiffAugment translation: the best of
  ``benchmarks/default_quality.py``'s search for two CPU minutes on 2 cores (docs/default-quality.md).
* ``lsgan``: least squares (Mao et al. 2017), DCGAN settings.
* ``wgan-gp``: Gulrajani et al. 2017, Algorithm 1: lambda = 10, n_critic = 5 (each critic iteration draws a fresh
  real batch), Adam lr 1e-4, betas (0, 0.9), one uniform epsilon per sample, a critic without BatchNorm
  (layer norm). A training step is one generator iteration, as in the paper.
* ``hinge``: hinge loss with spectral norm on every discriminator layer (Miyato et al. 2018), TTUR learning rates
  1e-4 / 4e-4 and betas (0, 0.9) as in SAGAN; pair it with ``arch="resnet"`` at 64-128 px.

The losses and their presets are the entries of :data:`synthmed.losses.ADVERSARIAL_LOSSES`, the network families
(``arch=``: dcgan, resnet) with the options their discriminators take those of :data:`synthmed.nn.FAMILIES`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from synthmed import losses as L
from synthmed.augment import diff_augment, parse_policy, random_mirror
from synthmed.data.dataset import DataInfo, ImageDataset
from synthmed.errors import ConfigError
from synthmed.nn import FAMILIES, NetworkFamily, build_discriminator, build_generator, get_family
from synthmed.nn.batchnorm import recalibrate_batchnorm
from synthmed.optim import adam, linear_decay, set_learning_rates
from synthmed.recipes.base import GenerativeRecipe, register_recipe
from synthmed.recipes.step import StepContext, frozen

#: The config field behind each discriminator option a network family may accept (see NetworkFamily.d_options).
_D_OPTION_FIELDS = {"norm": "d_norm", "minibatch_discrimination": "minibatch_discrimination",
                    "minibatch_std": "minibatch_std"}


@dataclass
class UnconditionalConfig:
    """Options of the unconditional recipe. ``None`` means "the preset of the chosen loss".

    Args:
        arch: Network family: dcgan (any size from 28 px) or resnet (with spectral norm; 32-128 px).
        loss: Adversarial loss: bce, lsgan, wgan-gp or hinge (each brings its paper's optimiser preset).
        latent_dim: Length of the generator's noise vector.
        g_channels: Width of the generator (channels of its last layer, doubled at each lower resolution).
        d_channels: Width of the discriminator (channels of its first layer).
        pad_to: Train at this size by padding the data with background (-1); samples are cropped back. By
            default 28 px data trains at 28 px (7-14-28 layout): 2.5 instead of 6.1 GFLOP per step.
        d_norm: Discriminator normalisation (dcgan): batch, layer, instance or none [preset of the loss].
        spectral_norm: Spectral norm on every discriminator layer [preset of the loss; always with resnet].
        lr_g: Generator learning rate [preset of the loss].
        lr_d: Discriminator learning rate [preset of the loss; 4 x lr_g with ttur, so for bce also when only lr_g
            is given].
        betas: Adam betas, e.g. 0.5,0.999 [preset of the loss].
        n_critic: Discriminator steps per generator step, each on a fresh real batch [preset: 5 for wgan-gp].
        gp_weight: Weight (lambda) of the WGAN-GP gradient penalty.
        r1_weight: Weight (gamma) of the R1 penalty on real images; the loss adds gamma / 2 times it.
        label_smoothing: One-sided label smoothing: the discriminator's target for real images is 1 - s.
        label_noise: Noisy labels: targets jittered uniformly by up to this much (real in [1-a, 1], fake in [0, a]).
        label_flip: Probability of swapping a sample's real/fake target in the discriminator step.
        instance_noise: Std of Gaussian noise added to every discriminator input (Sonderby et al. 2017), annealed
            linearly to 0 over instance_noise_steps (a fixed horizon, so extending a run on resume keeps it).
        instance_noise_steps: Steps over which the instance noise anneals to 0.
        ttur: Two time-scale update rule: discriminator learning rate 4 x the generator's (unless lr_d is given)
            [on for bce, off for the other losses, whose presets set both rates].
        feature_matching: Weight of Salimans et al.'s feature-matching term added to the generator loss.
        minibatch_discrimination: A minibatch-discrimination layer in the discriminator (dcgan only).
        minibatch_std: ProGAN's minibatch standard deviation (Karras et al. 2018) in the discriminator, over groups
            of this many samples (ProGAN: 4; dcgan only; 0: off): it lets the discriminator see how varied a batch
            is, so a generator that draws only a narrow part of the data is penalised (a lever on recall).
        diffaugment: DiffAugment policy, e.g. "translation,cutout" (+ ",color" for RGB); "" disables it
            [translation for bce (with TTUR the best of the two-minute search), off for the other losses].
        flip: Mirror each real training image left-right with probability 0.5 (data augmentation: the generator
            learns mirrored images as data). Only where a mirror image is as plausible as the image (breast
            ultrasound, dermoscopy, histology); never for chest X-rays or abdominal CT, whose mirror images show
            anatomy no patient has. [off: in two-minute runs on BreastMNIST it did not lower val FID beyond the
            seed spread, docs/default-quality.md]
        lr_decay_start: Fraction of the run after which both learning rates fall linearly towards 0 at step
            ``--steps`` (1: constant rates; the last step trains at 1 / ((1 - F) * steps) of them). Counted in steps
            of ``--steps``: a run stopped by ``--max-minutes`` first may never reach the decay, and resuming with a
            larger ``--steps`` stretches the schedule (the rates rise again).
        lecam: Weight (lambda) of the LeCam regulariser (Tseng et al. 2021), which keeps the discriminator's
            outputs on real and generated images near moving averages of each other: a regulariser for small
            training sets, beside DiffAugment (the paper uses 0.3 with BigGAN on 10% of CIFAR-10). 0: off.
            [bce: 0.1 when training at 64 px or more, else off: at 64 px it kept the discriminator from winning
            where the presets alone lost a run, at some cost in recall; at 28 px in two minutes every weight tried
            lowered recall (docs/default-quality.md, sessions 5-6). Other losses: off]
        lecam_decay: Decay of the moving averages the LeCam penalty anchors to (the paper's 0.99).
        pack: PacGAN's packing (Lin et al. 2018): the discriminator judges groups of this many samples, all real
            or all generated, joined along the channel axis, so a generator that repeats itself is easier to tell
            apart (a lever on recall); the discriminator's later layers see 1/pack as many inputs. Groups are
            consecutive samples of the (shuffled) batch, after DiffAugment; a remainder of fewer than ``pack``
            samples is left out of the discriminator's step. 1: off.
        mode_seeking: Weight of MSGAN's mode-seeking term (Mao et al. 2019; the paper's weight: 1) added to the
            generator loss: the inverse of how far apart two generated images are per unit of latent distance,
            over the two halves of the batch, so a generator that draws similar images from different latents is
            penalised (a lever on recall; no extra network pass). 0: off [off: at weight 1 it helped BreastMNIST
            (28 px) but made LGG FLAIR worse at 28 px (val FID 134 against 92) and at 64 px (saturated stripes),
            and PH2 at 28 px; its pull grows as the images' pixel spread shrinks, so one weight does not fit all
            data; docs/default-quality.md, sessions 10-11]
    """

    arch: str = "dcgan"
    loss: str = "bce"
    latent_dim: int = 100
    g_channels: int = 32
    d_channels: int = 32
    pad_to: int | None = None
    d_norm: str | None = None
    spectral_norm: bool | None = None
    lr_g: float | None = None
    lr_d: float | None = None
    betas: tuple[float, float] | None = None
    n_critic: int | None = None
    gp_weight: float = 10.0
    r1_weight: float = 0.0
    label_smoothing: float = 0.0
    label_noise: float = 0.0
    label_flip: float = 0.0
    instance_noise: float = 0.0
    instance_noise_steps: int = 1000
    ttur: bool | None = None
    feature_matching: float = 0.0
    minibatch_discrimination: bool = False
    minibatch_std: int = 0
    diffaugment: str | None = None
    flip: bool = False
    lr_decay_start: float = 1.0
    lecam: float | None = None
    lecam_decay: float = 0.99
    pack: int = 1
    mode_seeking: float = 0.0


#: Where this recipe departs from a loss's paper preset, and why: DCGAN's equal rates were tuned for long runs; in
#: two CPU minutes a discriminator at 4 x the generator's rate with DiffAugment translation scored best on val
#: (docs/default-quality.md). Measured for bce only, so the other losses keep their papers' settings.
SHORT_RUN_PRESETS: dict[str, dict[str, float | bool | str]] = {"bce": {"ttur": True, "diffaugment": "translation"}}

#: (smallest training size, LeCam weight) per loss: where the presets above let the discriminator win. At 64 px the
#: bce presets lost the generator on LGG FLAIR (one seed in three) and LeCam 0.1 prevented it, at some cost in recall
#: (docs/default-quality.md, sessions 5-6); at 28 px it only cost recall, so it starts at 64 px.
LECAM_FROM_SIZE: dict[str, tuple[int, float]] = {"bce": (64, 0.1)}


def _resolved(config: UnconditionalConfig, loss: L.AdversarialLoss, family: NetworkFamily,
              train_size: int) -> UnconditionalConfig:
    """The config with every ``None`` replaced by the recipe's or the loss's preset (some depend on the size the
    networks train at, ``train_size``), so ``config.yaml`` records what ran."""
    preset = loss.preset
    own = SHORT_RUN_PRESETS.get(loss.name, {})
    lr_g = preset.lr_g if config.lr_g is None else config.lr_g
    ttur = bool(config.ttur if config.ttur is not None else own.get("ttur", False))
    ttur_lr_d = 4 * float(lr_g) if ttur else preset.lr_d
    diffaugment = config.diffaugment if config.diffaugment is not None else str(own.get("diffaugment", ""))
    lr_d = config.lr_d if config.lr_d is not None else ttur_lr_d
    d_norm = config.d_norm if config.d_norm is not None else (preset.d_norm if family.accepts("norm") else "none")
    spectral = config.spectral_norm
    if spectral is None:
        spectral = preset.spectral_norm or family.spectral_norm
    n_critic = preset.n_critic if config.n_critic is None else config.n_critic
    betas = tuple(config.betas or preset.betas)
    lecam = config.lecam
    if lecam is None:
        from_size, weight = LECAM_FROM_SIZE.get(loss.name, (0, 0.0))
        lecam = weight if train_size >= from_size else 0.0
    return replace(config, lr_g=float(lr_g), lr_d=float(lr_d), betas=betas, n_critic=int(n_critic),  # type: ignore[arg-type]
                   d_norm=d_norm, spectral_norm=spectral, ttur=ttur and config.lr_d is None,  # what took effect
                   diffaugment=diffaugment, lecam=float(lecam))


def _enumerate(items: list[str], conjunction: str = "and") -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {conjunction} {items[-1]}"


def _families_taking(option: str) -> str:
    """``arch='dcgan'`` (or ``arch='a' or arch='b'``): the families whose discriminator takes ``option``."""
    return _enumerate([f"arch='{name}'" for name, family in FAMILIES.items() if family.accepts(option)], "or")


def _check_critic(config: UnconditionalConfig, loss: L.AdversarialLoss) -> None:
    """A critic's gradient penalty is per sample: refuse the layers that make one sample's logit depend on others."""
    if not loss.critic:
        return
    title = loss.name.upper()
    if config.d_norm == "batch":
        raise ConfigError(f"{title}'s critic must not use BatchNorm (the penalty is per sample); use d_norm='layer'")
    if config.minibatch_discrimination:
        raise ConfigError(f"minibatch discrimination couples samples, which breaks {title}'s per-sample penalty")
    if config.minibatch_std:
        raise ConfigError(f"minibatch_std couples samples, which breaks {title}'s per-sample penalty")


def _check_compatible(config: UnconditionalConfig, loss: L.AdversarialLoss, family: NetworkFamily) -> None:
    """Refuse option combinations that would silently do nothing or break an assumption."""
    if config.pack < 1:
        raise ConfigError(f"pack is the number of samples the discriminator judges together, at least 1 "
                          f"(got {config.pack})")
    if config.minibatch_std < 0 or config.minibatch_std == 1:  # a group of one has no spread to show
        raise ConfigError(f"minibatch_std is 0 (off) or a group of at least 2 samples (got {config.minibatch_std})")
    _check_critic(config, loss)
    if not loss.targets and (config.label_smoothing or config.label_noise or config.label_flip):
        with_targets = _enumerate([name for name, entry in L.ADVERSARIAL_LOSSES.items() if entry.targets])
        raise ConfigError(f"label smoothing/noise/flips apply to the {with_targets} losses, not {config.loss}")
    for option in ("minibatch_discrimination", "minibatch_std"):
        if getattr(config, option) and not family.accepts(option):
            raise ConfigError(f"{option} is available with {_families_taking(option)} only")
    if config.d_norm not in (None, "none") and not family.accepts("norm"):
        uses = "uses spectral norm" if family.spectral_norm else "takes no norm option"
        raise ConfigError(f"d_norm applies to {_families_taking('norm')}; the {config.arch} discriminator {uses}")
    if config.lecam < 0:
        raise ConfigError(f"lecam is a weight >= 0 (got {config.lecam})")
    if not config.mode_seeking >= 0:  # also refuses NaN
        raise ConfigError(f"mode_seeking is a weight >= 0 (got {config.mode_seeking})")
    if not 0.0 <= config.lecam_decay < 1.0:
        raise ConfigError(f"lecam_decay must be in [0, 1) (got {config.lecam_decay})")
    if not 0.0 <= config.lr_decay_start <= 1.0:
        raise ConfigError(f"lr_decay_start is a fraction of the run in [0, 1] (got {config.lr_decay_start})")
    for key in ("label_smoothing", "label_noise", "label_flip"):
        if not 0.0 <= getattr(config, key) < 1.0:
            raise ConfigError(f"{key} must be in [0, 1) (got {getattr(config, key)})")
    if config.n_critic is not None and config.n_critic < 1:
        raise ConfigError(f"n_critic must be at least 1 (got {config.n_critic})")


def pack_samples(x: torch.Tensor, pack: int) -> torch.Tensor:
    """PacGAN's packing: consecutive groups of ``pack`` samples joined along the channel axis, (N, C, *spatial) ->
    (N // pack, pack * C, *spatial), sample ``i * pack + j`` in channels ``j * C`` to ``(j + 1) * C - 1`` of group
    ``i``; a remainder of fewer than ``pack`` samples is left out. A channels-last batch stays channels-last."""
    if pack == 1:
        return x
    n = x.shape[0] // pack * pack
    if n == 0:
        raise ConfigError(f"pack={pack} needs batches of at least {pack} samples (got {x.shape[0]})")
    packed = x[:n].reshape(n // pack, pack * x.shape[1], *x.shape[2:])
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        packed = packed.contiguous(memory_format=torch.channels_last)
    return packed


class CollapseWatch:
    """Warns once when the discriminator has won outright: its adversarial loss (BCE or least squares, without
    regularisers) below ``below`` at ``checks`` consecutive checks, one every ``every`` steps (a check reads one
    number from the device, so it stays rare). The generator then gets almost no gradient, and a run can sit there
    for thousands of steps (LGG FLAIR at 64 px did, docs/default-quality.md); the user should hear it while the run
    is still cheap to stop.
    """

    def __init__(self, every: int = 50, checks: int = 5, below: float = 0.01, advice: str = "-o lecam=0.1") -> None:
        self.every, self.checks, self.below, self.advice = every, checks, below, advice
        self.streak = 0
        self.warned = False

    def observe(self, step: int, adversarial_loss: torch.Tensor) -> None:
        if self.warned or step % self.every:
            return
        self.streak = self.streak + 1 if adversarial_loss.item() < self.below else 0
        if self.streak >= self.checks:
            self.warned = True
            warnings.warn(f"step {step}: the discriminator has won (its loss below {self.below:g} at the last "
                          f"{self.checks} checks, {self.every} steps apart), so the generator learns almost nothing; "
                          f"consider stopping and retraining with {self.advice} (docs/default-quality.md)",
                          stacklevel=2)


@register_recipe
class UnconditionalGAN(GenerativeRecipe):
    """Noise -> image generator trained against a discriminator (or critic)."""

    name = "unconditional"
    Config = UnconditionalConfig
    ema_sources = ("G",)
    prefers_channels_last = True
    # Runs recorded before LeCam existed trained without it; today bce turns it on from 64 px.
    absent_from_older_runs = {"lecam": 0.0, "pack": 1, "mode_seeking": 0.0}

    def __init__(self, config: UnconditionalConfig, data_info: DataInfo) -> None:
        self.adversarial = L.get_adversarial_loss(config.loss)
        self.family = get_family(config.arch)
        self.data_size = data_info.image_size
        self.train_size = config.pad_to or self.data_size
        config = _resolved(config, self.adversarial, self.family, self.train_size)
        super().__init__(config, data_info)
        _check_compatible(config, self.adversarial, self.family)
        if self.train_size < self.data_size:
            raise ConfigError(f"pad_to={config.pad_to} is smaller than the images ({self.data_size} px)")
        self.latent_dim = config.latent_dim
        self.n_critic = int(config.n_critic)  # type: ignore[arg-type]
        self.lecam_anchors = L.LogitAnchors(config.lecam_decay)
        self.collapse_watch = CollapseWatch(
            advice=f"a larger -o lecam (now {config.lecam:g})" if config.lecam > 0 else "-o lecam=0.1")
        channels = data_info.channels
        d_kwargs: dict[str, object] = {
            "in_channels": channels * config.pack, "image_size": self.train_size, "base_channels": config.d_channels,
            "spectral_norm": bool(config.spectral_norm),
        }
        d_kwargs.update({option: getattr(config, field) for option, field in _D_OPTION_FIELDS.items()
                         if self.family.accepts(option)})
        try:
            self.augment_policy = parse_policy(config.diffaugment) if config.diffaugment else ()
            self.networks["G"] = build_generator(
                config.arch, latent_dim=config.latent_dim, out_channels=channels,
                image_size=self.train_size, base_channels=config.g_channels,
            )
            self.networks["D"] = build_discriminator(config.arch, **d_kwargs)
        except ValueError as exc:  # bad option values surface as one-line configuration errors
            hint = " (resize with --size, or pad with -o pad_to=N)" if "size" in str(exc) else ""
            raise ConfigError(f"{exc}{hint}") from exc

    # --- set-up ----------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg = self.config
        betas = tuple(cfg.betas)  # type: ignore[arg-type]
        return {
            "D": adam(self.networks["D"].parameters(), lr=float(cfg.lr_d), betas=betas, device=self.device),  # type: ignore[arg-type]
            "G": adam(self.networks["G"].parameters(), lr=float(cfg.lr_g), betas=betas, device=self.device),  # type: ignore[arg-type]
        }

    def prepare_data(self, data: ImageDataset) -> ImageDataset:
        if self.train_size == self.data_size:
            return data
        pad = self.train_size - self.data_size
        before, after = pad // 2, pad - pad // 2
        images = F.pad(data.images, (before, after, before, after), value=-1.0)
        masks = None if data.masks is None else F.pad(data.masks, (before, after, before, after), value=0.0)
        return replace(data, images=images, masks=masks)

    def check_batch_size(self, batch_size: int) -> None:
        # Packing groups `pack` samples into one discriminator input; mode seeking compares two halves of a batch.
        pack, mode_seeking = int(self.config.pack), float(self.config.mode_seeking)
        if batch_size < pack:
            raise ConfigError(f"pack={pack} needs batches of at least {pack} samples (got {batch_size}); "
                              f"raise --batch-size or lower -o pack")
        if mode_seeking > 0 and batch_size < 2:
            raise ConfigError(f"mode_seeking needs batches of at least 2 samples (got {batch_size}); "
                              f"raise --batch-size or set -o mode_seeking=0")

    def loss_names(self) -> list[str]:
        names = ["loss_d", "loss_g", "d_real", "d_fake"]
        if self.adversarial.critic:
            names.append("gp")
        if self.config.r1_weight > 0:
            names.append("r1")
        if self.config.feature_matching > 0:
            names.append("feature_matching")
        if self.config.lecam > 0:
            names.append("lecam")
        if self.config.mode_seeking > 0:
            names.append("mode_seeking")
        return names

    def extra_state(self) -> dict[str, torch.Tensor]:
        return self.lecam_anchors.state("lecam") if self.config.lecam > 0 else {}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.lecam_anchors.load_state(state, "lecam")

    # --- training --------------------------------------------------------------------------------------
    def _augment(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        cfg = self.config
        if cfg.instance_noise > 0:
            sigma = cfg.instance_noise * max(0.0, 1.0 - ctx.step / cfg.instance_noise_steps)
            if sigma > 0:
                x = x + sigma * torch.randn_like(x)
        if self.augment_policy:
            x = diff_augment(x, ",".join(self.augment_policy))
        return x

    def _d_input(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        """What the discriminator sees of a batch: each image augmented, then packed (``pack``)."""
        return pack_samples(self._augment(x, ctx), self.config.pack)

    def _mirror(self, images: torch.Tensor) -> torch.Tensor:
        """Each image mirrored left-right with probability 0.5, within its data window: an odd ``pad_to`` gap pads
        one more column after the image than before it, and mirroring the whole frame would shift the image."""
        before = (self.train_size - self.data_size) // 2
        window = images[..., before:before + self.data_size]
        out = images.clone()
        out[..., before:before + self.data_size] = random_mirror(window)
        return out

    def _d_targets(self, n: int, device: torch.device) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """Real/fake targets for the BCE/LS discriminator with label smoothing, noise and flips applied."""
        cfg = self.config
        real: torch.Tensor | float = 1.0 - cfg.label_smoothing
        fake: torch.Tensor | float = 0.0
        if cfg.label_noise > 0 or cfg.label_flip > 0:
            real = torch.full((n,), float(real), device=device)
            fake = torch.zeros(n, device=device)
            if cfg.label_noise > 0:
                real = real - cfg.label_noise * torch.rand(n, device=device)
                fake = fake + cfg.label_noise * torch.rand(n, device=device)
            if cfg.label_flip > 0:
                flip = torch.rand(n, device=device) < cfg.label_flip
                real, fake = torch.where(flip, fake, real), torch.where(flip, real, fake)
        return real, fake

    def _d_loss(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        if not self.adversarial.targets:
            return self.adversarial.d_loss(real_logits, fake_logits)
        real_t, fake_t = self._d_targets(real_logits.shape[0], real_logits.device)
        return self.adversarial.d_loss(real_logits, fake_logits, real_t, fake_t)

    def _lecam(self, real_logits: torch.Tensor, fake_logits: torch.Tensor, ctx: StepContext,
               out: dict[str, torch.Tensor]) -> torch.Tensor:
        """LeCam's penalty on this critic step's logits, its anchors updated first (as in the paper's code) with
        the step's means over all processes, so every process holds the anchors a checkpoint saves."""
        means = ctx.mean_over_processes(torch.stack([real_logits.detach().mean(), fake_logits.detach().mean()]))
        real_anchor, fake_anchor = self.lecam_anchors.update(means[0], means[1])
        penalty = L.lecam_penalty(real_logits, fake_logits, real_anchor, fake_anchor)
        out["lecam"] = penalty.detach()
        return penalty

    def _mode_seeking(self, fake: torch.Tensor, z: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted mode-seeking term of the generator loss, on the generator's own images (before DiffAugment,
        as MSGAN) and the latents that drew them."""
        if fake.shape[0] < 2:
            raise ConfigError(f"mode_seeking needs batches of at least 2 samples (got {fake.shape[0]})")
        term = L.mode_seeking_loss(fake.float(), z)
        out["mode_seeking"] = term.detach()
        return self.config.mode_seeking * term

    def _g_loss(self, fake_logits: torch.Tensor) -> torch.Tensor:
        return self.adversarial.g_loss(fake_logits)

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        cfg = self.config
        G, D = self.networks["G"], self.networks["D"]
        use_features = cfg.feature_matching > 0
        out: dict[str, torch.Tensor] = {}
        # With one critic step per generator step, the generator's forward pass serves both steps (as in the
        # DCGAN reference implementation): the discriminator sees it detached, the generator step backpropagates
        # through it. That saves a generator forward per step (1.2-1.3x measured on CPU). With several critic
        # steps (WGAN-GP), Algorithm 1 draws fresh latents for the generator step.
        reuse_fake = self.n_critic == 1
        if cfg.lr_decay_start < 1.0:
            factor = linear_decay(ctx.progress, cfg.lr_decay_start)
            for name, base in (("D", cfg.lr_d), ("G", cfg.lr_g)):
                set_learning_rates({name: ctx.optimizers[name]}, float(base), factor)  # type: ignore[arg-type]
        fake_for_g = None
        for i in range(self.n_critic):
            real = batch["image"] if i == 0 else ctx.draw_batch()["image"]
            if cfg.flip:
                real = self._mirror(real)
            if i == 0:
                first_real = real  # feature matching compares with the batch D saw first, mirrored as it was
            z = torch.randn(real.shape[0], self.latent_dim, device=real.device)
            with ctx.autocast():
                if reuse_fake:
                    fake_for_g = G(z)
                    fake = fake_for_g.detach()
                else:
                    with torch.no_grad():
                        fake = G(z)
                real_in, fake_in = self._d_input(real, ctx), self._d_input(fake, ctx)
                real_logits = D(real_in)
                fake_logits = D(fake_in)
                loss_d = self._d_loss(real_logits.float(), fake_logits.float())
            if self.adversarial.targets and i == 0:  # the losses whose scale "won" is defined on
                self.collapse_watch.observe(ctx.step, loss_d.detach())
            if cfg.lecam > 0:
                loss_d = loss_d + cfg.lecam * self._lecam(real_logits.float(), fake_logits.float(), ctx, out)
            if self.adversarial.critic:
                # The penalty runs in fp32: gradient norms are too coarse in bf16.
                gp = L.gradient_penalty(D, real_in.float(), fake_in.float())
                loss_d = loss_d + cfg.gp_weight * gp
                out["gp"] = gp.detach()
            if cfg.r1_weight > 0:
                real_r1 = real_in.detach().float().requires_grad_(True)
                r1 = L.r1_penalty(D(real_r1), real_r1)
                loss_d = loss_d + 0.5 * cfg.r1_weight * r1
                out["r1"] = r1.detach()
            ctx.optimize("D", loss_d)

        # Generator step. D's weights need no gradients here, which saves a third of its backward pass.
        with frozen(D):
            with ctx.autocast():
                if fake_for_g is not None:
                    fake = fake_for_g
                else:
                    z = torch.randn(batch["image"].shape[0], self.latent_dim, device=batch["image"].device)
                    fake = G(z)
                fake_in = self._d_input(fake, ctx)
                if use_features:
                    fake_logits_g, fake_features = D(fake_in, return_features=True)
                    # Salimans et al. match statistics of one discriminator: the real side is recomputed
                    # with the just-updated D rather than reused from before its step.
                    with torch.no_grad():
                        _, real_features = D(self._d_input(first_real, ctx), return_features=True)
                else:
                    fake_logits_g = D(fake_in)
                loss_g = self._g_loss(fake_logits_g.float())
                if use_features:
                    fm = L.feature_matching_loss(real_features.float(), fake_features.float())
                    loss_g = loss_g + cfg.feature_matching * fm
                    out["feature_matching"] = fm.detach()
                if cfg.mode_seeking > 0:
                    loss_g = loss_g + self._mode_seeking(fake, z, out)
            ctx.optimize("G", loss_g)

        out.update(
            loss_d=loss_d.detach(),
            loss_g=loss_g.detach(),
            d_real=real_logits.detach().float().mean(),
            d_fake=fake_logits.detach().float().mean(),
        )
        return out

    # --- outputs ---------------------------------------------------------------------------------------
    def _sampling_generator(self) -> torch.nn.Module:
        return self.networks["G_ema"] if "G_ema" in self.networks else self.networks["G"]

    def _crop(self, images: torch.Tensor) -> torch.Tensor:
        if self.train_size == self.data_size:
            return images
        start = (self.train_size - self.data_size) // 2
        return images[..., start:start + self.data_size, start:start + self.data_size]

    def refresh_sampling_statistics(self, seed: int = 12345) -> None:
        """Recompute the EMA generator's BatchNorm statistics for its own weights ("standing statistics").

        The EMA copy averages weights, but BatchNorm running statistics belong to the raw generator's weights;
        re-estimating them from a few batches of the EMA generator (as BigGAN does) keeps samples sharp.
        """
        if "G_ema" not in self.networks:
            return
        gen = torch.Generator(device="cpu").manual_seed(seed)
        recalibrate_batchnorm(
            self.networks["G_ema"],
            lambda: torch.randn(64, self.latent_dim, generator=gen).to(self.device),
        )

    @torch.no_grad()
    def generate(self, z: torch.Tensor, **conditions: torch.Tensor) -> torch.Tensor:
        G = self._sampling_generator()
        was_training = G.training
        G.eval()
        images = G(z.to(self.device))
        G.train(was_training)
        return self._crop(images).float().clamp(-1, 1)

    def preview_inputs(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return {"z": torch.randn(n, self.latent_dim, generator=gen)}

    @torch.no_grad()
    def preview(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self.refresh_sampling_statistics()
        return self.generate(inputs["z"].to(self.device))

"""Class-conditional image GANs: images of a requested class, e.g. to top up rare classes of a training set.

* ``conditional``: a DCGAN (or ResNet, ``arch=``) generator with the class entering by conditional batch norm
  (``conditioning="cbn"``, the default: a per-class gain and bias in every BatchNorm layer) or by a label embedding
  concatenated to z (``"concat"``), against a projection discriminator (Miyato & Koyama 2018:
  ``logit = linear(phi(x)) + <embed(y), phi(x)>``, ``phi`` the features its linear output layer reads: sum-pooled
  for resnet, the last map flattened for dcgan, see :class:`~synthmed.nn.conditional.ProjectionDiscriminator`).
  Losses bce, lsgan or hinge with their presets from :data:`synthmed.losses.ADVERSARIAL_LOSSES`; the default is
  the paper's hinge loss with spectral norm on the discriminator.
* ``acgan``: Odena et al. 2017. The generator takes a label embedding concatenated to z; the discriminator gives
  a real/fake logit and class logits; D minimises BCE + class_weight * (CE on real + CE on fake), G minimises its
  non-saturating loss + class_weight * CE on fake. DCGAN settings (Adam 2e-4, betas (0.5, 0.999)).
* ``cwgan-gp``: conditional WGAN-GP. z is multiplied elementwise by a label embedding; the critic (layer norm, no
  BatchNorm) adds a projection term; Gulrajani et al.'s Algorithm 1 otherwise (lambda 10, n_critic 5 with a fresh
  labelled real batch per critic iteration, Adam 1e-4 (0, 0.9)), as the unconditional recipe's wgan-gp preset.

Fakes take the labels of the real batch they are judged with. The discriminator then sees the same classes, in
the same proportions, real and fake, so it cannot learn "rare class means fake" from a class prior; and WGAN-GP's
interpolates between a real and a fake image have one class. The networks are the families of
:mod:`synthmed.nn` wrapped by :mod:`synthmed.nn.conditional`.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from synthmed import losses as L
from synthmed.augment import diff_augment, parse_policy
from synthmed.data.dataset import DataInfo
from synthmed.errors import ConfigError
from synthmed.nn import NetworkFamily, get_family
from synthmed.nn.batchnorm import recalibrate_batchnorm
from synthmed.nn.conditional import (
    build_auxiliary_discriminator,
    build_conditional_generator,
    build_projection_discriminator,
)
from synthmed.optim import adam
from synthmed.recipes.base import ConditionalGenerativeRecipe, Preview, register_recipe
from synthmed.recipes.step import StepContext, frozen

#: Help of the options every conditional recipe has (appended to each config's ``Args:`` by :func:`_shared_help`).
_SHARED_ARGS = """
        arch: Network family: dcgan (any size from 28 px; 28 px trains in the 7-14-28 layout) or resnet (spectral
            norm on the discriminator; 32-128 px).
        latent_dim: Length of the generator's noise vector.
        g_channels: Width of the generator (channels of its last layer, doubled at each lower resolution).
        d_channels: Width of the discriminator (channels of its first layer).
        d_norm: Discriminator normalisation (dcgan): batch, layer, instance or none [preset of the loss].
        spectral_norm: Spectral norm on every discriminator layer [preset of the loss; always with resnet].
        lr_g: Generator learning rate [preset of the loss].
        lr_d: Discriminator learning rate [preset of the loss].
        betas: Adam betas, e.g. 0.5,0.999 [preset of the loss].
        diffaugment: DiffAugment policy, e.g. "translation,cutout" (+ ",color" for RGB); "" disables it.
"""


@dataclass
class _SharedConfig:
    """Options every conditional recipe has; their help is ``_SHARED_ARGS``."""

    arch: str = "dcgan"
    latent_dim: int = 100
    g_channels: int = 32
    d_channels: int = 32
    d_norm: str | None = None
    spectral_norm: bool | None = None
    lr_g: float | None = None
    lr_d: float | None = None
    betas: tuple[float, float] | None = None
    diffaugment: str = ""


def _shared_help(cls: type) -> type:
    """Append the shared options' help to ``cls``'s ``Args:`` section, so each is documented once."""
    cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n" + _SHARED_ARGS
    return cls


@_shared_help
@dataclass
class ConditionalConfig(_SharedConfig):
    """Options of the conditional recipe (projection discriminator). ``None`` means "the preset of the loss".

    Args:
        conditioning: How the class enters the generator: cbn (per-class gain and bias of every BatchNorm layer)
            or concat (a label embedding concatenated to z).
        loss: Adversarial loss: hinge (with spectral norm, the paper's setting), bce or lsgan; each brings its
            optimiser preset. For a Wasserstein critic use the cwgan-gp recipe.
        embed_dim: Length of the label embedding concatenated to z (conditioning=concat).
    """

    conditioning: str = "cbn"
    loss: str = "hinge"
    embed_dim: int = 32


@_shared_help
@dataclass
class ACGANConfig(_SharedConfig):
    """Options of the acgan recipe (auxiliary classifier GAN). ``None`` means "the DCGAN preset".

    Args:
        class_weight: Weight of the auxiliary classifier's cross-entropy terms in both losses.
        embed_dim: Length of the label embedding concatenated to z.
    """

    class_weight: float = 1.0
    embed_dim: int = 32


@_shared_help
@dataclass
class CWGANGPConfig(_SharedConfig):
    """Options of the cwgan-gp recipe (conditional WGAN-GP). ``None`` means "the WGAN-GP preset".

    Args:
        n_critic: Critic steps per generator step, each on a fresh labelled real batch [preset: 5].
        gp_weight: Weight (lambda) of the gradient penalty.
    """

    n_critic: int | None = None
    gp_weight: float = 10.0


def _resolved(config: Any, preset: L.OptimizerPreset, family: NetworkFamily) -> Any:
    """The config with every ``None`` replaced by the preset, so ``config.yaml`` records what ran."""
    d_norm = config.d_norm if config.d_norm is not None else (preset.d_norm if family.accepts("norm") else "none")
    spectral = config.spectral_norm
    if spectral is None:
        spectral = preset.spectral_norm or family.spectral_norm
    return replace(config, lr_g=float(preset.lr_g if config.lr_g is None else config.lr_g),
                   lr_d=float(preset.lr_d if config.lr_d is None else config.lr_d),
                   betas=tuple(config.betas or preset.betas), d_norm=d_norm, spectral_norm=bool(spectral))


class _ClassesInTurn(nn.Module):
    """A conditional generator as the ``z -> image`` module :func:`recalibrate_batchnorm` runs: each call
    generates the classes in turn (0, 1, .., K-1, 0, ..), so every class's BatchNorm input is in the statistics."""

    def __init__(self, generator: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.generator, self.num_classes, self.offset = generator, num_classes, 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        labels = (torch.arange(z.shape[0], device=z.device) + self.offset) % self.num_classes
        self.offset += z.shape[0]
        return self.generator(z, labels)


class _ConditionalGAN(ConditionalGenerativeRecipe):
    """What the three recipes share: options and presets, optimisers, DiffAugment, EMA sampling and previews."""

    ema_sources = ("G",)
    # Plain convolutions plus embedding look-ups: NHWC runs the fast CPU kernels, as for the unconditional recipe.
    prefers_channels_last = True
    #: The entry of ADVERSARIAL_LOSSES whose optimiser preset the recipe uses (``conditional``: the chosen loss).
    preset_loss: ClassVar[str] = "bce"

    def __init__(self, config: Any, data_info: DataInfo) -> None:
        self.set_classes(data_info)
        self.family = get_family(config.arch)
        self.adversarial = L.get_adversarial_loss(getattr(config, "loss", self.preset_loss))
        config = self.resolve(config)
        super().__init__(config, data_info)
        self.check_options(config)
        self.latent_dim = config.latent_dim
        try:
            self.augment_policy = parse_policy(config.diffaugment) if config.diffaugment else ()
            self.networks["G"] = self.build_generator(data_info.channels, data_info.image_size)
            self.networks["D"] = self.build_discriminator(self._d_kwargs(data_info.channels, data_info.image_size))
        except ValueError as exc:  # bad option values surface as one-line configuration errors
            hint = " (resize with --size)" if "size" in str(exc) else ""
            raise ConfigError(f"{exc}{hint}") from exc

    # --- construction, per recipe ----------------------------------------------------------------------
    def resolve(self, config: Any) -> Any:
        """The config with every ``None`` replaced by the preset (called before the networks are built)."""
        return _resolved(config, self.adversarial.preset, self.family)

    def check_options(self, config: Any) -> None:
        """Refuse option combinations that would silently do nothing or break an assumption."""
        if config.d_norm not in (None, "none") and not self.family.accepts("norm"):
            raise ConfigError(f"d_norm does not apply to the {config.arch} discriminator (it takes no norm option)")
        if self.adversarial.critic and config.d_norm == "batch":
            raise ConfigError(f"the {self.name} critic must not use BatchNorm (the gradient penalty is per sample); "
                              "use d_norm='layer'")

    @abc.abstractmethod
    def build_generator(self, channels: int, size: int) -> nn.Module:
        """This recipe's class-conditional generator for ``channels``-channel images of ``size`` px."""

    @abc.abstractmethod
    def build_discriminator(self, d_kwargs: dict[str, Any]) -> nn.Module:
        """This recipe's discriminator (or critic) from the family's keyword arguments."""

    def _d_kwargs(self, channels: int, size: int) -> dict[str, Any]:
        cfg = self.config
        kwargs: dict[str, Any] = {"in_channels": channels, "image_size": size, "base_channels": cfg.d_channels,
                                  "spectral_norm": bool(cfg.spectral_norm)}
        if self.family.accepts("norm"):
            kwargs["norm"] = cfg.d_norm
        return kwargs

    def _generator_kwargs(self, channels: int, size: int) -> dict[str, Any]:
        return {"out_channels": channels, "image_size": size, "base_channels": self.config.g_channels}

    # --- set-up ----------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg = self.config
        betas = tuple(cfg.betas)
        return {
            "D": adam(self.networks["D"].parameters(), lr=float(cfg.lr_d), betas=betas, device=self.device),
            "G": adam(self.networks["G"].parameters(), lr=float(cfg.lr_g), betas=betas, device=self.device),
        }

    # --- training helpers ------------------------------------------------------------------------------
    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, ",".join(self.augment_policy)) if self.augment_policy else x

    def _latents(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.randn(labels.shape[0], self.latent_dim, device=labels.device)

    # --- outputs ---------------------------------------------------------------------------------------
    def _sampling_generator(self) -> nn.Module:
        return self.networks["G_ema"] if "G_ema" in self.networks else self.networks["G"]

    def refresh_sampling_statistics(self, seed: int = 12345) -> None:
        """Recompute the EMA generator's BatchNorm statistics for its own weights, the classes drawn in turn.

        The EMA copy averages weights (the per-class gains of conditional batch norm are weights too), but the
        running statistics belong to the raw generator; re-estimating them from the EMA generator's own outputs
        (as BigGAN does) keeps samples sharp.
        """
        if "G_ema" not in self.networks:
            return
        gen = torch.Generator(device="cpu").manual_seed(seed)
        recalibrate_batchnorm(
            _ClassesInTurn(self.networks["G_ema"], self.num_classes),
            lambda: torch.randn(64, self.latent_dim, generator=gen).to(self.device),
        )

    @torch.no_grad()
    def generate(self, z: torch.Tensor, label: torch.Tensor | int | None = None,
                 **conditions: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] of class ``label`` (an int, or (N,) classes; default: the classes in turn)."""
        if conditions:
            raise ConfigError(f"recipe {self.name!r} takes only a label, not {', '.join(sorted(conditions))}")
        labels = self.sample_labels(z.shape[0], label).to(self.device)
        G = self._sampling_generator()
        was_training = G.training
        G.eval()
        try:
            images = G(z.to(self.device), labels)
        finally:
            G.train(was_training)
        return images.float().clamp(-1, 1)

    def preview_inputs(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        return self.class_grid_inputs(n, seed)

    @torch.no_grad()
    def preview(self, inputs: dict[str, torch.Tensor]) -> Preview:
        return self.class_grid(inputs)


def _adversarial_outputs(loss_d: torch.Tensor, loss_g: torch.Tensor, real_logits: torch.Tensor,
                         fake_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
            "d_real": real_logits.detach().float().mean(), "d_fake": fake_logits.detach().float().mean()}


@register_recipe
class ConditionalGAN(_ConditionalGAN):
    """Class-conditional generator (cBN or concatenated embedding) against a projection discriminator."""

    name = "conditional"
    Config = ConditionalConfig

    def check_options(self, config: ConditionalConfig) -> None:
        if self.adversarial.critic:
            raise ConfigError(f"loss {config.loss!r} needs a critic with a gradient penalty: use --recipe cwgan-gp")
        if config.conditioning not in ("cbn", "concat"):
            raise ConfigError(f"conditioning must be cbn or concat (got {config.conditioning!r})")
        super().check_options(config)

    def build_generator(self, channels: int, size: int) -> nn.Module:
        cfg = self.config
        embed_dim = cfg.embed_dim if cfg.conditioning == "concat" else 0
        return build_conditional_generator(cfg.arch, cfg.conditioning, self.num_classes, cfg.latent_dim,
                                           embed_dim, **self._generator_kwargs(channels, size))

    def build_discriminator(self, d_kwargs: dict[str, Any]) -> nn.Module:
        return build_projection_discriminator(self.config.arch, self.num_classes, **d_kwargs)

    def loss_names(self) -> list[str]:
        return ["loss_d", "loss_g", "d_real", "d_fake"]

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        G, D = self.networks["G"], self.networks["D"]
        real, labels = batch["image"], batch["label"]
        with ctx.autocast():
            # One generator forward serves both steps (detached for D), as in the unconditional recipe.
            fake = G(self._latents(labels), labels)
            real_logits = D(self._augment(real), labels)
            fake_logits = D(self._augment(fake.detach()), labels)
            loss_d = self.adversarial.d_loss(real_logits.float(), fake_logits.float())
        ctx.optimize("D", loss_d)
        # D's weights need no gradients in the generator step, which saves a third of its backward pass.
        with frozen(D):
            with ctx.autocast():
                loss_g = self.adversarial.g_loss(D(self._augment(fake), labels).float())
            ctx.optimize("G", loss_g)
        return _adversarial_outputs(loss_d, loss_g, real_logits, fake_logits)


@register_recipe
class ACGAN(_ConditionalGAN):
    """Auxiliary classifier GAN (Odena et al. 2017)."""

    name = "acgan"
    Config = ACGANConfig
    preset_loss = "bce"

    def check_options(self, config: ACGANConfig) -> None:
        if config.class_weight < 0:
            raise ConfigError(f"class_weight must be >= 0 (got {config.class_weight})")
        super().check_options(config)

    def build_generator(self, channels: int, size: int) -> nn.Module:
        cfg = self.config
        return build_conditional_generator(cfg.arch, "concat", self.num_classes, cfg.latent_dim, cfg.embed_dim,
                                           **self._generator_kwargs(channels, size))

    def build_discriminator(self, d_kwargs: dict[str, Any]) -> nn.Module:
        return build_auxiliary_discriminator(self.config.arch, self.num_classes, **d_kwargs)

    def loss_names(self) -> list[str]:
        return ["loss_d", "loss_g", "d_real", "d_fake", "ce_real", "ce_fake", "ce_g"]

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        G, D = self.networks["G"], self.networks["D"]
        weight = self.config.class_weight
        real, labels = batch["image"], batch["label"]
        with ctx.autocast():
            fake = G(self._latents(labels), labels)  # serves both steps, as in the conditional recipe
            real_logits, real_classes = D(self._augment(real))
            fake_logits, fake_classes = D(self._augment(fake.detach()))
            ce_real = F.cross_entropy(real_classes.float(), labels)
            ce_fake = F.cross_entropy(fake_classes.float(), labels)
            loss_d = L.d_loss_bce(real_logits.float(), fake_logits.float()) + weight * (ce_real + ce_fake)
        ctx.optimize("D", loss_d)
        with frozen(D):
            with ctx.autocast():
                logits_g, classes_g = D(self._augment(fake))
                ce_g = F.cross_entropy(classes_g.float(), labels)
                loss_g = L.g_loss_nonsaturating(logits_g.float()) + weight * ce_g
            ctx.optimize("G", loss_g)
        out = _adversarial_outputs(loss_d, loss_g, real_logits, fake_logits)
        out.update(ce_real=ce_real.detach(), ce_fake=ce_fake.detach(), ce_g=ce_g.detach())
        return out


@register_recipe
class ConditionalWGANGP(_ConditionalGAN):
    """Conditional WGAN-GP: z times a label embedding; a layer-norm critic with a projection term."""

    name = "cwgan-gp"
    Config = CWGANGPConfig
    preset_loss = "wgan-gp"

    def resolve(self, config: CWGANGPConfig) -> CWGANGPConfig:
        config = super().resolve(config)
        return config if config.n_critic is not None else replace(config, n_critic=self.adversarial.preset.n_critic)

    def check_options(self, config: CWGANGPConfig) -> None:
        if config.n_critic < 1:
            raise ConfigError(f"n_critic must be at least 1 (got {config.n_critic})")
        if config.gp_weight < 0:
            raise ConfigError(f"gp_weight must be >= 0 (got {config.gp_weight})")
        super().check_options(config)

    def build_generator(self, channels: int, size: int) -> nn.Module:
        cfg = self.config
        return build_conditional_generator(cfg.arch, "multiply", self.num_classes, cfg.latent_dim,
                                           **self._generator_kwargs(channels, size))

    def build_discriminator(self, d_kwargs: dict[str, Any]) -> nn.Module:
        return build_projection_discriminator(self.config.arch, self.num_classes, **d_kwargs)

    def loss_names(self) -> list[str]:
        return ["loss_d", "loss_g", "d_real", "d_fake", "gp"]

    def _critic_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        G, D = self.networks["G"], self.networks["D"]
        real, labels = batch["image"], batch["label"]
        with ctx.autocast():
            with torch.no_grad():
                fake = G(self._latents(labels), labels)
            real_in, fake_in = self._augment(real), self._augment(fake)
            real_scores = D(real_in, labels)
            fake_scores = D(fake_in, labels)
            loss_d = L.d_loss_wasserstein(real_scores.float(), fake_scores.float())
        # The penalty runs in fp32 (gradient norms are too coarse in bf16); the critic sees the batch's classes.
        gp = L.gradient_penalty(lambda x: D(x, labels), real_in.float(), fake_in.float())
        loss_d = loss_d + self.config.gp_weight * gp
        ctx.optimize("D", loss_d)
        return {"loss_d": loss_d, "gp": gp, "real": real_scores, "fake": fake_scores}

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        # Gulrajani et al., Algorithm 1: every critic iteration on a fresh real batch (with its labels).
        for i in range(int(self.config.n_critic)):
            critic = self._critic_step(batch if i == 0 else ctx.draw_batch(), ctx)
        G, D = self.networks["G"], self.networks["D"]
        labels = batch["label"]
        with frozen(D):
            with ctx.autocast():
                loss_g = L.g_loss_wasserstein(D(self._augment(G(self._latents(labels), labels)), labels).float())
            ctx.optimize("G", loss_g)
        out = _adversarial_outputs(critic["loss_d"], loss_g, critic["real"], critic["fake"])
        out["gp"] = critic["gp"].detach()
        return out

"""Image-to-image translation: ``pix2pix`` (paired, Isola et al. 2017) and ``cyclegan`` (unpaired, Zhu et al. 2017).

**pix2pix** learns G: A -> B from pairs. A conditional discriminator judges (input, output) pairs, so it can only
be fooled by outputs that fit their input; L1 to the target (weight 100) carries the low frequencies, the
PatchGAN the texture. Defaults follow the paper: U-Net generator with dropout as its noise, 70x70 PatchGAN,
batch norm, Adam 2e-4 (0.5, 0.999), the discriminator's loss halved, random jitter (upscale then crop back) and
mirroring, the learning rate constant for half the run then decayed linearly to zero.

**CycleGAN** learns G_AB and G_BA without pairs: least-squares adversarial losses in both domains, cycle losses
``|G_BA(G_AB(a)) - a|`` and ``|G_AB(G_BA(b)) - b|`` (weight 10 each), an identity loss (0.5 x the cycle weight,
``|G_AB(b) - b|``, only when both domains have the same channel count), and each discriminator trained on a
pool of 50 past fakes (Shrivastava et al. 2017). ResNet generators (9 blocks from 256 px, 6 below), instance norm.
The pools live in every checkpoint (``extra_state``), so a resumed run continues exactly.

Medical specifics: any channel counts in and out (one channel stays one channel); a mask target (vessel tree,
lesion) is trained as an image in {-1, 1} and translated to a probability in [0, 1]; ``crop`` trains on random
crops of larger images, and ``synthmed translate`` then tiles the full image (the networks are fully
convolutional). Intensities are the data layer's business: ``DataInfo.intensity`` records how each side's stored
values were mapped, so outputs are written back in the input's units.

Deviations from the reference code (junyanz/pytorch-CycleGAN-and-pix2pix), each for a reason:

* The learning-rate schedule is in steps of the run (``lr_decay_start``, a fraction), not epochs, because a
  run's budget is steps or minutes; with only ``--max-minutes`` the rate stays constant.
* Translation for ``synthmed translate`` and the previews runs the networks in eval mode (batch-norm running
  statistics, no dropout), so tiles of one image are normalised alike and outputs are deterministic; the
  reference tests in train mode by default.
* Jitter and mirroring are done on the batch, per sample, by the recipe (the data layer keeps its tensors).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from synthmed import losses as L
from synthmed.data.dataset import DataInfo
from synthmed.data.sets import DataSpec, TrainingSet
from synthmed.errors import ConfigError
from synthmed.nn.translation import (
    DISCRIMINATOR_NAMES,
    GENERATOR_NAMES,
    build_patch_discriminator,
    build_translation_generator,
)
from synthmed.optim import adam, linear_decay, set_learning_rates
from synthmed.recipes.base import Preview, TranslationRecipe, register_recipe
from synthmed.recipes.step import StepContext, evaluating, frozen

Logits = torch.Tensor | list[torch.Tensor]


# ----------------------------------------------------------------------------------------- adversarial losses


def _lsgan_g(fake: torch.Tensor) -> torch.Tensor:
    # mean (D(fake) - 1)^2, the reference's MSE: twice L.g_loss_least_squares, so the cycle weight keeps its scale.
    return 2.0 * L.g_loss_least_squares(fake)


#: ``loss=`` name -> (discriminator loss, generator loss), scaled as the reference code scales them: the
#: discriminator's two terms halved (it then learns at half the generator's rate, as in the paper).
TRANSLATION_LOSSES: dict[str, tuple[Callable[..., torch.Tensor], Callable[[torch.Tensor], torch.Tensor]]] = {
    "vanilla": (lambda real, fake: 0.5 * L.d_loss_bce(real, fake), L.g_loss_nonsaturating),
    "lsgan": (L.d_loss_least_squares, _lsgan_g),
    "hinge": (lambda real, fake: 0.5 * L.d_loss_hinge(real, fake), L.g_loss_hinge),
}


def _check_loss(name: str) -> str:
    if name not in TRANSLATION_LOSSES:
        raise ConfigError(f"loss={name!r}: choose one of {', '.join(TRANSLATION_LOSSES)}")
    return name


def _scales(logits: Logits) -> list[torch.Tensor]:
    return logits if isinstance(logits, (list, tuple)) else [logits]


def discriminator_loss(name: str, real: Logits, fake: Logits) -> torch.Tensor:
    """The discriminator loss ``name`` summed over the scales of a multi-scale discriminator (pix2pixHD)."""
    d_loss = TRANSLATION_LOSSES[name][0]
    return sum((d_loss(r, f) for r, f in zip(_scales(real), _scales(fake), strict=True)),
               torch.zeros((), device=_scales(real)[0].device))


def generator_loss(name: str, fake: Logits) -> torch.Tensor:
    """The generator's adversarial loss ``name`` summed over the discriminator's scales."""
    g_loss = TRANSLATION_LOSSES[name][1]
    return sum((g_loss(f) for f in _scales(fake)), torch.zeros((), device=_scales(fake)[0].device))


RECONSTRUCTIONS = ("l1", "bce_dice")


def mask_bce_dice(probability: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Binary cross-entropy + soft Dice loss (1 - 2 sum(p m) / (sum p + sum m)) of a probability map against a
    {0, 1} mask, the usual pair for thin structures such as vessels (the Dice term ignores the background's size).

    Args:
        probability: (N, 1, H, W) in [0, 1].
        mask: (N, 1, H, W) in {0, 1}.
        eps: keeps the logarithms and the ratio finite.
    """
    p = probability.clamp(eps, 1.0 - eps)
    bce = F.binary_cross_entropy(p, mask)
    dice = 1.0 - (2.0 * (p * mask).sum() + eps) / (p.sum() + mask.sum() + eps)
    return bce + dice


# -------------------------------------------------------------------------------------- schedule, jitter


def random_jitter(tensors: dict[str, torch.Tensor], *, crop: int, jitter: float, flip: bool,
                  nearest: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """The same random geometry for every named tensor of a sample: upscale by ``jitter`` (>= 1), crop a
    ``crop`` px square (0: back to the input's size) at a random place, mirror left-right half the time.

    Tensors named in ``nearest`` (masks) are resized by nearest neighbour so they stay {0, 1}. The randomness
    is the global RNG's (restored on resume), drawn on the CPU so no device sync is needed.

    Args:
        tensors: (N, C, H, W) tensors of one batch, all of the same H and W.
        crop: side of the square crop; 0 keeps the input's side.
        jitter: upscale factor before cropping (286 / 256 in pix2pix); 1 disables it.
        flip: mirror each sample left-right with probability 0.5.
        nearest: names resized by nearest neighbour.
    """
    first = next(iter(tensors.values()))
    n, height, width = first.shape[0], first.shape[-2], first.shape[-1]
    out_h, out_w = (crop, crop) if crop else (height, width)
    big_h, big_w = max(out_h, round(height * jitter)), max(out_w, round(width * jitter))
    resized = {}
    for name, t in tensors.items():
        if (big_h, big_w) != (height, width):
            mode = "nearest" if name in nearest else "bilinear"
            t = F.interpolate(t, size=(big_h, big_w), mode=mode, **({} if mode == "nearest" else
                                                                    {"align_corners": False}))
        resized[name] = t
    tops = torch.randint(0, big_h - out_h + 1, (n,)).tolist()
    lefts = torch.randint(0, big_w - out_w + 1, (n,)).tolist()
    mirror = (torch.rand(n) < 0.5).tolist() if flip else [False] * n
    out = {}
    for name, t in resized.items():
        parts = []
        for i in range(n):
            part = t[i:i + 1, :, tops[i]:tops[i] + out_h, lefts[i]:lefts[i] + out_w]
            parts.append(part.flip(-1) if mirror[i] else part)
        layout = torch.channels_last if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and \
            not t.is_contiguous() else torch.contiguous_format
        out[name] = torch.cat(parts).contiguous(memory_format=layout)  # keep the trainer's NHWC batches NHWC
    return out


# ------------------------------------------------------------------------------------------------ image pool


class ImagePool:
    """A buffer of past generated images (Shrivastava et al. 2017), as CycleGAN uses it.

    Until the pool is full every new image is stored and returned; after that each new image is, with
    probability 0.5, swapped with a random stored one (the stored one is returned) or returned as it is. A pool
    of size 0 returns its input. Randomness: the global RNG (so a resumed run draws the same numbers).

    Args:
        size: images kept (50 in CycleGAN).
    """

    def __init__(self, size: int) -> None:
        if size < 0:
            raise ConfigError(f"pool_size must be at least 0 (got {size})")
        self.size = int(size)
        self.images: torch.Tensor | None = None
        self.count = 0

    def query(self, fakes: torch.Tensor) -> torch.Tensor:
        """Images for the discriminator in place of ``fakes`` (N, C, H, W); the pool is updated."""
        fakes = fakes.detach()
        if self.size == 0:
            return fakes
        if self.images is None:
            self.images = torch.zeros(self.size, *fakes.shape[1:], dtype=fakes.dtype, device=fakes.device)
        if self.images.shape[1:] != fakes.shape[1:]:
            raise ValueError(f"image pool holds {tuple(self.images.shape[1:])} images, got {tuple(fakes.shape[1:])}")
        out = []
        for image in fakes:
            if self.count < self.size:
                self.images[self.count] = image
                self.count += 1
                out.append(image)
            elif float(torch.rand(())) > 0.5:
                index = int(torch.randint(0, self.size, ()))
                out.append(self.images[index].clone())
                self.images[index] = image
            else:
                out.append(image)
        return torch.stack(out)

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors for a checkpoint: the stored images (only the filled part) and the count."""
        held = torch.empty(0) if self.images is None else self.images[:self.count].detach().cpu().contiguous()
        return {f"{prefix}_images": held, f"{prefix}_count": torch.tensor([self.count], dtype=torch.int64)}

    def load_state(self, state: dict[str, torch.Tensor], prefix: str, device: torch.device) -> None:
        """Restore what :meth:`state` returned (missing keys: an empty pool)."""
        held = state.get(f"{prefix}_images")
        self.count = int(state[f"{prefix}_count"][0]) if f"{prefix}_count" in state else 0
        if held is None or held.numel() == 0:
            self.images, self.count = None, 0
            return
        self.images = torch.zeros(self.size, *held.shape[1:], dtype=held.dtype, device=device)
        self.images[:self.count] = held.to(device)


# ---------------------------------------------------------------------------------------------------- common


def check_crop_and_schedule(config: object, image_size: int) -> None:
    """The options of random crops, jitter and the learning-rate decay, shared by every image-to-image recipe
    (``crop``, ``jitter``, ``lr_decay_start`` attributes of ``config``), as one-line :class:`ConfigError`-s.

    Args:
        config: a recipe config with ``crop``, ``jitter`` and ``lr_decay_start``.
        image_size: side of the loaded images, the largest crop.
    """
    crop, jitter, decay = config.crop, config.jitter, config.lr_decay_start  # type: ignore[attr-defined]
    if crop < 0:
        raise ConfigError(f"crop must be 0 (whole images) or a side in px (got {crop})")
    if jitter < 1.0:
        raise ConfigError(f"jitter is an upscale factor >= 1 (got {jitter}); 1 turns it off")
    if not 0.0 <= decay <= 1.0:
        raise ConfigError(f"lr_decay_start is a fraction of the run in [0, 1] (got {decay})")
    if crop > image_size:
        raise ConfigError(f"crop={crop} is larger than the {image_size} px images")


def _check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{option}={value!r}: choose one of {', '.join(choices)}")


class _Translation(TranslationRecipe):
    """What pix2pix and CycleGAN share: jitter and crops, the schedule, eval-mode translation, previews."""

    prefers_channels_last = True
    preview_rows = 4

    def _prefer_layout(self) -> None:
        """NHWC only where measured faster on CPU: U-Nets with batch norm (1.28x); ResNet generators and instance
        norm convert NHWC back to NCHW inside every block (1.12-1.24x slower, benchmarks/training_speed.py)."""
        cfg = self.config
        self.prefers_channels_last = cfg.generator.startswith("unet") and cfg.norm != "instance"

    def _check_common(self, config) -> None:  # type: ignore[no-untyped-def]
        self._prefer_layout()
        _check_loss(config.loss)
        _check_choice("generator", config.generator, GENERATOR_NAMES)
        check_crop_and_schedule(config, self.data_info.image_size)

    @property
    def training_size(self) -> int:
        return int(self.config.crop or self.data_info.image_size)

    def _generator(self, c_in: int, c_out: int) -> nn.Module:
        cfg = self.config
        return build_translation_generator(cfg.generator, c_in, c_out, image_size=self.training_size,
                                           base_channels=cfg.base_channels, norm=cfg.norm, dropout=cfg.dropout)

    def _discriminator(self, c_in: int) -> nn.Module:
        cfg = self.config
        _check_choice("discriminator", cfg.discriminator, DISCRIMINATOR_NAMES)
        if cfg.discriminator != "pixel":
            # A PatchGAN halves its input d_layers times, then needs 3 px for its two stride-1 4x4 convolutions.
            scales = cfg.num_scales if cfg.discriminator == "multiscale" else 1
            coarsest = self.training_size // 2 ** (scales - 1)
            if coarsest < 3 * 2 ** cfg.d_layers:
                raise ConfigError(
                    f"a {cfg.discriminator} discriminator with d_layers={cfg.d_layers}" +
                    (f" and num_scales={scales}" if scales > 1 else "") + f" needs training images (or crops) of at "
                    f"least {3 * 2 ** (cfg.d_layers + scales - 1)} px, got {self.training_size}; lower d_layers")
        return build_patch_discriminator(cfg.discriminator, c_in, base_channels=cfg.d_base_channels,
                                         n_layers=cfg.d_layers, norm=cfg.d_norm, num_scales=cfg.num_scales)

    def size_multiple(self, direction: str = "AtoB") -> int:
        generator = self.networks[self._generator_name(direction)]
        return int(getattr(generator, "multiple", 1))

    @abc.abstractmethod
    def _generator_name(self, direction: str) -> str:
        """The name (in ``networks``) of the generator that translates in ``direction``."""

    def _adam(self, *names: str) -> torch.optim.Optimizer:
        params = [p for name in names for p in self.networks[name].parameters()]
        return adam(params, lr=self.config.lr, betas=tuple(self.config.betas), device=self.device)  # type: ignore[arg-type]

    def _schedule(self, ctx: StepContext) -> None:
        set_learning_rates(ctx.optimizers, self.config.lr, linear_decay(ctx.progress, self.config.lr_decay_start))

    def _jitter(self, tensors: dict[str, torch.Tensor],
                nearest: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
        cfg = self.config
        if not cfg.crop and cfg.jitter == 1.0 and not cfg.flip:
            return tensors
        return random_jitter(tensors, crop=cfg.crop, jitter=cfg.jitter, flip=cfg.flip, nearest=nearest)

    @torch.no_grad()
    def translate(self, images: torch.Tensor, direction: str = "AtoB") -> torch.Tensor:
        generator = self.networks[self._generator_name(self.check_direction(direction))]
        with evaluating(generator):
            out = generator(images.to(self.device))
        return (out.float() + 1.0) / 2.0 if self.output_is_mask(direction) else out.float()


# --------------------------------------------------------------------------------------------------- pix2pix


@dataclass
class TranslationOptions:
    """Options pix2pix and CycleGAN share.

    Args:
        base_channels: Generator width (ngf).
        discriminator: patch (PatchGAN; 70x70 with d_layers 3), pixel (1x1 PixelGAN) or multiscale (pix2pixHD).
        d_base_channels: Discriminator width (ndf).
        d_layers: Stride-2 layers of the PatchGAN: 3 gives 70x70 patches, 2 34x34, 1 16x16.
        num_scales: Scales of the multiscale discriminator.
        lr: Adam learning rate of all networks.
        betas: Adam betas.
        lr_decay_start: Fraction of the run after which the learning rate decays linearly to 0 (needs --steps).
        crop: Train on random crops of this side (px) from the loaded images; 0 = whole images.
        jitter: Upscale factor before the random crop (286/256 in the papers); 1 turns jitter off.
        flip: Mirror training images left-right at random.
    """

    base_channels: int = 64
    discriminator: str = "patch"
    d_base_channels: int = 64
    d_layers: int = 3
    num_scales: int = 2
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lr_decay_start: float = 0.5
    crop: int = 0
    jitter: float = 1.117
    flip: bool = True


@dataclass
class Pix2PixConfig(TranslationOptions):
    """Options of ``--recipe pix2pix`` (and those of :class:`TranslationOptions`).

    Args:
        generator: unet (depth so the bottleneck is 1x1 at the training size), unet128, unet256, resnet6, resnet9.
        norm: Normalisation of the generator's hidden layers: batch, instance or none.
        dropout: Dropout in the U-Net's three innermost decoder blocks (the paper's noise); 0 turns it off.
        d_norm: Discriminator normalisation: batch, instance or none.
        loss: Adversarial loss: vanilla (the paper's cross-entropy), lsgan or hinge.
        l1_weight: Weight of the reconstruction term (lambda, 100 in the paper).
        reconstruction: The reconstruction term: l1 (the paper's), or bce_dice for mask targets (cross-entropy +
            soft Dice on the output read as a probability): L1 on a thin-structure mask pulls every pixel towards
            the majority value (its median), so without the adversarial term it predicts background everywhere.
        adversarial_weight: Weight of the adversarial term; 0 trains a plain U-Net alone (no discriminator).
    """

    generator: str = "unet"
    norm: str = "batch"
    dropout: float = 0.5
    d_norm: str = "batch"
    loss: str = "vanilla"
    l1_weight: float = 100.0
    reconstruction: str = "l1"
    adversarial_weight: float = 1.0


@register_recipe
class Pix2Pix(_Translation):
    """Paired translation A -> B: a U-Net generator and a conditional PatchGAN (Isola et al. 2017)."""

    name = "pix2pix"
    Config = Pix2PixConfig

    @classmethod
    def data_spec(cls, config: Pix2PixConfig) -> DataSpec:
        return DataSpec("paired", {"image": None, "target": None})

    def __init__(self, config: Pix2PixConfig, data_info: DataInfo) -> None:
        super().__init__(config, data_info)
        self._check_common(config)
        if config.adversarial_weight < 0 or config.l1_weight < 0:
            raise ConfigError("l1_weight and adversarial_weight must be at least 0")
        _check_choice("reconstruction", config.reconstruction, RECONSTRUCTIONS)
        if config.reconstruction == "bce_dice" and not data_info.target_is_mask:
            raise ConfigError("reconstruction=bce_dice needs mask targets ({0, 1}); these targets are images: use l1")
        c_in, c_out = data_info.channels, data_info.target_channels
        self.networks["G"] = self._generator(c_in, c_out)
        if config.adversarial_weight > 0:
            self.networks["D"] = self._discriminator(c_in + c_out)
        self.preview_batch: dict[str, torch.Tensor] = {}

    def _generator_name(self, direction: str) -> str:
        return "G"

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {name: self._adam(name) for name in ("G", "D") if name in self.networks}

    def loss_names(self) -> list[str]:
        return ["loss_d", "loss_g", "adversarial", "l1"]

    def _target_image(self, target: torch.Tensor) -> torch.Tensor:
        """Targets as images in [-1, 1] (a {0, 1} mask becomes {-1, 1})."""
        return target * 2.0 - 1.0 if self.data_info.target_is_mask else target

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        cfg = self.config
        self._schedule(ctx)
        pair = self._jitter({"image": batch["image"], "target": batch["target"]},
                            nearest=frozenset({"target"}) if self.data_info.target_is_mask else frozenset())
        real_a, real_b = pair["image"], self._target_image(pair["target"])
        G = self.networks["G"]
        with ctx.autocast():
            fake_b = G(real_a)
        zero = torch.zeros((), device=real_a.device)
        loss_d, adversarial = zero, zero
        if "D" in self.networks:
            D = self.networks["D"]
            with ctx.autocast():
                loss_d = discriminator_loss(cfg.loss, D(torch.cat([real_a, real_b], 1)),
                                            D(torch.cat([real_a, fake_b.detach()], 1)))
            ctx.optimize("D", loss_d)
            with frozen(D), ctx.autocast():
                adversarial = generator_loss(cfg.loss, D(torch.cat([real_a, fake_b], 1)))
        with ctx.autocast():
            if cfg.reconstruction == "bce_dice":
                l1 = mask_bce_dice((fake_b.float() + 1.0) / 2.0, pair["target"])
            else:
                l1 = L.l1_loss(fake_b.float(), real_b)
            loss_g = cfg.adversarial_weight * adversarial + cfg.l1_weight * l1
        ctx.optimize("G", loss_g)
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "adversarial": adversarial.detach(),
                "l1": l1.detach()}

    def prepare_data(self, data: TrainingSet) -> TrainingSet:
        rows = torch.arange(min(self.preview_rows, len(data)))
        self.preview_batch = {k: v for k, v in data.batch(rows).items() if k in ("image", "target")}
        return data

    def preview_inputs(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.preview_batch.items()}

    def preview(self, inputs: dict[str, torch.Tensor]) -> Preview:
        image = inputs["image"]
        output = self.translate(image.to(self.device)).cpu()
        if self.data_info.target_is_mask:
            output = output * 2.0 - 1.0
        return Preview(columns={"input": image, "output": output,
                                "target": self._target_image(inputs["target"]).cpu()})


# -------------------------------------------------------------------------------------------------- CycleGAN


@dataclass
class CycleGANConfig(TranslationOptions):
    """Options of ``--recipe cyclegan`` (and those of :class:`TranslationOptions`).

    Args:
        generator: resnet9, resnet6 or auto (9 blocks from 256 px, 6 below, as the paper), or a U-Net (unet, ...).
        norm: Normalisation of the generators: instance, batch or none.
        dropout: Dropout in the generators (U-Net: innermost decoder blocks); 0 in the paper.
        d_norm: Discriminator normalisation.
        loss: Adversarial loss: lsgan (the paper's), vanilla or hinge.
        cycle_weight: Weight of each cycle-consistency loss (lambda_A = lambda_B, 10 in the paper).
        identity_weight: Identity loss weight as a fraction of cycle_weight (0.5 in the paper); it needs equal
            channel counts in both domains, so it is 0 when they differ.
        pool_size: Past fakes kept per domain for the discriminators (50); 0 disables the pools.
    """

    generator: str = "auto"
    norm: str = "instance"
    dropout: float = 0.0
    d_norm: str = "instance"
    loss: str = "lsgan"
    cycle_weight: float = 10.0
    identity_weight: float = 0.5
    pool_size: int = 50


@register_recipe
class CycleGAN(_Translation):
    """Unpaired translation A <-> B: two generators, two discriminators, cycle and identity losses, image pools."""

    name = "cyclegan"
    Config = CycleGANConfig
    directions = ("AtoB", "BtoA")

    @classmethod
    def data_spec(cls, config: CycleGANConfig) -> DataSpec:
        return DataSpec("unpaired", {"image": None, "target": None})

    def __init__(self, config: CycleGANConfig, data_info: DataInfo) -> None:
        if config.generator == "auto":
            side = int(config.crop or data_info.image_size)
            config = dataclasses.replace(config, generator="resnet9" if side >= 256 else "resnet6")
        super().__init__(config, data_info)
        self._check_common(config)
        if config.cycle_weight < 0 or config.identity_weight < 0:
            raise ConfigError("cycle_weight and identity_weight must be at least 0")
        a, b = data_info.channels, data_info.target_channels
        self.networks["G_AB"] = self._generator(a, b)
        self.networks["G_BA"] = self._generator(b, a)
        self.networks["D_A"] = self._discriminator(a)
        self.networks["D_B"] = self._discriminator(b)
        self.pools = {"A": ImagePool(config.pool_size), "B": ImagePool(config.pool_size)}
        self.preview_batch: dict[str, torch.Tensor] = {}

    def output_is_mask(self, direction: str = "AtoB") -> bool:
        return self.check_direction(direction) == "AtoB" and self.data_info.target_is_mask

    @property
    def identity_weight(self) -> float:
        """The identity loss's weight: 0 when the domains' channel counts differ (G_AB(b) is then undefined)."""
        same = self.data_info.channels == self.data_info.target_channels
        return self.config.identity_weight * self.config.cycle_weight if same else 0.0

    def _generator_name(self, direction: str) -> str:
        return "G_AB" if direction == "AtoB" else "G_BA"

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G": self._adam("G_AB", "G_BA"), "D": self._adam("D_A", "D_B")}

    def loss_names(self) -> list[str]:
        return ["loss_g", "loss_d_a", "loss_d_b", "adversarial", "cycle_a", "cycle_b", "identity"]

    def _domain_b(self, target: torch.Tensor) -> torch.Tensor:
        return target * 2.0 - 1.0 if self.data_info.target_is_mask else target

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        cfg, n = self.config, self.networks
        self._schedule(ctx)
        nearest = frozenset({"target"}) if self.data_info.target_is_mask else frozenset()
        real_a = self._jitter({"image": batch["image"]})["image"]  # the domains are unpaired: jittered apart
        real_b = self._domain_b(self._jitter({"target": batch["target"]}, nearest)["target"])
        zero = torch.zeros((), device=real_a.device)
        with frozen(n["D_A"]), frozen(n["D_B"]), ctx.autocast():
            fake_b, fake_a = n["G_AB"](real_a), n["G_BA"](real_b)
            cycle_a = L.cycle_consistency_loss(real_a, n["G_BA"](fake_b).float())
            cycle_b = L.cycle_consistency_loss(real_b, n["G_AB"](fake_a).float())
            identity = zero
            if self.identity_weight > 0:
                identity = L.l1_loss(n["G_AB"](real_b).float(), real_b) + L.l1_loss(n["G_BA"](real_a).float(), real_a)
            adversarial = generator_loss(cfg.loss, n["D_B"](fake_b)) + generator_loss(cfg.loss, n["D_A"](fake_a))
            loss_g = adversarial + cfg.cycle_weight * (cycle_a + cycle_b) + self.identity_weight * identity
        ctx.optimize("G", loss_g)
        pooled_b, pooled_a = self.pools["B"].query(fake_b), self.pools["A"].query(fake_a)
        with ctx.autocast():
            loss_d_b = discriminator_loss(cfg.loss, n["D_B"](real_b), n["D_B"](pooled_b))
            loss_d_a = discriminator_loss(cfg.loss, n["D_A"](real_a), n["D_A"](pooled_a))
        ctx.optimize("D", loss_d_a + loss_d_b)
        return {"loss_g": loss_g.detach(), "loss_d_a": loss_d_a.detach(), "loss_d_b": loss_d_b.detach(),
                "adversarial": adversarial.detach(), "cycle_a": cycle_a.detach(), "cycle_b": cycle_b.detach(),
                "identity": identity.detach()}

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {**self.pools["A"].state("pool_a"), **self.pools["B"].state("pool_b")}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.pools["A"].load_state(state, "pool_a", self.device)
        self.pools["B"].load_state(state, "pool_b", self.device)

    def prepare_data(self, data: TrainingSet) -> TrainingSet:
        a, b = data.domain_a, data.domain_b  # type: ignore[attr-defined]
        self.preview_batch = {"image": a.batch(torch.arange(min(self.preview_rows, len(a))))["image"],
                              "target": b.batch(torch.arange(min(self.preview_rows, len(b))))["target"]}
        return data

    def preview_inputs(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.preview_batch.items()}

    @torch.no_grad()
    def preview(self, inputs: dict[str, torch.Tensor]) -> Preview:
        """Rows: A | A->B | A->B->A | B | B->A | B->A->B (masks drawn in {-1, 1})."""
        rows = min(inputs["image"].shape[0], inputs["target"].shape[0])
        a = inputs["image"][:rows].to(self.device)
        b = self._domain_b(inputs["target"][:rows]).to(self.device)
        n = self.networks
        with evaluating(n["G_AB"], n["G_BA"]):
            ab, ba = n["G_AB"](a), n["G_BA"](b)
            aba, bab = n["G_BA"](ab), n["G_AB"](ba)
        columns = {"A": a, "A->B": ab, "A->B->A": aba, "B": b, "B->A": ba, "B->A->B": bab}
        return Preview(columns={k: v.float().cpu() for k, v in columns.items()})

"""Segmentation: a plain U-Net (``unet``), SegAN (``segan``) and pix2pix-style adversarial segmentation
(``pix2pix-seg``), all with the same U-Net segmentor, so that the adversarial term is the only difference.

**unet** minimises cross-entropy + soft Dice (batch Dice over the foreground classes): the baseline every
adversarial result must be read against.

**segan** (Xue et al. 2018) adds a critic C with the segmentor's encoder layout. C sees the image masked by the
prediction, ``image * p``, and by the truth, ``image * y`` (one masked copy of the image per foreground class), and
returns the features of each of its layers; the multi-scale L1 loss is the mean absolute difference of those
features, averaged over the scales (the paper's Eq. 3). S minimises it, C maximises it (one C step per S step,
then C's parameters are clipped to [-0.05, 0.05] as in the authors' code). As in the authors' PyTorch code, S
adds a Dice term (``dice_weight``; 0 gives the paper's loss alone).

**pix2pix-seg** (Isola et al. 2017, as used for skin-lesion segmentation) adds a conditional PatchGAN judging
(image, mask) pairs: the vanilla GAN loss (halved for D), the segmentation loss weighted by ``seg_weight`` (100,
pix2pix's lambda).

Choices, each for a reason:

* The image is scaled to [0, 1] before masking, so masked-out pixels are black (0), as in the paper's figures,
  rather than the mid-grey that 0 is in [-1, 1] images.
* Multi-class: the critic and the discriminator see one channel group per *foreground* class (background left
  out), so a binary run (one foreground class) is exactly the single-class SegAN.
* The segmentor uses Adam 1e-3 (0.9, 0.999) in every recipe (a common U-Net setting, converging in the short
  budgets of a CPU), the critic / discriminator Adam 2e-4 (0.5, 0.999) as in the SegAN and pix2pix code; the
  learning rates decay linearly to 0 over the second half of a ``--steps`` run.
* With ``--eval-every N`` each recipe scores Dice on the validation split every N steps and keeps
  ``checkpoints/best.*`` (never the test split).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from synthmed import losses as L
from synthmed.data.dataset import DataInfo
from synthmed.data.sets import DataSpec, TrainingSet
from synthmed.errors import ConfigError
from synthmed.nn.segmentation import SegANCritic, build_segmentor, segmentation_depth
from synthmed.nn.translation import build_patch_discriminator
from synthmed.ops.tiling import pad_bottom_right
from synthmed.optim import adam, linear_decay, set_learning_rates
from synthmed.recipes.base import Preview, SegmentationRecipe, register_recipe
from synthmed.recipes.step import StepContext, evaluating, frozen
from synthmed.recipes.translation import check_crop_and_schedule, discriminator_loss, generator_loss, random_jitter

#: Images per validation forward pass.
VALIDATION_BATCH = 16


# ---------------------------------------------------------------------------------------------- pure helpers


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Sigmoid of one foreground logit (binary), softmax over K class logits otherwise."""
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def foreground(probabilities: torch.Tensor) -> torch.Tensor:
    """The foreground classes' channels: the binary probability itself, or classes 1..K-1 of a softmax."""
    return probabilities if probabilities.shape[1] == 1 else probabilities[:, 1:]


def one_hot_foreground(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, 1, H, W) class indices -> (N, K-1, H, W) float {0, 1}, one channel per foreground class."""
    index = labels[:, 0].long()
    return torch.stack([(index == k) for k in range(1, num_classes)], dim=1).to(labels.dtype)


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, num_classes: int, *, ce_weight: float = 1.0,
                      dice_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy, soft Dice) of ``logits`` against class indices ``labels`` (N, 1, H, W), each unweighted;
    the caller combines them. Binary: BCE on the one logit; multi-class: softmax cross-entropy. Dice: batch Dice
    over the foreground classes (:func:`synthmed.losses.soft_dice_loss`).

    Args:
        logits: (N, 1, H, W) or (N, K, H, W).
        labels: (N, 1, H, W) class indices stored as floats.
        num_classes: K (2 for binary).
        ce_weight: skip the cross-entropy when 0 (returned as 0).
        dice_weight: skip the Dice term when 0 (returned as 0).
    """
    logits = logits.float()
    zero = torch.zeros((), device=logits.device)
    if logits.shape[1] == 1:
        ce = F.binary_cross_entropy_with_logits(logits, labels) if ce_weight else zero
    else:
        ce = F.cross_entropy(logits, labels[:, 0].long()) if ce_weight else zero
    dice = zero
    if dice_weight:
        dice = L.soft_dice_loss(foreground(class_probabilities(logits)), one_hot_foreground(labels, num_classes))
    return ce, dice


def masked_images(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """SegAN's critic input: the image (scaled to [0, 1]) times each mask channel, the copies concatenated.

    Args:
        images: (N, C, H, W) in [-1, 1].
        masks: (N, M, H, W) in [0, 1] (probabilities or one-hot truth of M foreground classes).

    Returns:
        (N, C * M, H, W): channels of class 1 first, then class 2, ...
    """
    unit = (images + 1.0) / 2.0
    return torch.cat([unit * masks[:, m:m + 1] for m in range(masks.shape[1])], dim=1)


def clip_parameters(module: torch.nn.Module, bound: float) -> None:
    """Clamp every parameter of ``module`` to [-bound, bound] (the SegAN code clips its critic, WGAN-style)."""
    with torch.no_grad():
        for p in module.parameters():
            p.clamp_(-bound, bound)


def pooled_dice(probabilities: torch.Tensor, labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, ...]:
    """Per foreground class: (overlap, predicted, true) pixel counts of hard predictions, for a pooled Dice."""
    predicted = probabilities[:, 0] >= 0.5 if probabilities.shape[1] == 1 else probabilities.argmax(1)
    truth = labels[:, 0].long()
    if probabilities.shape[1] == 1:
        predicted = predicted.long()
    counts = []
    for k in range(1, num_classes):
        p, t = predicted == k, truth == k
        counts.append(torch.stack([(p & t).sum(), p.sum(), t.sum()]).double())
    return tuple(counts)


def _rows_with_foreground(data: TrainingSet, n: int, chunk: int = 256) -> torch.Tensor:
    """``n`` sample indices spread over those whose mask has foreground (most LGG slices show no tumour, and a
    preview of empty masks shows nothing); the first samples when too few have any."""
    found = []
    for start in range(0, len(data), chunk):
        target = data.batch(torch.arange(start, min(start + chunk, len(data))))["target"]
        found.append(start + torch.nonzero(target.flatten(1).amax(1) > 0).flatten())
    rows = torch.cat(found) if found else torch.empty(0, dtype=torch.long)
    if len(rows) < n:
        return torch.arange(min(n, len(data)))
    return rows[torch.linspace(0, len(rows) - 1, n).round().long()]


# ------------------------------------------------------------------------------------------------- options


@dataclass
class SegmentationOptions:
    """Options every segmentation recipe shares (the segmentor and its training).

    Args:
        classes: Classes including background; 0 = from the data (2 for binary masks, the label maps' count).
        base_channels: U-Net width (feature maps of the outermost level).
        depth: U-Net downsamplings; 0 = 5, fewer for images under 64 px. Inputs are padded to multiples of 2**depth.
        norm: Normalisation in the U-Net: batch, instance or none.
        lr: Adam learning rate of the segmentor.
        betas: Adam betas of the segmentor.
        lr_decay_start: Fraction of the run after which every learning rate decays linearly to 0 (needs --steps).
        ce_weight: Weight of the cross-entropy term.
        dice_weight: Weight of the soft Dice term.
        crop: Train on random crops of this side (px); 0 = whole images.
        jitter: Upscale factor before the random crop; 1 turns it off.
        flip: Mirror training images left-right at random.
    """

    classes: int = 0
    base_channels: int = 32
    depth: int = 0
    norm: str = "batch"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    lr_decay_start: float = 0.5
    ce_weight: float = 1.0
    dice_weight: float = 1.0
    crop: int = 0
    jitter: float = 1.0
    flip: bool = True


@dataclass
class AdversarialSegmentationOptions(SegmentationOptions):
    """Options of the adversarial segmentation recipes (and those of :class:`SegmentationOptions`).

    Args:
        adversarial_weight: Weight of the adversarial term in the segmentor's loss; 0 = the plain U-Net.
        d_base_channels: Width of the critic / discriminator.
        d_lr: Adam learning rate of the critic / discriminator.
        d_betas: Adam betas of the critic / discriminator.
    """

    adversarial_weight: float = 1.0
    d_base_channels: int = 32
    d_lr: float = 2e-4
    d_betas: tuple[float, float] = (0.5, 0.999)


@dataclass
class UNetConfig(SegmentationOptions):
    """Options of ``--recipe unet`` (those of :class:`SegmentationOptions`)."""


@dataclass
class SegANConfig(AdversarialSegmentationOptions):
    """Options of ``--recipe segan`` (and those of :class:`AdversarialSegmentationOptions`).

    Args:
        ce_weight: Weight of the cross-entropy term (0: SegAN's code uses Dice only beside the multi-scale L1).
        clip: Clamp the critic's parameters to [-clip, clip] after each of its steps; 0 turns clipping off.
        critic_norm: Normalisation in the critic's blocks 2..L: batch (the paper's code), instance, layer, none.
    """

    ce_weight: float = 0.0
    clip: float = 0.05
    critic_norm: str = "batch"


@dataclass
class Pix2PixSegConfig(AdversarialSegmentationOptions):
    """Options of ``--recipe pix2pix-seg`` (and those of :class:`AdversarialSegmentationOptions`).

    Args:
        seg_weight: Weight of the segmentation loss (cross-entropy + Dice) beside the adversarial term (100, the
            lambda of pix2pix's L1 term).
        d_base_channels: PatchGAN width (ndf; 64 in pix2pix).
        d_layers: PatchGAN stride-2 layers: 3 gives 70x70 patches.
        d_norm: PatchGAN normalisation: batch, instance or none.
    """

    seg_weight: float = 100.0
    d_base_channels: int = 64
    d_layers: int = 3
    d_norm: str = "batch"


# -------------------------------------------------------------------------------------------------- recipes


class _Segmentation(SegmentationRecipe):
    """What the three recipes share: the segmentor, crops and jitter, the schedule, validation, previews."""

    prefers_channels_last = True
    preview_rows = 4

    @classmethod
    def data_spec(cls, config: SegmentationOptions) -> DataSpec:
        return DataSpec("paired", {"image": None, "target": 1})

    def __init__(self, config: SegmentationOptions, data_info: DataInfo) -> None:
        super().__init__(config, data_info)
        self.prefers_channels_last = config.norm != "instance"
        if not data_info.target_is_mask:
            raise ConfigError(f"recipe {self.name!r} segments: its targets must be masks, but "
                              f"{data_info.target_source or data_info.source} holds images (pass --pair image:mask, "
                              "a mask folder as --target, or --mask-values labels for label maps)")
        self.num_classes = self._classes(config, data_info)
        self._check_geometry(config)
        size = self.training_size
        self.depth = config.depth or segmentation_depth(size)
        if size % 2**self.depth:
            raise ConfigError(f"training images (or crops) of {size} px are not a multiple of 2**depth = "
                              f"{2**self.depth}; choose --size/--crop a multiple of it or lower depth")
        self.networks["S"] = build_segmentor(data_info.channels, self.output_channels(), depth=self.depth,
                                             base_channels=config.base_channels, norm=config.norm)
        self.preview_batch: dict[str, torch.Tensor] = {}

    @staticmethod
    def _classes(config: SegmentationOptions, info: DataInfo) -> int:
        found = max(2, int(info.mask_classes))
        if config.classes == 0:
            return found
        if config.classes < 2:
            raise ConfigError(f"classes={config.classes}: a segmentation has at least 2 classes (with background)")
        if config.classes < found:
            raise ConfigError(f"classes={config.classes} but the masks of {info.target_source or info.source} hold "
                              f"{found} classes (labels 0..{found - 1})")
        return int(config.classes)

    def _check_geometry(self, config: SegmentationOptions) -> None:
        check_crop_and_schedule(config, self.data_info.image_size)
        if config.ce_weight < 0 or config.dice_weight < 0:
            raise ConfigError("ce_weight and dice_weight must be at least 0")

    @property
    def training_size(self) -> int:
        return int(self.config.crop or self.data_info.image_size)

    def size_multiple(self, direction: str = "AtoB") -> int:
        return 2**self.depth

    # --- training ------------------------------------------------------------------------------------------
    def _optimizers(self, adversary: str | None) -> dict[str, torch.optim.Optimizer]:
        cfg = self.config
        optimizers = {"S": adam(list(self.networks["S"].parameters()), lr=cfg.lr, betas=tuple(cfg.betas),
                                device=self.device)}
        if adversary is not None and adversary in self.networks:
            optimizers[adversary] = adam(list(self.networks[adversary].parameters()), lr=cfg.d_lr,
                                         betas=tuple(cfg.d_betas), device=self.device)
        return optimizers

    def _schedule(self, ctx: StepContext) -> None:
        factor = linear_decay(ctx.progress, self.config.lr_decay_start)
        for name, optimizer in ctx.optimizers.items():
            set_learning_rates({name: optimizer}, self.config.lr if name == "S" else self.config.d_lr, factor)

    def _augmented(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        pair = {"image": batch["image"], "target": batch["target"]}
        if cfg.crop or cfg.jitter != 1.0 or cfg.flip:
            pair = random_jitter(pair, crop=cfg.crop, jitter=cfg.jitter, flip=cfg.flip,
                                 nearest=frozenset({"target"}))
        return pair["image"], pair["target"]

    def _forward(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> tuple[torch.Tensor, ...]:
        """Every recipe's step starts alike: the learning-rate schedule, the batch augmented, the segmentor's
        logits. Returns (images, labels, logits)."""
        self._schedule(ctx)
        images, labels = self._augmented(batch)
        with ctx.autocast():
            logits = self.networks["S"](images)
        return images, labels, logits

    def _segmentation_terms(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cfg = self.config
        ce, dice = segmentation_loss(logits, labels, self.num_classes, ce_weight=cfg.ce_weight,
                                     dice_weight=cfg.dice_weight)
        return ce, dice, cfg.ce_weight * ce + cfg.dice_weight * dice

    # --- inference -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def segment(self, images: torch.Tensor) -> torch.Tensor:
        segmentor = self.networks["S"]
        with evaluating(segmentor):
            logits = segmentor(images.to(self.device))
        return class_probabilities(logits.float())

    @torch.no_grad()
    def validation_score(self, data: TrainingSet) -> float:
        """Dice of hard predictions pooled over every pixel of ``data`` (padding cropped off), averaged over the
        foreground classes."""
        totals: list[torch.Tensor] | None = None
        for start in range(0, len(data), VALIDATION_BATCH):
            batch = data.batch(torch.arange(start, min(start + VALIDATION_BATCH, len(data))))
            image = batch["image"]
            probabilities = self.segment(self._padded(image))[..., :image.shape[-2], :image.shape[-1]]
            counts = pooled_dice(probabilities, batch["target"], self.num_classes)
            totals = list(counts) if totals is None else [a + b for a, b in zip(totals, counts, strict=True)]
        if not totals:
            return float("nan")
        scores = [float(2 * c[0] / (c[1] + c[2])) if float(c[1] + c[2]) > 0 else 1.0 for c in totals]
        return sum(scores) / len(scores)

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        """Reflect-pad the bottom/right to a multiple of :meth:`size_multiple`, as ``synthmed segment`` pads; the
        caller crops the output back, so padding never counts as pixels."""
        m = self.size_multiple()
        return pad_bottom_right(x, -(-x.shape[-2] // m) * m, -(-x.shape[-1] // m) * m)

    # --- previews ------------------------------------------------------------------------------------------
    def prepare_data(self, data: TrainingSet) -> TrainingSet:
        rows = _rows_with_foreground(data, self.preview_rows)
        self.preview_batch = {k: v for k, v in data.batch(rows).items() if k in ("image", "target")}
        return data

    def preview_inputs(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in self.preview_batch.items()}

    def _as_image(self, labels: torch.Tensor) -> torch.Tensor:
        """Class indices (N, 1, H, W) drawn as grey levels in [-1, 1] (background black, the last class white)."""
        return labels.float() / (self.num_classes - 1) * 2.0 - 1.0

    def preview(self, inputs: dict[str, torch.Tensor]) -> Preview:
        image = inputs["image"]
        predicted = self.labels_from_probabilities(self.segment(self._padded(image)))[:, None]
        predicted = predicted[..., :image.shape[-2], :image.shape[-1]].cpu()
        return Preview(columns={"image": image, "prediction": self._as_image(predicted),
                                "truth": self._as_image(inputs["target"].cpu())})


@register_recipe
class UNet(_Segmentation):
    """A plain U-Net trained with cross-entropy + soft Dice: the baseline of the adversarial recipes."""

    name = "unet"
    Config = UNetConfig

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers(None)

    def loss_names(self) -> list[str]:
        return ["loss_s", "ce", "dice"]

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        _, labels, logits = self._forward(batch, ctx)
        ce, dice, loss = self._segmentation_terms(logits, labels)
        ctx.optimize("S", loss)
        return {"loss_s": loss.detach(), "ce": ce.detach(), "dice": dice.detach()}


@register_recipe
class SegAN(_Segmentation):
    """SegAN: a U-Net segmentor and a critic trained on the multi-scale L1 loss of masked images (Xue et al.)."""

    name = "segan"
    Config = SegANConfig

    def __init__(self, config: SegANConfig, data_info: DataInfo) -> None:
        super().__init__(config, data_info)
        if config.adversarial_weight < 0 or config.clip < 0:
            raise ConfigError("adversarial_weight and clip must be at least 0")
        masked_channels = data_info.channels * (self.num_classes - 1)
        if config.adversarial_weight > 0:
            self.networks["C"] = SegANCritic(masked_channels, depth=self.depth, base_channels=config.d_base_channels,
                                             norm=config.critic_norm)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers("C")

    def loss_names(self) -> list[str]:
        return ["loss_s", "loss_c", "multiscale_l1", "ce", "dice"]

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        cfg = self.config
        images, labels, logits = self._forward(batch, ctx)
        probabilities = foreground(class_probabilities(logits.float()))
        truth = masked_images(images, one_hot_foreground(labels, self.num_classes))
        zero = torch.zeros((), device=images.device)
        loss_c, adversarial = zero, zero
        if "C" in self.networks:
            critic = self.networks["C"]
            with ctx.autocast():  # C maximises the distance: minimise its negative
                loss_c = -L.multiscale_l1_loss(critic(masked_images(images, probabilities.detach())), critic(truth))
            ctx.optimize("C", loss_c)
            if cfg.clip > 0:
                clip_parameters(critic, cfg.clip)
            with frozen(critic), ctx.autocast():
                with torch.no_grad():
                    truth_features = critic(truth)
                adversarial = L.multiscale_l1_loss(critic(masked_images(images, probabilities)), truth_features)
        ce, dice, seg = self._segmentation_terms(logits, labels)
        loss_s = cfg.adversarial_weight * adversarial.float() + seg
        ctx.optimize("S", loss_s)
        return {"loss_s": loss_s.detach(), "loss_c": loss_c.detach(), "multiscale_l1": adversarial.detach(),
                "ce": ce.detach(), "dice": dice.detach()}


@register_recipe
class Pix2PixSeg(_Segmentation):
    """pix2pix-style segmentation: the U-Net segmentor and a conditional PatchGAN on (image, mask) pairs."""

    name = "pix2pix-seg"
    Config = Pix2PixSegConfig

    def __init__(self, config: Pix2PixSegConfig, data_info: DataInfo) -> None:
        super().__init__(config, data_info)
        if config.adversarial_weight < 0 or config.seg_weight < 0:
            raise ConfigError("adversarial_weight and seg_weight must be at least 0")
        if config.adversarial_weight > 0:
            if self.training_size < 3 * 2**config.d_layers:
                raise ConfigError(f"a PatchGAN with d_layers={config.d_layers} needs training images (or crops) of "
                                  f"at least {3 * 2**config.d_layers} px, got {self.training_size}; lower d_layers")
            self.networks["D"] = build_patch_discriminator(
                "patch", data_info.channels + self.num_classes - 1, base_channels=config.d_base_channels,
                n_layers=config.d_layers, norm=config.d_norm)

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers("D")

    def loss_names(self) -> list[str]:
        return ["loss_s", "loss_d", "adversarial", "ce", "dice"]

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        cfg = self.config
        images, labels, logits = self._forward(batch, ctx)
        # The mask side of D's input as an image in [-1, 1], one channel per foreground class.
        predicted = foreground(class_probabilities(logits.float())) * 2.0 - 1.0
        truth = one_hot_foreground(labels, self.num_classes) * 2.0 - 1.0
        zero = torch.zeros((), device=images.device)
        loss_d, adversarial = zero, zero
        if "D" in self.networks:
            D = self.networks["D"]
            with ctx.autocast():
                loss_d = discriminator_loss("vanilla", D(torch.cat([images, truth], 1)),
                                            D(torch.cat([images, predicted.detach()], 1)))
            ctx.optimize("D", loss_d)
            with frozen(D), ctx.autocast():
                adversarial = generator_loss("vanilla", D(torch.cat([images, predicted], 1)))
        ce, dice, seg = self._segmentation_terms(logits, labels)
        loss_s = cfg.adversarial_weight * adversarial.float() + cfg.seg_weight * seg
        ctx.optimize("S", loss_s)
        return {"loss_s": loss_s.detach(), "loss_d": loss_d.detach(), "adversarial": adversarial.detach(),
                "ce": ce.detach(), "dice": dice.detach()}

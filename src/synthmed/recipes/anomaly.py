"""Anomaly detection from normal images only: AnoGAN and f-AnoGAN (``--recipe anomaly``).

Two phases (:meth:`AnomalyGAN.phases`):

* ``gan`` (``gan_steps`` steps): the unconditional WGAN-GP (Gulrajani et al. 2017; the recipe inherits
  :class:`~synthmed.recipes.unconditional.UnconditionalGAN` with ``loss="wgan-gp"`` as its preset) on the normal
  training images only: with masks, the images whose mask is empty (healthy slices); with class labels, the class
  named by ``normal``.
* ``encoder`` (the rest of the run): an encoder E learns to map an image to the latent of the frozen generator,
  f-AnoGAN's "izi_f" training (Schlegl et al. 2019, ``z_encoding_izif.py``): minimise
  ``mean((x - G(E(x)))^2) + kappa * mean((f(x) - f(G(E(x))))^2)``, f the critic's last hidden features, kappa 1;
  ``encoder_loss="izi"`` drops the feature term. G, its EMA copy and the critic are never changed in this phase
  (no gradients, eval mode, no EMA updates): tested bit for bit.

Scoring (:meth:`AnomalyGAN.score`), on a trained model:

* ``fanogan``: one pass, ``score = residual + kappa * feature`` with ``residual = mean((x - G(E(x)))^2)`` and
  ``feature = mean((f(x) - f(G(E(x))))^2)`` per image, the paper's anomaly score A(x) = A_R(x) + kappa A_D(x).
* ``anogan`` (Schlegl et al. 2017): a latent search per image with G and D frozen, Gamma steps (500 in the
  paper) of Adam on z minimising ``(1 - lambda) * sum|x - G(z)| + lambda * sum|f(x) - f(G(z))|``, lambda 0.1;
  batched over images (each image's loss is its own, so the batch does not couple them), with ``restarts``
  starting points per image keeping the lowest final loss. The score is that loss at the last step.

Both return the reconstruction, whose absolute residual |x - x_hat| (mean over channels) is the pixel map.

Deviations from the reference code, and why:

* Networks: synthmed's DCGAN layouts (``arch="dcgan"``, a layer-norm critic as the WGAN-GP preset) at any size from
  16 to 128 px (the reference: a ResNet WGAN-GP fixed at 64 x 64 grey; users asked for other sizes,
  tSchlegl/f-AnoGAN #8, #11); ``arch="resnet"`` is available. The encoder mirrors the critic's convolutions with
  batch norm and a linear output, as the reference encoder (no latent clipping: its default ``Z_REG_TYPE=None``).
* The generator used by the encoder and for scoring is the EMA copy when the run keeps one (its batch-norm
  statistics re-estimated once when the encoder phase begins), else G; ``ema_beta=0`` gives the reference's G.
* Lengths are steps, not the reference's 100k/50k iterations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from synthmed.data.dataset import DataInfo, ImageDataset
from synthmed.errors import ConfigError, DataError
from synthmed.nn.autoencoder import Encoder
from synthmed.optim import adam
from synthmed.recipes.base import Phase, Preview, register_recipe
from synthmed.recipes.step import StepContext, evaluating, frozen
from synthmed.recipes.unconditional import UnconditionalConfig, UnconditionalGAN

GAN, ENCODER = "gan", "encoder"
ENCODER_LOSSES = ("izif", "izi")
METHODS = ("fanogan", "anogan")
NORMAL_CHOICES = ("auto", "all", "empty-mask")


@dataclass
class AnomalyConfig(UnconditionalConfig):
    """Options of the anomaly recipe: those of the unconditional GAN (with the WGAN-GP preset) and the encoder's.

    Args:
        gan_steps: Steps of the GAN phase; the encoder phase takes the rest of the run.
        encoder_loss: izif (image + kappa x critic-feature residual, f-AnoGAN's best) or izi (image residual only).
        kappa: Weight of the critic-feature residual in the encoder loss and in the f-AnoGAN score.
        e_channels: Width of the encoder (channels of its first layer) [default: d_channels].
        e_optimizer: Encoder optimiser: rmsprop (the reference code) or adam (betas 0.5, 0.999).
        lr_e: Encoder learning rate (the reference: 5e-5 with RMSProp).
        normal: Which training images are normal: auto (images with an empty mask when the data has masks, else
            all), all, empty-mask, or a class (index or name) of labelled data.

        ttur: Two time-scale update rule: discriminator learning rate 4 x the generator's [off: the anomaly
            studies (docs/anomaly.md) were measured with the losses' own rates].
        diffaugment: DiffAugment policy, e.g. "translation" [off, as the anomaly studies were measured].
        lecam: Weight of the LeCam regulariser on the GAN phase [off at every size, as the anomaly studies were
            measured].
        mode_seeking: Weight of the mode-seeking term on the GAN phase [off, as the anomaly studies were measured].
    """

    diffaugment: str = ""
    ttur: bool | None = False
    lecam: float | None = 0.0
    mode_seeking: float = 0.0
    loss: str = "wgan-gp"
    latent_dim: int = 128
    gan_steps: int = 2000
    encoder_loss: str = "izif"
    kappa: float = 1.0
    e_channels: int | None = None
    e_optimizer: str = "rmsprop"
    lr_e: float = 5e-5
    normal: str = "auto"


class AnomalyScores(NamedTuple):
    """Per-image anomaly scores with their parts, and the reconstructions behind the pixel maps.

    ``score``, ``residual``, ``feature``: (N,) float tensors; ``reconstruction``: (N, C, H, W) in [-1, 1].
    f-AnoGAN: score = residual + kappa * feature (mean squared image / critic-feature residuals). AnoGAN:
    score = (1 - lambda) * residual + lambda * feature (summed absolute residuals).
    """

    score: torch.Tensor
    residual: torch.Tensor
    feature: torch.Tensor
    reconstruction: torch.Tensor


def has_lesion(masks: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the images whose mask shows anything (> 0); the rest are the normal (empty-mask) images. The one
    rule training (``normal="auto"``), ``synthmed detect`` and the benchmarks use."""
    return masks.flatten(1).amax(dim=1) > 0


def residual_map(images: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """|x - x_hat| averaged over channels: (N, 1, H, W), the anomaly map before smoothing and masking."""
    return (images.float() - reconstruction.float()).abs().mean(dim=1, keepdim=True)


def _check_options(config: AnomalyConfig) -> None:
    problems = [
        (config.gan_steps < 0, f"gan_steps must be 0 or more (got {config.gan_steps})"),
        (config.encoder_loss not in ENCODER_LOSSES,
         f"encoder_loss must be one of {', '.join(ENCODER_LOSSES)} (got {config.encoder_loss!r})"),
        (config.kappa < 0, f"kappa must be 0 or more (got {config.kappa})"),
        (config.e_optimizer not in ("rmsprop", "adam"),
         f"e_optimizer must be rmsprop or adam (got {config.e_optimizer!r})"),
        (config.lr_e <= 0, f"lr_e must be positive (got {config.lr_e})"),
        (config.pad_to is not None, "pad_to is not available with the anomaly recipe (scored images must have the "
                                    "training size; resize with --size)"),
        (config.e_channels is not None and config.e_channels < 1,
         f"e_channels must be at least 1 (got {config.e_channels})"),
        # The unconditional schedule spans the whole run, but the GAN trains only for its first gan_steps.
        (config.lr_decay_start < 1.0, "lr_decay_start is not available with the anomaly recipe (its GAN phase is "
                                      "only the first gan_steps of the run)"),
    ]
    for failed, message in problems:
        if failed:
            raise ConfigError(message)


@register_recipe
class AnomalyGAN(UnconditionalGAN):
    """A WGAN-GP on normal images, then an izi_f encoder against the frozen G and D; AnoGAN / f-AnoGAN scores."""

    name = "anomaly"
    Config = AnomalyConfig

    def __init__(self, config: AnomalyConfig, data_info: DataInfo) -> None:
        _check_options(config)
        super().__init__(config, data_info)
        width = config.e_channels or config.d_channels
        try:
            self.networks["E"] = Encoder(config.latent_dim, data_info.channels, self.train_size, width, norm="batch")
        except ValueError as exc:
            raise ConfigError(f"recipe 'anomaly': {exc}") from None
        self.phase = GAN
        self.normal_description = "all training images"
        self._examples: torch.Tensor | None = None

    # --- set-up ----------------------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        return [Phase(GAN, self.config.gan_steps), Phase(ENCODER)]

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        optimizers = super().configure_optimizers()
        params = self.networks["E"].parameters()
        if self.config.e_optimizer == "adam":
            optimizers["E"] = adam(params, lr=self.config.lr_e, betas=(0.5, 0.999), device=self.device)
        else:
            optimizers["E"] = torch.optim.RMSprop(params, lr=self.config.lr_e)
        return optimizers

    def prepare_data(self, data: ImageDataset) -> ImageDataset:
        """Keep the normal images only (see the ``normal`` option); the GAN and the encoder never see the rest."""
        keep, self.normal_description = self.normal_rows(data.masks, data.labels, data.info.source)
        if keep is not None:
            if not bool(keep.any()):
                raise DataError(data.info.source, f"has no normal training images ({self.normal_description})")
            data = data.subset(torch.nonzero(keep).flatten())
        self._examples = data.images[:8].detach().cpu()
        return data

    def normal_rows(self, masks: torch.Tensor | None, labels: torch.Tensor | None, source: str
                    ) -> tuple[torch.Tensor | None, str]:
        """(N,) bool, True for the images the ``normal`` option calls normal (None: every image), and a description.

        Training keeps those rows; ``synthmed detect`` calls the others anomalous, so both sides read "normal" the
        same way. Classes are resolved against this run's class names.

        Args:
            masks: (N, 1, H, W) masks or None.
            labels: (N,) class indices or None.
            source: the data's name, for messages.
        """
        choice = str(self.config.normal)
        n = len(masks) if masks is not None else (len(labels) if labels is not None else 0)
        if choice == "all" or (choice == "auto" and masks is None):
            return None, f"all {n} training images"
        if choice in ("auto", "empty-mask"):
            if masks is None:
                raise ConfigError(f"normal='empty-mask' needs masks; {source} has none")
            keep = ~has_lesion(masks)
            return keep, f"{int(keep.sum())} of {n} images with an empty mask"
        if labels is None:
            raise ConfigError(f"normal={choice!r} names a class, but {source} has no class labels")
        index = self._normal_class(choice)
        keep = labels == index
        names = self.data_info.class_names
        return keep, f"{int(keep.sum())} of {n} images of class {names[index] if names else index}"

    def _normal_class(self, choice: str) -> int:
        names = list(self.data_info.class_names)
        if choice in names:
            return names.index(choice)
        if choice.lstrip("-").isdigit() and 0 <= int(choice) < max(self.data_info.num_classes, 1):
            return int(choice)
        known = ", ".join(names) or f"0..{self.data_info.num_classes - 1}"
        raise ConfigError(f"normal={choice!r} is not auto, all, empty-mask or a class of the data ({known})")

    def start_phase(self, phase: str, resumed: bool = False) -> None:
        if phase == ENCODER and not resumed and "G_ema" in self.networks:
            super().refresh_sampling_statistics()  # once: the statistics G_ema keeps through the encoder phase
        self.phase = phase

    def ema_pairs(self) -> list[tuple[str, str]]:
        return [] if self.phase == ENCODER else super().ema_pairs()

    def refresh_sampling_statistics(self, seed: int = 12345) -> None:
        if self.phase != ENCODER:  # the encoder learnt against fixed statistics: keep them
            super().refresh_sampling_statistics(seed)

    def loss_names(self) -> list[str]:
        return [*super().loss_names(), "loss_e", "e_residual", "e_feature"]

    def summary(self) -> dict[str, object]:
        return {**super().summary(), "normal_training_images": self.normal_description}

    # --- training --------------------------------------------------------------------------------------
    def anomaly_generator(self) -> nn.Module:
        """The generator the encoder inverts and the scores use: the EMA copy where there is one, else G."""
        return self._sampling_generator()

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        if self.phase == GAN:
            return super().train_step(batch, ctx)
        return self._encoder_step(batch, ctx)

    def _encoder_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        G, D, E = self.anomaly_generator(), self.networks["D"], self.networks["E"]
        x = batch["image"]
        with frozen(G), frozen(D), evaluating(G, D), ctx.autocast():
            reconstruction = G(E(x))
            residual = F.mse_loss(reconstruction.float(), x.float())
            loss = residual
            if self.config.encoder_loss == "izif":
                _, real_features = D(x, return_features=True)
                _, fake_features = D(reconstruction, return_features=True)
                feature = F.mse_loss(fake_features.float(), real_features.float().detach())
                loss = residual + self.config.kappa * feature
            else:
                feature = torch.zeros((), device=x.device)
        ctx.optimize("E", loss)
        return {"loss_e": loss.detach(), "e_residual": residual.detach(), "e_feature": feature.detach()}

    # --- scoring ---------------------------------------------------------------------------------------
    def _check_images(self, images: torch.Tensor) -> None:
        expected = (self.data_info.channels, self.train_size, self.train_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ConfigError(f"images of shape {tuple(images.shape[1:])} given to a model of {expected[0]} channel(s)"
                              f" at {expected[1]} x {expected[2]} px")

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        _, features = self.networks["D"](images, return_features=True)
        return features.float()

    @torch.no_grad()
    def fanogan_scores(self, images: torch.Tensor, batch_size: int = 64) -> AnomalyScores:
        """f-AnoGAN scores of ``images`` (N, C, H, W) in [-1, 1]: one encoder pass each (see the module doc)."""
        self._check_images(images)
        G, D, E = self.anomaly_generator(), self.networks["D"], self.networks["E"]
        parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        with evaluating(G, D, E):
            for start in range(0, images.shape[0], batch_size):
                x = images[start:start + batch_size].to(self.device).float()
                reconstruction = G(E(x)).float()
                residual = (x - reconstruction).pow(2).flatten(1).mean(1)
                feature = (self._features(x) - self._features(reconstruction)).pow(2).mean(1)
                parts.append((residual.cpu(), feature.cpu(), reconstruction.clamp(-1, 1).cpu()))
        residual, feature, reconstruction = (torch.cat(p) for p in zip(*parts, strict=True))
        return AnomalyScores(residual + self.config.kappa * feature, residual, feature, reconstruction)

    def anogan_scores(self, images: torch.Tensor, *, steps: int = 500, lam: float = 0.1, restarts: int = 1,
                      lr: float = 0.05, batch_size: int = 64, seed: int = 0,
                      on_batch: Callable[[int], None] | None = None,
                      history: list[torch.Tensor] | None = None) -> AnomalyScores:
        """AnoGAN scores of ``images``: a latent search per image with G and D frozen (see the module doc).

        Args:
            images: (N, C, H, W) in [-1, 1], the model's channels and size.
            steps: Gradient steps on z (the paper's Gamma = 500).
            lam: Weight lambda of the feature (discrimination) loss; the residual loss gets 1 - lambda.
            restarts: Starting points per image; the one with the lowest final loss is kept.
            lr: Adam learning rate of the search.
            batch_size: Images searched together (each keeps its own loss and optimiser state).
            seed: Seed of the starting points (their own generator: the global RNG is untouched).
            on_batch: Called with the number of images finished after each batch (progress bars).
            history: When given, the mean loss per step of the first batch is appended (for tests and plots).
        """
        self._check_images(images)
        if steps < 1 or restarts < 1 or not 0.0 <= lam <= 1.0:
            raise ConfigError(f"AnoGAN search needs steps >= 1, restarts >= 1 and 0 <= lambda <= 1 (got {steps}, "
                              f"{restarts}, {lam})")
        # Every image's starting points drawn up front (first starts of all images, then the extra restarts): an
        # image's score depends neither on the batch size nor, for its first start, on the number of restarts.
        generator = torch.Generator(device="cpu").manual_seed(seed)
        n = images.shape[0]
        starts = torch.cat([torch.randn(n, 1, self.latent_dim, generator=generator),
                            torch.randn(n, restarts - 1, self.latent_dim, generator=generator)], dim=1)
        results = []
        for start in range(0, images.shape[0], batch_size):
            x = images[start:start + batch_size].to(self.device).float()
            with torch.enable_grad():  # the search differentiates even when the caller is in no_grad
                results.append(self._search(x, starts[start:start + batch_size], lam, steps, lr,
                                            history if start == 0 else None))
            if on_batch is not None:
                on_batch(min(start + batch_size, images.shape[0]))
        score, residual, feature, reconstruction = (torch.cat(p) for p in zip(*results, strict=True))
        return AnomalyScores(score, residual, feature, reconstruction)

    def _search(self, x: torch.Tensor, starts: torch.Tensor, lam: float, steps: int, lr: float,
                history: list[torch.Tensor] | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One batch: every restart of every image searched at once; the best restart per image kept.

        ``starts`` (n, restarts, latent_dim) are the images' starting points."""
        G, D = self.anomaly_generator(), self.networks["D"]
        n, restarts = starts.shape[0], starts.shape[1]
        targets = x.repeat(restarts, 1, 1, 1)  # restart-major rows: row r * n + i is image i's restart r
        z = starts.transpose(0, 1).reshape(n * restarts, -1).to(self.device).requires_grad_(True)
        optimizer = torch.optim.Adam([z], lr=lr)
        with frozen(G), frozen(D), evaluating(G, D):
            with torch.no_grad():
                target_features = self._features(targets)
            for _ in range(steps):
                residual, feature, _ = self._anogan_parts(G, targets, target_features, z)
                loss = (1 - lam) * residual + lam * feature
                optimizer.zero_grad(set_to_none=True)
                loss.sum().backward()  # per-image losses: the sum's gradient for z_i is image i's own gradient
                optimizer.step()
                if history is not None:
                    history.append(loss.detach().mean().cpu())
            with torch.no_grad():
                residual, feature, reconstruction = self._anogan_parts(G, targets, target_features, z)
        loss = ((1 - lam) * residual + lam * feature).view(restarts, n)
        best = loss.argmin(dim=0) * n + torch.arange(n, device=loss.device)
        return (loss.min(dim=0).values.cpu(), residual[best].cpu(), feature[best].cpu(),
                reconstruction[best].clamp(-1, 1).cpu())

    def _anogan_parts(self, G: nn.Module, x: torch.Tensor, x_features: torch.Tensor, z: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image: sum |x - G(z)|, sum |f(x) - f(G(z))|, and G(z)."""
        reconstruction = G(z).float()
        residual = (x - reconstruction).abs().flatten(1).sum(1)
        feature = (x_features - self._features(reconstruction)).abs().sum(1)
        return residual, feature, reconstruction

    def score(self, images: torch.Tensor, method: str = "fanogan", batch_size: int = 64,
              **search: object) -> AnomalyScores:
        """Scores of ``images`` by ``method`` (fanogan or anogan; ``search`` options go to :meth:`anogan_scores`)."""
        if method == "fanogan":
            if search:
                raise ConfigError(f"{', '.join(search)}: AnoGAN search options, but the method is fanogan")
            return self.fanogan_scores(images, batch_size=batch_size)
        if method == "anogan":
            return self.anogan_scores(images, batch_size=batch_size, **search)  # type: ignore[arg-type]
        raise ConfigError(f"method must be one of {', '.join(METHODS)} (got {method!r})")

    # --- outputs ---------------------------------------------------------------------------------------
    def preview_inputs(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        inputs = super().preview_inputs(n, seed)
        if self._examples is not None:
            inputs["examples"] = self._examples
        return inputs

    @torch.no_grad()
    def preview(self, inputs: dict[str, torch.Tensor]) -> Preview | torch.Tensor:
        """GAN phase: samples; encoder phase: image | reconstruction G(E(x)) | residual map (scaled to [-1, 1])."""
        if self.phase != ENCODER or "examples" not in inputs:
            return super().preview(inputs)
        images = inputs["examples"].to(self.device)
        reconstruction = self.fanogan_scores(images).reconstruction.to(self.device)
        residual = residual_map(images, reconstruction).repeat(1, images.shape[1], 1, 1)
        return Preview(columns={"image": images, "reconstruction": reconstruction,
                                "residual": (residual - 1.0).clamp(-1, 1)})

"""BAGAN and BAGAN-GP: class-conditional GANs for imbalanced data, initialised from an autoencoder.

Both train in two phases (:meth:`phases`): ``autoencoder`` (``ae_steps`` steps) trains an encoder E and a decoder
on every class; when ``gan`` begins, one multivariate Gaussian per class is fitted to the encodings of that
class's training images, the generator G starts as a copy of the decoder and the discriminator's convolutional
body as a copy of E's. G then draws class-c latents z ~ N(mu_c, Sigma_c), so the minority classes borrow the
features every class taught the autoencoder. The Gaussians are buffers of ``networks["class_latents"]`` (saved in
every checkpoint, restored by ``synthmed.load`` for sampling); a run resumed inside ``gan`` neither refits them
nor copies weights again.

``bagan`` (Mariani et al. 2018, "BAGAN: Data Augmentation with Balancing GAN"; reference code IBM/BAGAN):

* unsupervised autoencoder, mean squared error; Adam lr 5e-5, betas (0.5, 0.999) for every network, latent 100,
  dropout 0.3 after every encoder activation (all as in ``balancing_gan.py``);
* the class Gaussians: mean and unbiased covariance (``np.cov``) of the encodings of each class;
* D: E's body with a K + 1-way linear head, the last output "fake". D step: the real batch labelled with its
  classes plus ceil(N / K) generated images of uniformly drawn classes labelled "fake" (the reference's
  ``fake_size``: the fake class as large as an average class), one cross-entropy; G step: N + ceil(N / K)
  images of uniformly drawn classes c, cross-entropy towards c with D frozen (the reference's default
  ``uniform`` class ratios).

``bagan-gp`` (Huang & Jafari 2021, "Enhanced balancing GAN: minority-class image generation"; reference code
GH920/improved-bagan-gp):

* supervised autoencoder: the decoder sees ``E(x) * embed(y)``, a learnt label embedding multiplied into the
  code (the reference's ``embedding_labeled_latent``); L1 loss ("mae"); Adam lr 2e-4, betas (0.5, 0.9),
  latent 128, 5 critic steps per generator step, gradient-penalty weight 10;
* G = embedding + decoder, initialised from the autoencoder's; the critic's body from E (no normalisation).

Where this implementation deviates, and why:

* Layouts (both): synthmed's DCGAN layouts (transposed convolutions with BatchNorm in the decoder, 4x4 stride-2
  convolutions in the encoder) instead of the reference networks (BAGAN: dense + upsampling + 5x5 convolutions,
  MNIST/CIFAR sizes only). Any DCGAN size from 16 to 128 px (28 px as 7-14-28), grey or RGB: what users of the
  reference asked for (IBM/BAGAN issue #12).
* Lengths in steps, not epochs; an EMA of G samples (its BatchNorm statistics re-estimated before sampling).
* Sampling from a class Gaussian uses a Cholesky factor with a small jitter
  (:func:`synthmed.nn.autoencoder.cholesky_with_jitter`) instead of numpy's SVD-based ``multivariate_normal``.
* BAGAN-GP latents: the reference feeds G N(0, I) latents in its GAN phase; here they come from the class
  Gaussians of the encodings, as in BAGAN, which is what the decoder saw in the autoencoder.
  ``latent_prior="normal"`` restores the reference.
* BAGAN-GP critic: the reference multiplies the flattened features by ``LeakyReLU(Dense(Embedding(y)))`` and reads
  them out with Dense(512) then Dense(1), a class-dependent linear read-out of the features; here the same
  family as a projection (Miyato & Koyama 2018), ``linear(h) + <embed(y), h>``.
* BAGAN-GP loss: the paper names WGAN-GP, the reference code trains with sigmoid cross-entropy (real, fake and
  real-with-a-wrong-label terms) plus a penalty at interpolates with alpha ~ N(0, 1). Here: the Wasserstein loss
  with Gulrajani et al.'s penalty (one alpha ~ U[0, 1] per sample), no wrong-label term.
* BAGAN-GP labels: the critic step generates images of the real batch's classes (the reference draws them
  uniformly). With a Wasserstein critic, real and fake label frequencies must match: otherwise the critic can
  raise its score by the label alone, which the penalty (on the image gradient) does not bound. The generator
  step draws classes uniformly, which is the balancing.
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from synthmed import losses as L
from synthmed.augment import diff_augment, parse_policy
from synthmed.data.dataset import DataInfo, ImageDataset
from synthmed.errors import ConfigError
from synthmed.nn.autoencoder import (
    ClassifierDiscriminator,
    ClassLatents,
    Encoder,
    LabelledDecoder,
    ProjectionCritic,
)
from synthmed.nn.batchnorm import recalibrate_batchnorm
from synthmed.nn.dcgan import DCGANGenerator
from synthmed.optim import adam
from synthmed.recipes.base import ConditionalGenerativeRecipe, Phase, Preview, register_recipe
from synthmed.recipes.step import StepContext, evaluating, frozen

AUTOENCODER, GAN = "autoencoder", "gan"

RECONSTRUCTION_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "mse": F.mse_loss,
    "l1": L.l1_loss,
}

LATENT_PRIORS = ("class", "normal")


@dataclass
class BaganConfig:
    """Options of the bagan recipe; the defaults are the BAGAN reference code's settings.

    Args:
        latent_dim: Length of the autoencoder's code, which is the generator's latent.
        g_channels: Width of the decoder and generator (channels of its last hidden layer, doubled at each lower
            resolution).
        d_channels: Width of the encoder and discriminator (channels of their first layer).
        ae_steps: Steps of the autoencoder phase; the GAN phase takes the rest of the run.
        reconstruction: Autoencoder loss: mse (the reference) or l1.
        dropout: Dropout after each encoder and discriminator activation (the reference: 0.3).
        lr_ae: Autoencoder learning rate (the reference: 5e-5 for every network).
        lr_g: Generator learning rate.
        lr_d: Discriminator learning rate.
        betas: Adam betas of the three optimisers, e.g. 0.5,0.999.
        diffaugment: DiffAugment policy for the discriminator's inputs, e.g. "translation,cutout"; "" disables it.
    """

    latent_dim: int = 100
    g_channels: int = 32
    d_channels: int = 32
    ae_steps: int = 2000
    reconstruction: str = "mse"
    dropout: float = 0.3
    lr_ae: float = 5e-5
    lr_g: float = 5e-5
    lr_d: float = 5e-5
    betas: tuple[float, float] = (0.5, 0.999)
    diffaugment: str = ""


@dataclass
class BaganGPConfig:
    """Options of the bagan-gp recipe; the defaults are the BAGAN-GP reference code's settings.

    Args:
        latent_dim: Length of the autoencoder's code, which is the generator's latent.
        g_channels: Width of the decoder and generator (channels of its last hidden layer, doubled at each lower
            resolution).
        d_channels: Width of the encoder and critic (channels of their first layer).
        ae_steps: Steps of the supervised-autoencoder phase; the GAN phase takes the rest of the run.
        reconstruction: Autoencoder loss: l1 (the reference's "mae") or mse.
        lr_ae: Autoencoder learning rate (the reference: 2e-4 for every network).
        lr_g: Generator learning rate.
        lr_d: Critic learning rate.
        betas: Adam betas of the three optimisers, e.g. 0.5,0.9.
        n_critic: Critic steps per generator step, each on a fresh real batch.
        gp_weight: Weight (lambda) of the WGAN-GP gradient penalty.
        latent_prior: Generator latents in the GAN phase: class (the Gaussian of each class's encodings, as BAGAN)
            or normal (N(0, I), as the BAGAN-GP reference code).
        diffaugment: DiffAugment policy for the critic's inputs, e.g. "translation,cutout"; "" disables it.
    """

    latent_dim: int = 128
    g_channels: int = 32
    d_channels: int = 32
    ae_steps: int = 2000
    reconstruction: str = "l1"
    lr_ae: float = 2e-4
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.9)
    n_critic: int = 5
    gp_weight: float = 10.0
    latent_prior: str = "class"
    diffaugment: str = ""


def _check_options(config: BaganConfig | BaganGPConfig) -> None:
    """One-line errors for option values that would fail later or silently do something else."""
    problems = [
        (config.reconstruction not in RECONSTRUCTION_LOSSES,
         f"reconstruction must be one of {', '.join(RECONSTRUCTION_LOSSES)} (got {config.reconstruction!r})"),
        (min(config.latent_dim, config.g_channels, config.d_channels) < 1,
         "latent_dim, g_channels and d_channels must be at least 1"),
        (config.ae_steps < 0, f"ae_steps must be 0 or more (got {config.ae_steps})"),
        (not 0.0 <= getattr(config, "dropout", 0.0) < 1.0,
         f"dropout must be in [0, 1) (got {getattr(config, 'dropout', 0.0)})"),
        (getattr(config, "n_critic", 1) < 1, f"n_critic must be at least 1 (got {getattr(config, 'n_critic', 1)})"),
        (getattr(config, "gp_weight", 0.0) < 0, f"gp_weight must be 0 or more (got {getattr(config, 'gp_weight', 0)})"),
        (getattr(config, "latent_prior", "class") not in LATENT_PRIORS,
         f"latent_prior must be one of {', '.join(LATENT_PRIORS)} (got {getattr(config, 'latent_prior', '')!r})"),
    ]
    for failed, message in problems:
        if failed:
            raise ConfigError(message)


class _BalancingGAN(ConditionalGenerativeRecipe):
    """What BAGAN and BAGAN-GP share: the autoencoder phase, the class Gaussians and the weight transfer at the
    start of the GAN phase, latents, EMA sampling and previews. Subclasses build the networks and the GAN step."""

    ema_sources = ("G",)
    prefers_channels_last = True
    #: Images encoded at once when the class Gaussians are fitted.
    encode_batch_size = 256
    #: The GAN phase's columns of ``losses.csv`` (after the autoencoder's ``loss_ae``).
    adversarial_loss_names: tuple[str, ...] = ()

    def __init__(self, config: Any, data_info: DataInfo) -> None:
        super().__init__(config, data_info)
        self.set_classes(data_info)
        _check_options(config)
        self.latent_dim = config.latent_dim
        self.reconstruction_loss = RECONSTRUCTION_LOSSES[config.reconstruction]
        try:
            self.augment_policy = ",".join(parse_policy(config.diffaugment))
            self._build_networks(data_info.channels, data_info.image_size)
        except ValueError as exc:  # bad sizes and policies surface as one-line configuration errors
            hint = " (resize with --size)" if "image_size" in str(exc) else ""
            raise ConfigError(f"recipe {self.name!r}: {exc}{hint}") from None
        self.networks["class_latents"] = ClassLatents(self.num_classes, self.latent_dim)
        self._fit_images: torch.Tensor | None = None
        self._fit_labels: torch.Tensor | None = None

    # --- what subclasses define -------------------------------------------------------------------------
    @abc.abstractmethod
    def _build_networks(self, channels: int, image_size: int) -> None:
        """Set ``networks`` E, decoder, G (the decoder's class) and D (with ``D.body`` of E's ``body`` class)."""

    @abc.abstractmethod
    def _reconstruct(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The autoencoder's output for ``images`` of classes ``labels``."""

    @abc.abstractmethod
    def _run_generator(self, G: nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """Images from generator ``G`` (G or its EMA copy) for latents ``z`` of classes ``labels``."""

    @abc.abstractmethod
    def _adversarial_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        """One step of the GAN phase."""

    def _single_input(self, G: nn.Module) -> nn.Module:
        """G as a module of one input (:func:`recalibrate_batchnorm` calls it so); see :meth:`_pack`."""
        return G

    def _pack(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return z

    # --- set-up ----------------------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        return [Phase(AUTOENCODER, self.config.ae_steps), Phase(GAN)]

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg, nets = self.config, self.networks
        betas = tuple(cfg.betas)
        autoencoder = [*nets["E"].parameters(), *nets["decoder"].parameters()]
        return {
            "AE": adam(autoencoder, lr=float(cfg.lr_ae), betas=betas, device=self.device),  # type: ignore[arg-type]
            "G": adam(nets["G"].parameters(), lr=float(cfg.lr_g), betas=betas, device=self.device),  # type: ignore[arg-type]
            "D": adam(nets["D"].parameters(), lr=float(cfg.lr_d), betas=betas, device=self.device),  # type: ignore[arg-type]
        }

    def prepare_data(self, data: ImageDataset) -> ImageDataset:
        # Kept for the fit of the class Gaussians when the GAN phase begins (and for the reconstruction preview).
        self._fit_images, self._fit_labels = data.images, data.labels
        return data

    def start_phase(self, phase: str, resumed: bool = False) -> None:
        if phase != GAN or resumed:
            return  # resumed inside the GAN phase: the checkpoint holds the Gaussians and the trained G and D
        self._fit_class_latents()
        self._initialise_gan()

    def _fit_class_latents(self) -> None:
        if self._fit_images is None or self._fit_labels is None:
            raise RuntimeError("prepare_data must see the labelled training set before the gan phase begins")
        encodings = self._encode(self._fit_images)
        missing = self.networks["class_latents"].fit(encodings, self._fit_labels)
        if missing:
            names = ", ".join(self.class_names[k] for k in missing)
            warnings.warn(f"class(es) {names} have no training images: their latents come from the Gaussian of "
                          "all classes' encodings", stacklevel=2)

    @torch.no_grad()
    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        """E's codes (N, latent_dim) of ``images``, in eval mode (no dropout), in batches on the recipe's device."""
        E = self.networks["E"]
        with evaluating(E):
            chunks = [E(images[i:i + self.encode_batch_size].to(self.device)).float()
                      for i in range(0, images.shape[0], self.encode_batch_size)]
        return torch.cat(chunks)

    @torch.no_grad()
    def _initialise_gan(self) -> None:
        """G (and its EMA copy) <- decoder; D's convolutional body <- E's; D's head stays freshly initialised."""
        nets = self.networks
        decoder_state = nets["decoder"].state_dict()
        nets["G"].load_state_dict(decoder_state)
        if "G_ema" in nets:
            # Else the average would start from G's random weights, weighted by the late step's EMA beta.
            nets["G_ema"].load_state_dict(decoder_state)
        nets["D"].body.load_state_dict(nets["E"].body.state_dict())

    def loss_names(self) -> list[str]:
        return ["loss_ae", *self.adversarial_loss_names]

    # --- training --------------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        if ctx.phase == AUTOENCODER:
            return self._autoencoder_step(batch, ctx)
        return self._adversarial_step(batch, ctx)

    def _autoencoder_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        images = batch["image"]
        with ctx.autocast():
            reconstruction = self._reconstruct(images, batch["label"])
        loss = self.reconstruction_loss(reconstruction.float(), images.float())
        ctx.optimize("AE", loss)
        return {"loss_ae": loss.detach()}

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.augment_policy) if self.augment_policy else x

    def _uniform_labels(self, n: int, device: torch.device) -> torch.Tensor:
        """Classes drawn uniformly: every class gets as many generated images (the balancing of BAGAN)."""
        return torch.randint(self.num_classes, (n,), device=device)

    def latents_from_noise(self, labels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Class latents from standard-normal ``noise``: z = mu_c + L_c noise (L_c L_c^T ~ Sigma_c)."""
        return self.networks["class_latents"].sample(labels, noise)

    def _training_latents(self, labels: torch.Tensor) -> torch.Tensor:
        """Latents of classes ``labels`` from the global RNG on their device (fp32, outside autocast)."""
        noise = torch.randn(labels.shape[0], self.latent_dim, device=labels.device)
        return self.latents_from_noise(labels, noise)

    # --- outputs ---------------------------------------------------------------------------------------
    def _sampling_generator(self) -> nn.Module:
        return self.networks["G_ema"] if "G_ema" in self.networks else self.networks["G"]

    @torch.no_grad()
    def generate(self, z: torch.Tensor, **conditions: torch.Tensor) -> torch.Tensor:
        G = self._sampling_generator()
        with evaluating(G):
            images = self._run_generator(G, z.to(self.device), conditions.get("label"))
        return images.float().clamp(-1, 1)

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, batch_size: int = 256,
               labels: torch.Tensor | int | None = None) -> torch.Tensor:
        if not bool(self.networks["class_latents"].fitted):
            warnings.warn(f"this {self.name} run has not reached its gan phase (after ae_steps="
                          f"{self.config.ae_steps}): its generator is untrained", stacklevel=2)
        return super().sample(n, seed=seed, batch_size=batch_size, labels=labels)

    def refresh_sampling_statistics(self, seed: int = 12345) -> None:
        """Re-estimate the EMA generator's BatchNorm statistics from its own outputs ("standing statistics"):
        the EMA averages weights, but the running statistics belong to the raw generator's weights."""
        if "G_ema" not in self.networks:
            return
        gen = torch.Generator(device="cpu").manual_seed(seed)

        def calibration_batch() -> torch.Tensor:
            labels = torch.randint(self.num_classes, (64,), generator=gen)
            return self._pack(self.draw_latents(labels, gen), labels).to(self.device)

        recalibrate_batchnorm(self._single_input(self.networks["G_ema"]), calibration_batch)

    def preview_inputs(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        """One row per class. Noise, not latents: these are made before the Gaussians are fitted, so each
        preview maps them through the Gaussians as they are then; plus real images for reconstructions."""
        per_row = max(1, n // self.num_classes)
        labels = torch.arange(self.num_classes).repeat_interleave(per_row)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        inputs = {"noise": torch.randn(labels.shape[0], self.latent_dim, generator=gen), "label": labels}
        if self._fit_images is not None and self._fit_labels is not None:
            known = self._fit_labels.cpu()
            per_class = max(1, 16 // self.num_classes)
            index = torch.cat([torch.nonzero(known == k).flatten()[:per_class] for k in range(self.num_classes)])
            inputs.update(examples=self._fit_images.index_select(0, index.to(self._fit_images.device)).cpu(),
                          example_labels=known[index])
        return inputs

    @torch.no_grad()
    def preview(self, inputs: dict[str, torch.Tensor]) -> Preview:
        """Autoencoder phase: image | reconstruction; GAN phase: a grid with one row per class."""
        if not bool(self.networks["class_latents"].fitted) and "examples" in inputs:
            images = inputs["examples"].to(self.device)
            with evaluating(self.networks["E"], self.networks["decoder"]):
                reconstruction = self._reconstruct(images, inputs["example_labels"].to(self.device))
            return Preview(columns={"image": images, "reconstruction": reconstruction.float().clamp(-1, 1)})
        latents = self.latents_from_noise(inputs["label"], inputs["noise"])
        return self.class_grid({"z": latents, "label": inputs["label"]})


@register_recipe
class BAGAN(_BalancingGAN):
    """BAGAN: unsupervised autoencoder, class Gaussians, a (K + 1)-way discriminator."""

    name = "bagan"
    Config = BaganConfig
    adversarial_loss_names = ("loss_d", "loss_g", "d_real_accuracy", "d_fake_accuracy")

    def _build_networks(self, channels: int, image_size: int) -> None:
        cfg = self.config
        self.networks["E"] = Encoder(cfg.latent_dim, channels, image_size, cfg.d_channels, cfg.dropout)
        self.networks["decoder"] = DCGANGenerator(cfg.latent_dim, channels, image_size, cfg.g_channels)
        self.networks["G"] = DCGANGenerator(cfg.latent_dim, channels, image_size, cfg.g_channels)
        self.networks["D"] = ClassifierDiscriminator(self.num_classes + 1, channels, image_size, cfg.d_channels,
                                                     cfg.dropout)

    def _reconstruct(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.networks["decoder"](self.networks["E"](images))  # BAGAN's autoencoder ignores the labels

    def _run_generator(self, G: nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return G(z)  # the class is in the latent (drawn from its Gaussian)

    def _adversarial_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        G, D = self.networks["G"], self.networks["D"]
        real, labels = batch["image"], batch["label"]
        n_real, fake_class = real.shape[0], self.num_classes
        n_fake = -(-n_real // self.num_classes)  # ceil(N / K): "fake" as large as an average class
        fake_labels = self._uniform_labels(n_fake, real.device)
        z = self._training_latents(fake_labels)
        with ctx.autocast():
            with torch.no_grad():
                fake = G(z).to(real.dtype)
            logits = D(self._augment(torch.cat([real, fake]))).float()
            targets = torch.cat([labels, torch.full_like(fake_labels, fake_class)])
            loss_d = F.cross_entropy(logits, targets)
        ctx.optimize("D", loss_d)

        g_labels = self._uniform_labels(n_real + n_fake, real.device)
        z = self._training_latents(g_labels)
        with frozen(D):  # D's weight gradients would be thrown away
            with ctx.autocast():
                loss_g = F.cross_entropy(D(self._augment(G(z))).float(), g_labels)
            ctx.optimize("G", loss_g)

        predicted = logits.detach().argmax(1)
        return {
            "loss_d": loss_d.detach(),
            "loss_g": loss_g.detach(),
            "d_real_accuracy": (predicted[:n_real] == labels).float().mean(),
            "d_fake_accuracy": (predicted[n_real:] == fake_class).float().mean(),
        }


class _LatentAndLabel(nn.Module):
    """A (z, label) generator called with one packed tensor [z | label] (:func:`recalibrate_batchnorm` passes one)."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        return self.generator(packed[:, :-1], packed[:, -1].round().long())


@register_recipe
class BAGANGP(_BalancingGAN):
    """BAGAN-GP: supervised autoencoder (label embedding in the code), class Gaussians, a WGAN-GP projection critic."""

    name = "bagan-gp"
    Config = BaganGPConfig
    adversarial_loss_names = ("loss_d", "loss_g", "gp", "wasserstein")

    def _build_networks(self, channels: int, image_size: int) -> None:
        cfg, classes = self.config, self.num_classes
        self.networks["E"] = Encoder(cfg.latent_dim, channels, image_size, cfg.d_channels)
        self.networks["decoder"] = LabelledDecoder(classes, cfg.latent_dim, channels, image_size, cfg.g_channels)
        self.networks["G"] = LabelledDecoder(classes, cfg.latent_dim, channels, image_size, cfg.g_channels)
        self.networks["D"] = ProjectionCritic(classes, channels, image_size, cfg.d_channels)

    def _reconstruct(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.networks["decoder"](self.networks["E"](images), labels)

    def _run_generator(self, G: nn.Module, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:  # e.g. latent walks: classes in turn, as sample() does by default
            labels = torch.arange(z.shape[0]) % self.num_classes
        return G(z, labels.to(z.device))

    def latents_from_noise(self, labels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if self.config.latent_prior == "normal":
            return noise
        return super().latents_from_noise(labels, noise)

    def _single_input(self, G: nn.Module) -> nn.Module:
        return _LatentAndLabel(G)

    def _pack(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.cat([z, labels.to(z).unsqueeze(1)], dim=1)

    def _critic_step(self, real: torch.Tensor, labels: torch.Tensor, ctx: StepContext
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One critic update on ``real`` and images of the same classes; returns (loss, penalty, W estimate)."""
        G, D = self.networks["G"], self.networks["D"]
        z = self._training_latents(labels)
        with ctx.autocast():
            with torch.no_grad():
                fake = G(z, labels)
            real_in, fake_in = self._augment(real), self._augment(fake)
            real_scores, fake_scores = D(real_in, labels).float(), D(fake_in, labels).float()
        # The penalty runs in fp32 (gradient norms are too coarse in bf16); interpolates keep the pair's class.
        gp = L.gradient_penalty(lambda x: D(x, labels), real_in.float(), fake_in.float())
        loss_d = L.d_loss_wasserstein(real_scores, fake_scores) + self.config.gp_weight * gp
        ctx.optimize("D", loss_d)
        return loss_d.detach(), gp.detach(), (real_scores.mean() - fake_scores.mean()).detach()

    def _adversarial_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        G, D = self.networks["G"], self.networks["D"]
        for i in range(self.config.n_critic):  # Gulrajani et al.: a fresh real batch for every critic step
            real_batch = batch if i == 0 else ctx.draw_batch()
            loss_d, gp, distance = self._critic_step(real_batch["image"], real_batch["label"], ctx)

        g_labels = self._uniform_labels(batch["image"].shape[0], batch["image"].device)
        z = self._training_latents(g_labels)
        with frozen(D):
            with ctx.autocast():
                loss_g = L.g_loss_wasserstein(D(self._augment(G(z, g_labels)), g_labels).float())
            ctx.optimize("G", loss_g)
        return {"loss_d": loss_d, "loss_g": loss_g.detach(), "gp": gp, "wasserstein": distance}

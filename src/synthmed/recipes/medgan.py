"""medGAN and the baselines of its paper: synthetic patient records of binary or count codes.

Choi et al. 2017, "Generating Multi-label Discrete Patient Records using Generative Adversarial Networks"
(reference code mp2893/medgan). A record is a vector of D codes (diagnoses, drugs): 0/1 presence or counts.
Training runs in two phases (:meth:`MedGAN.phases`):

* ``autoencoder`` (``ae_steps``): an encoder and a decoder of one layer each learn to reconstruct real records
  (binary: tanh code, sigmoid output, cross-entropy summed over codes; count: ReLU, mean squared error);
* ``gan``: a generator writes codes into the autoencoder's latent space; the decoder turns them into records,
  which the discriminator judges against real records. The decoder keeps learning with the generator, as in
  the reference (its optimiser updates the generator's and the decoder's variables).

The ``variant`` option gives the paper's comparison (sec. 4, "GAN, GAN_P, GAN_PD, GAN_PA, medGAN"):

=========  ===================  =========================  ===================================
variant    autoencoder phase    discriminator sees         generator layers
=========  ===================  =========================  ===================================
gan        none (decoder from   each record                ReLU
           scratch, with G)
gan-p      pre-trained          each record                ReLU
gan-pd     pre-trained          + minibatch discrimination ReLU
gan-pa     pre-trained          + the batch's mean record  ReLU
medgan     pre-trained          + the batch's mean record  ReLU + batch norm + shortcuts
=========  ===================  =========================  ===================================

Reference settings kept: embedding and noise 128, generator (128, 128) + the code layer, discriminator
(256, 128), Adam lr 1e-3 with TF's betas (0.9, 0.999), L2 weight 1e-3 on every network (as Adam weight decay,
which is the gradient of TF's ``l2_regularizer``), batch-norm decay 0.99, two discriminator updates per
generator update (``--n_discriminator_update 2``), each on a fresh batch. Deviations, and why:

* lengths in steps, not epochs, and one batch size for both phases (the reference: 100 pre-training, 1,000 GAN);
  ``--batch-size`` sets it: with a few thousand patients, 512 to 1,000 is the reference's regime;
* ``gan-pd``'s minibatch discrimination (Salimans et al. 2016) looks at the records themselves, where
  averaging does, so the two variants differ only in the batch statistic (the paper does not say where), and
  compares each record with the others of its group of 64 (the minibatch sizes Salimans et al. used): over a
  whole batch of 512 its cost, quadratic in the batch, made one step take 18 s on a CPU core;
* the generator's batch norm uses batch statistics in the discriminator step too (the reference switches it to
  its moving averages there); sampling re-estimates the statistics from the generator's own outputs, as the
  reference's 1,000-batch "burn-in" before generating;
* binary outputs are probabilities; records come from rounding (the paper) or drawing (``sampling="draw"``);
* like every synthmed recipe, samples come from exponential moving averages of the generator's and the decoder's
  weights (``--ema-beta``, default 0.999; 0 samples the raw networks, as the reference).

Counts are never binarised: ``values=binary`` on records that hold counts is refused (the reference clipped them
to [0, 1] silently; medGAN pull request #17). ``values=auto`` takes the kind the data layer found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from synthmed import losses as L
from synthmed.data.dataset import DataInfo
from synthmed.data.sets import TensorSet
from synthmed.errors import ConfigError
from synthmed.nn.batchnorm import recalibrate_batchnorm
from synthmed.nn.records import RecordDecoder, RecordDiscriminator, RecordEncoder, RecordGenerator
from synthmed.optim import adam
from synthmed.recipes.base import Phase, Preview, RecordsRecipe, register_recipe
from synthmed.recipes.step import StepContext, evaluating, frozen

AUTOENCODER, GAN = "autoencoder", "gan"

#: variant -> (pre-trained autoencoder, discriminator's batch features, generator batch norm + shortcuts)
VARIANTS: dict[str, tuple[bool, str, bool]] = {
    "gan": (False, "none", False),
    "gan-p": (True, "none", False),
    "gan-pd": (True, "discrimination", False),
    "gan-pa": (True, "averaging", False),
    "medgan": (True, "averaging", True),
}
VALUES = ("auto", "binary", "count")


@dataclass
class MedGANConfig:
    """Options of the medgan recipe; the defaults are the medGAN reference code's.

    Args:
        variant: gan (no pre-training), gan-p (a pre-trained autoencoder), gan-pd (gan-p + minibatch
            discrimination), gan-pa (gan-p + minibatch averaging) or medgan (gan-pa + batch norm and shortcuts in G).
        values: binary (0/1 codes), count, or auto (what the data holds). Counts are never binarised.
        embedding_dim: Width of the autoencoder's code, which the generator writes.
        noise_dim: Length of the generator's input noise (medgan: equal to the generator widths, for shortcuts).
        generator_dims: Widths of the generator's hidden layers, e.g. 128,128 (a layer to embedding_dim follows).
        discriminator_dims: Widths of the discriminator's hidden layers, e.g. 256,128.
        ae_steps: Steps of the autoencoder phase (not used by variant gan); the GAN phase takes the rest.
        lr_ae: Autoencoder learning rate (Adam).
        lr_g: Generator (and decoder) learning rate in the GAN phase.
        lr_d: Discriminator learning rate.
        betas: Adam betas of every optimiser, e.g. 0.9,0.999 (TensorFlow's defaults, as the reference).
        l2: L2 weight on every network's parameters (Adam weight decay).
        n_critic: Discriminator updates per generator update, each on a fresh real batch.
        dropout: Dropout after each discriminator layer (the reference: none).
    """

    variant: str = "medgan"
    values: str = "auto"
    embedding_dim: int = 128
    noise_dim: int = 128
    generator_dims: tuple[int, ...] = (128, 128)
    discriminator_dims: tuple[int, ...] = (256, 128)
    ae_steps: int = 1000
    lr_ae: float = 1e-3
    lr_g: float = 1e-3
    lr_d: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    l2: float = 1e-3
    n_critic: int = 2
    dropout: float = 0.0


def _check_options(config: MedGANConfig) -> None:
    problems = [
        (config.variant not in VARIANTS, f"variant must be one of {', '.join(VARIANTS)} (got {config.variant!r})"),
        (config.values not in VALUES, f"values must be one of {', '.join(VALUES)} (got {config.values!r})"),
        (min(config.embedding_dim, config.noise_dim, *config.generator_dims, *config.discriminator_dims) < 1,
         "embedding_dim, noise_dim and the layer widths must be at least 1"),
        (config.ae_steps < 0, f"ae_steps must be 0 or more (got {config.ae_steps})"),
        (config.n_critic < 1, f"n_critic must be at least 1 (got {config.n_critic})"),
        (config.l2 < 0, f"l2 must be 0 or more (got {config.l2})"),
        (not 0.0 <= config.dropout < 1.0, f"dropout must be in [0, 1) (got {config.dropout})"),
    ]
    problems += [
        (min(config.lr_ae, config.lr_g, config.lr_d) <= 0, "lr_ae, lr_g and lr_d must be positive"),
        (len(config.betas) != 2 or not all(0.0 <= b < 1.0 for b in config.betas),
         f"betas must be two numbers in [0, 1) (got {','.join(map(str, config.betas))})"),
    ]
    for failed, message in problems:
        if failed:
            raise ConfigError(message)
    shortcuts = VARIANTS[config.variant][2]
    widths = {config.noise_dim, *config.generator_dims, config.embedding_dim}
    if shortcuts and len(widths) > 1:
        raise ConfigError(f"variant {config.variant!r} adds each generator layer's input to its output (shortcuts): "
                          f"noise_dim, generator_dims and embedding_dim must be equal (got {config.noise_dim}, "
                          f"{','.join(map(str, config.generator_dims))}, {config.embedding_dim})")


def _resolve_values(config: MedGANConfig, data_info: DataInfo) -> str:
    found = str(data_info.vocabulary.get("values", ""))
    if config.values == "auto":
        return found or "binary"  # unknown here: prepare_data checks the records themselves
    if config.values == "binary" and found == "count":
        raise ConfigError(f"{data_info.source or 'the records'} hold counts: values=binary would binarise them; "
                          "train with values=count, or extract binary records (synthmed ehr extract --values binary)")
    return config.values


@register_recipe
class MedGAN(RecordsRecipe):
    """medGAN (Choi et al. 2017) and its paper's baselines on binary or count records."""

    name = "medgan"
    Config = MedGANConfig
    ema_sources = ("G", "decoder")
    validation_metric = "val_prevalence_r"
    #: Records generated for a preview's and a validation score's code frequencies.
    frequency_samples = 2000

    def __init__(self, config: MedGANConfig, data_info: DataInfo) -> None:
        super().__init__(config, data_info)
        _check_options(config)
        if not data_info.columns:
            raise ConfigError("recipe 'medgan' needs records with named code columns (a CSV or parquet matrix)")
        self._values = _resolve_values(config, data_info)
        self.latent_dim = config.noise_dim
        self.pretrained, batch_features, residual = VARIANTS[config.variant]
        record_dim, embedding = len(data_info.columns), config.embedding_dim
        self.networks["E"] = RecordEncoder(record_dim, embedding, values=self._values)
        self.networks["decoder"] = RecordDecoder(embedding, record_dim, values=self._values)
        self.networks["G"] = RecordGenerator(config.noise_dim, embedding, config.generator_dims, self._values,
                                             batch_norm=residual, shortcut=residual)
        self.networks["D"] = RecordDiscriminator(record_dim, config.discriminator_dims, batch_features,
                                                 config.dropout)
        self._real_frequencies: torch.Tensor | None = None
        self._examples: torch.Tensor | None = None
        self._phase = self.phases()[0].name
        self._training_records: int | None = None

    @property
    def values(self) -> str:
        return self._values

    @property
    def generator_trained(self) -> bool:
        return self._phase == GAN

    # --- set-up ----------------------------------------------------------------------------------------
    def phases(self) -> list[Phase]:
        if not self.pretrained:
            return [Phase(GAN)]
        return [Phase(AUTOENCODER, self.config.ae_steps), Phase(GAN)]

    def configure_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        cfg, nets = self.config, self.networks
        betas, decay = tuple(cfg.betas), float(cfg.l2)

        def make(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
            return adam(params, lr=float(lr), betas=betas, device=self.device, weight_decay=decay)  # type: ignore[arg-type]

        return {
            "AE": make([*nets["E"].parameters(), *nets["decoder"].parameters()], cfg.lr_ae),
            # The decoder learns on with the generator (the reference's var_list = g_vars + decodeVariables).
            "G": make([*nets["G"].parameters(), *nets["decoder"].parameters()], cfg.lr_g),
            "D": make(list(nets["D"].parameters()), cfg.lr_d),
        }

    def prepare_data(self, data: TensorSet) -> TensorSet:
        records = data.tensors["record"]
        not_binary = ((records != 0) & (records != 1)).any(0)
        if self._values == "binary" and bool(not_binary.any()):
            column = int(not_binary.nonzero()[0])
            raise ConfigError(f"{self.data_info.source or 'the records'}: column {self.data_info.columns[column]!r} "
                              f"holds {float(records[:, column].max()):g}: values=binary needs 0/1 records; train "
                              "with values=count (counts are never binarised)")
        self._real_frequencies = (records > 0).float().mean(0).cpu()
        self._training_records = int(records.shape[0])
        self._examples = records[:512].cpu()
        return data

    def loss_names(self) -> list[str]:
        return ["loss_ae", "loss_d", "loss_g", "d_accuracy"]

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "values": self._values, "variant": self.config.variant,
                "training_records": self._training_records, "codes": len(self.data_info.columns)}

    # --- training --------------------------------------------------------------------------------------
    def reconstruction_loss(self, records: torch.Tensor) -> torch.Tensor:
        """The reference's autoencoder loss: binary, cross-entropy summed over codes and averaged over records;
        count, the mean squared error."""
        raw = self.networks["decoder"](self.networks["E"](records))
        if self._values == "binary":
            return F.binary_cross_entropy_with_logits(raw, records, reduction="none").sum(1).mean()
        return F.mse_loss(torch.relu(raw), records)

    def train_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        if ctx.phase == AUTOENCODER:
            with ctx.autocast():
                loss = self.reconstruction_loss(batch["record"].float())
            ctx.optimize("AE", loss)
            return {"loss_ae": loss.detach()}
        return self._adversarial_step(batch, ctx)

    def _fake(self, n: int, device: torch.device) -> torch.Tensor:
        return self.networks["decoder"].values(self.networks["G"](torch.randn(n, self.latent_dim, device=device)))

    def _adversarial_step(self, batch: dict[str, torch.Tensor], ctx: StepContext) -> dict[str, torch.Tensor]:
        D, n = self.networks["D"], batch["record"].shape[0]
        for i in range(self.config.n_critic):
            real = (batch if i == 0 else ctx.draw_batch())["record"]
            with ctx.autocast():
                with torch.no_grad():
                    fake = self._fake(real.shape[0], real.device).to(real.dtype)
                real_logits, fake_logits = D(real).float(), D(fake).float()
                loss_d = L.d_loss_bce(real_logits, fake_logits)
            ctx.optimize("D", loss_d)
        with frozen(D):  # D's weight gradients would be thrown away
            with ctx.autocast():
                loss_g = L.g_loss_nonsaturating(D(self._fake(n, real.device)).float())
            ctx.optimize("G", loss_g)
        accuracy = torch.cat([real_logits.detach() > 0, fake_logits.detach() <= 0]).float().mean()
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), "d_accuracy": accuracy}

    # --- outputs ---------------------------------------------------------------------------------------
    def _sampling_network(self, name: str) -> torch.nn.Module:
        return self.networks[f"{name}_ema"] if f"{name}_ema" in self.networks else self.networks[name]

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        G, decoder = self._sampling_network("G"), self._sampling_network("decoder")
        with evaluating(G, decoder):
            return decoder.values(G(z.to(self.device))).float()

    def refresh_sampling_statistics(self, seed: int = 12345) -> None:
        """Re-estimate the sampling generator's batch-norm statistics from its own outputs (the reference's
        burn-in before generating; for an EMA copy the running statistics belong to the raw weights)."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        recalibrate_batchnorm(self._sampling_network("G"),
                              lambda: torch.randn(1000, self.latent_dim, generator=gen).to(self.device))

    def preview_inputs(self, n: int, seed: int) -> dict[str, torch.Tensor]:
        """Noise for :attr:`frequency_samples` records: a frequency needs more records than a grid has images."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return {"z": torch.randn(self.frequency_samples, self.latent_dim, generator=gen)}

    @torch.no_grad()
    def preview(self, inputs: dict[str, torch.Tensor]) -> Preview:
        """Each code's frequency in synthetic records against the training records (in the autoencoder phase:
        in the reconstructions of training records)."""
        if self._real_frequencies is None or self._examples is None:
            raise RuntimeError("prepare_data must see the training records before a preview")
        if self._phase != GAN:
            E, decoder = self.networks["E"], self.networks["decoder"]
            with evaluating(E, decoder):
                made = decoder.values(E(self._examples.to(self.device)))
            label = "reconstructed"
        else:
            self.refresh_sampling_statistics()
            made, label = self.generate(inputs["z"]), "synthetic"
        # Presence as rounding makes records (sample(sampling="round")): p >= 0.5, or a count that rounds to >= 1.
        synthetic = (made >= 0.5).float().mean(0).cpu()
        return Preview(frequencies={"real": self._real_frequencies, label: synthetic},
                       names=tuple(self.data_info.columns))

    def start_phase(self, phase: str, resumed: bool = False) -> None:
        self._phase = phase  # previews show reconstructions until the generator trains

    @torch.no_grad()
    def validation_score(self, data: TensorSet) -> float:
        """Pearson r between the codes' frequencies in the validation records and in as many synthetic records
        (at least :attr:`frequency_samples`), seed 0: medGAN's dimension-wise probability.

        Args:
            data: the validation split (records).
        """
        real = (data.tensors["record"] > 0).float().mean(0)
        self.refresh_sampling_statistics()
        synthetic = (self.sample(max(len(data), self.frequency_samples), seed=0) > 0).float().mean(0)
        stacked = torch.stack([real.cpu(), synthetic])
        if bool((stacked.std(1) == 0).any()):
            return 0.0  # a constant frequency vector (e.g. nothing generated) has no correlation
        return float(torch.corrcoef(stacked)[0, 1])

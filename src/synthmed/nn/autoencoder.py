"""Encoders, the networks built on their features, and class-conditional latent Gaussians (BAGAN, BAGAN-GP).

BAGAN-style recipes pre-train an autoencoder and then initialise a GAN from it: the generator from the decoder,
the discriminator from the encoder's convolutional body. So the encoder is split into a :class:`ConvFeatures`
body (strided convolutions of the DCGAN discriminator's layout, 28 px as 7-14-28) and a head, and the
discriminators here reuse that body with heads of their own. The decoder is synthmed's
:class:`~synthmed.nn.dcgan.DCGANGenerator` (or :class:`LabelledDecoder` around it), so decoder and generator are
the same class and one ``load_state_dict`` copies the weights.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from synthmed.nn.dcgan import DCGANGenerator
from synthmed.nn.init import init_dcgan_weights
from synthmed.nn.layers import conv_cls, make_norm, resolve_image_size


class ConvFeatures(nn.Module):
    """Image (N, C, S, S) -> flattened features (N, num_features) by 4x4 stride-2 convolutions.

    The DCGAN discriminator's body: Conv + LeakyReLU(0.2), then [Conv + norm + LeakyReLU(0.2)] down to
    bottom^2 (4, or 7 for 28 px), widths ``base * min(2**k, max_multiplier)``. ``dropout`` after each
    activation (the BAGAN reference encoder uses 0.3). No norm by default: BAGAN's reference encoder has none,
    and a WGAN-GP critic built on this body must not couple samples.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 64, base_channels: int = 64, norm: str = "none",
                 dropout: float = 0.0, spatial_dims: int = 2, max_multiplier: int = 8) -> None:
        super().__init__()
        bottom, doublings = resolve_image_size(image_size)
        conv = conv_cls(spatial_dims)
        bias = norm == "none"  # a norm's affine shift makes a conv bias redundant
        chans = [base_channels * min(2**k, max_multiplier) for k in range(doublings)]  # finest first
        layers: list[nn.Module] = [conv(in_channels, chans[0], 4, 2, 1, bias=bias), nn.LeakyReLU(0.2, True)]
        layers += [nn.Dropout(dropout)] if dropout > 0 else []
        for c_in, c_out in pairwise(chans):
            layers += [conv(c_in, c_out, 4, 2, 1, bias=bias), make_norm(norm, c_out, spatial_dims),
                       nn.LeakyReLU(0.2, True)]
            layers += [nn.Dropout(dropout)] if dropout > 0 else []
        self.net = nn.Sequential(*layers)
        self.num_features = chans[-1] * bottom**spatial_dims
        init_dcgan_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


class Encoder(nn.Module):
    """Image -> latent (N, latent_dim): :class:`ConvFeatures`, then one linear layer (a linear code, as in BAGAN;
    f-AnoGAN's encoder adds batch norm: ``norm="batch"``)."""

    def __init__(self, latent_dim: int, in_channels: int = 1, image_size: int = 64, base_channels: int = 64,
                 dropout: float = 0.0, norm: str = "none") -> None:
        super().__init__()
        self.body = ConvFeatures(in_channels, image_size, base_channels, norm=norm, dropout=dropout)
        self.to_latent = nn.Linear(self.body.num_features, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.body(x))


class ClassifierDiscriminator(nn.Module):
    """Image -> logits (N, num_outputs): an encoder body with a linear head (BAGAN: K classes + "fake")."""

    def __init__(self, num_outputs: int, in_channels: int = 1, image_size: int = 64, base_channels: int = 64,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.body = ConvFeatures(in_channels, image_size, base_channels, dropout=dropout)
        self.head = nn.Linear(self.body.num_features, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class ProjectionCritic(nn.Module):
    """(image, label) -> score (N,): ``linear(h) + <embed(label), h>`` on the encoder body's features ``h``.

    The projection discriminator of Miyato & Koyama (2018): the class enters as a class-dependent linear
    read-out of the features, which keeps samples independent (what the WGAN-GP penalty assumes).
    """

    def __init__(self, num_classes: int, in_channels: int = 1, image_size: int = 64, base_channels: int = 64) -> None:
        super().__init__()
        self.body = ConvFeatures(in_channels, image_size, base_channels)
        self.linear = nn.Linear(self.body.num_features, 1)
        self.embed = nn.Embedding(num_classes, self.body.num_features)
        # Glorot-uniform class embeddings, as in the authors' SNGAN projection code: N(0, 1) entries over
        # thousands of features would start the critic at scores in the hundreds.
        nn.init.xavier_uniform_(self.embed.weight)

    def forward(self, x: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.linear(h).squeeze(1) + (self.embed(label) * h).sum(1)


class LabelledDecoder(nn.Module):
    """(z, label) -> image: a DCGAN decoder of ``z * embed(label)`` (BAGAN-GP's label embedding in the latent).

    The BAGAN-GP reference code multiplies the latent elementwise by a learnt ``Embedding(K, latent_dim)`` of the
    label before the decoder, in the supervised autoencoder and in the generator alike.
    """

    def __init__(self, num_classes: int, latent_dim: int, out_channels: int = 1, image_size: int = 64,
                 base_channels: int = 64) -> None:
        super().__init__()
        self.embed = nn.Embedding(num_classes, latent_dim)
        self.decoder = DCGANGenerator(latent_dim, out_channels, image_size, base_channels)

    def forward(self, z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.decoder(z * self.embed(label))


class ClassLatents(nn.Module):
    """One multivariate Gaussian N(mean_k, covariance_k) per class in an autoencoder's latent space.

    Buffers, so they are saved and restored with the networks: ``mean`` (K, D), ``covariance`` (K, D, D) (the
    unbiased sample covariance, as ``numpy.cov``), ``scale_tril`` (K, D, D), its lower Cholesky factor (after a
    jitter, see :func:`cholesky_with_jitter`), and ``fitted``. Before :meth:`fit` every class is N(0, I).
    """

    def __init__(self, num_classes: int, latent_dim: int) -> None:
        super().__init__()
        eye = torch.eye(latent_dim).expand(num_classes, latent_dim, latent_dim)
        self.register_buffer("mean", torch.zeros(num_classes, latent_dim))
        self.register_buffer("covariance", eye.clone())
        self.register_buffer("scale_tril", eye.clone())
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @torch.no_grad()
    def fit(self, encodings: torch.Tensor, labels: torch.Tensor) -> list[int]:
        """Fit every class's Gaussian to its rows of ``encodings`` (N, D); returns the classes without rows.

        A class without rows (absent from the training split) gets the Gaussian of all encodings; a class of one
        row a zero covariance (its mean, up to the jitter).
        """
        encodings = encodings.detach().to("cpu", torch.float64)
        labels = labels.detach().to("cpu")
        pooled = _gaussian(encodings)
        missing = []
        for k in range(self.mean.shape[0]):
            rows = encodings[labels == k]
            if rows.shape[0] == 0:
                missing.append(k)
            mean, covariance = _gaussian(rows) if rows.shape[0] else pooled
            self.mean[k] = mean.to(self.mean)
            self.covariance[k] = covariance.to(self.covariance)
            self.scale_tril[k] = cholesky_with_jitter(covariance).to(self.scale_tril)
        self.fitted.fill_(True)
        return missing

    def sample(self, labels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Latents ``mean[label] + scale_tril[label] @ noise`` for standard-normal ``noise`` (N, D), on its device."""
        labels = labels.to(self.mean.device)
        factors = self.scale_tril.index_select(0, labels)
        latents = self.mean.index_select(0, labels) + (factors @ noise.to(factors).unsqueeze(-1)).squeeze(-1)
        return latents.to(noise.device)


def _gaussian(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of ``rows`` (N, D); zero covariance for a single row."""
    dim = rows.shape[1]
    if rows.shape[0] < 2:
        return rows.mean(0), rows.new_zeros(dim, dim)
    return rows.mean(0), torch.cov(rows.T).reshape(dim, dim)


def cholesky_with_jitter(covariance: torch.Tensor) -> torch.Tensor:
    """Lower Cholesky factor of ``covariance + jitter * I``, with the smallest jitter that works.

    Why the jitter: a class with no more images than latent dimensions (a minority class: 40 images, 100
    dimensions) has a covariance of rank below D, which has no Cholesky factor, and rounding can make a
    full-rank one fail too. Adding 1e-6 (then 1e-5, ... 1e-2) times the average variance along the diagonal
    adds a negligible isotropic spread in the missing directions and makes it positive definite. (The
    BAGAN reference samples with numpy's SVD-based ``multivariate_normal``, which accepts singular matrices.)
    """
    dim = covariance.shape[-1]
    eye = torch.eye(dim, dtype=covariance.dtype, device=covariance.device)
    scale = covariance.diagonal().mean().clamp_min(1e-12)
    for jitter in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2):
        factor, info = torch.linalg.cholesky_ex(covariance + jitter * scale * eye)
        if int(info) == 0:
            return factor
    return torch.diag(covariance.diagonal().clamp_min(0).sqrt())  # no factor found: keep the variances only

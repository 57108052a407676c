"""Class-conditional networks built around the registered families (``synthmed.nn.registry``), not beside them.

* :class:`ConditionalGenerator`: ``(z, labels) -> image`` around a family's generator, with the class entering by
  conditional batch norm (``cbn``: a per-class gain and bias in every BatchNorm layer; de Vries et al. 2017,
  Miyato & Koyama 2018), by a label embedding concatenated to z (``concat``; Mirza & Osindero 2014, ACGAN), or
  multiplied with z (``multiply``; the usual conditional WGAN-GP generator).
* :class:`ProjectionDiscriminator`: ``logit = linear(phi(x)) + <embed(y), phi(x)>`` with ``phi`` the features
  the discriminator's linear output layer reads (Miyato & Koyama 2018; ResNet: globally sum-pooled, DCGAN: the
  last map flattened); also the conditional WGAN-GP critic.
* :class:`AuxiliaryClassifierDiscriminator`: a real/fake logit and class logits from the same features (Odena et
  al. 2017).

The families' networks are used unchanged (DCGAN and ResNet, 2-D or 3-D): the wrappers only add embeddings, and
``cbn`` swaps the generator's BatchNorm layers for :class:`ConditionalBatchNorm`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as with_spectral_norm

from synthmed.nn.dcgan import DCGANDiscriminator
from synthmed.nn.registry import build_discriminator, build_generator

#: How the class label enters a :class:`ConditionalGenerator`.
CONDITIONING = ("cbn", "concat", "multiply")


class ConditionalBatchNorm(nn.Module):
    """BatchNorm without an affine of its own, followed by a gain and a bias looked up per class.

    The labels are set by the :class:`ConditionalGenerator` that owns the layer, for the length of one forward
    pass: that is what lets the families' generators keep their ``forward(z)`` and their layouts unchanged.
    Gains start at 1 and biases at 0, so at initialisation the layer is the BatchNorm it replaced (SNGAN's
    ``CategoricalConditionalBatchNormalization``). The running statistics are shared by all classes.
    """

    def __init__(self, norm: nn.modules.batchnorm._BatchNorm, num_classes: int) -> None:
        super().__init__()
        channels = norm.num_features
        self.norm = type(norm)(channels, eps=norm.eps, momentum=norm.momentum, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)
        self.labels: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.labels is None:
            raise RuntimeError("ConditionalBatchNorm runs inside a ConditionalGenerator, which sets the labels")
        normed = self.norm(x)
        shape = (x.shape[0], -1) + (1,) * (x.dim() - 2)
        gain = self.gain(self.labels).to(normed.dtype).view(shape)
        bias = self.bias(self.labels).to(normed.dtype).view(shape)
        return torch.addcmul(bias, normed, gain)  # one pass over the map: bias + normed * gain


def make_batchnorm_conditional(module: nn.Module, num_classes: int) -> tuple[ConditionalBatchNorm, ...]:
    """Replace every BatchNorm layer of ``module`` (in place) by a :class:`ConditionalBatchNorm`; returns them."""
    replaced = []
    for parent in list(module.modules()):  # listed first: the new layers' own BatchNorm stays as it is
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                layer = ConditionalBatchNorm(child, num_classes)
                setattr(parent, name, layer)
                replaced.append(layer)
    return tuple(replaced)


class ConditionalGenerator(nn.Module):
    """``(z (N, latent_dim), labels (N,)) -> image`` around a family's generator ``backbone``.

    ``concat``: the backbone takes ``latent_dim + embed_dim`` inputs, ``[z, embed(y)]``. ``multiply``: it takes
    ``latent_dim`` inputs, ``z * embed(y)`` (embedding of length ``latent_dim``, standard normal like z).
    ``cbn``: it takes z, and each of its BatchNorm layers was made a :class:`ConditionalBatchNorm`.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, conditioning: str, latent_dim: int,
                 embed_dim: int = 0) -> None:
        super().__init__()
        if conditioning not in CONDITIONING:
            raise ValueError(f"unknown conditioning {conditioning!r}; valid: {', '.join(CONDITIONING)}")
        self.backbone, self.conditioning, self.latent_dim = backbone, conditioning, latent_dim
        self.num_classes = num_classes
        self.embedding: nn.Embedding | None = None
        self.norms: tuple[ConditionalBatchNorm, ...] = ()
        if conditioning == "cbn":
            self.norms = make_batchnorm_conditional(backbone, num_classes)
            if not self.norms:
                raise ValueError("conditioning 'cbn' needs a generator with BatchNorm layers")
        else:
            self.embedding = nn.Embedding(num_classes, latent_dim if conditioning == "multiply" else embed_dim)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z = z.reshape(z.shape[0], self.latent_dim)
        if self.embedding is None:
            return self._forward_cbn(z, labels)
        embedded = self.embedding(labels).to(z.dtype)
        if self.conditioning == "concat":
            return self.backbone(torch.cat([z, embedded], dim=1))
        return self.backbone(z * embedded)

    def _forward_cbn(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        for layer in self.norms:
            layer.labels = labels
        try:
            return self.backbone(z)
        finally:  # no labels outlive the pass (a stale batch's labels would silently condition the next one)
            for layer in self.norms:
                layer.labels = None


def build_conditional_generator(arch: str, conditioning: str, num_classes: int, latent_dim: int,
                                embed_dim: int = 0, **kwargs: Any) -> ConditionalGenerator:
    """A family's generator (``kwargs``: ``out_channels``, ``image_size``, ``base_channels``, ...) made conditional."""
    if conditioning == "concat" and embed_dim < 1:
        raise ValueError(f"conditioning 'concat' needs embed_dim >= 1 (got {embed_dim})")
    backbone_latent = latent_dim + embed_dim if conditioning == "concat" else latent_dim
    backbone = build_generator(arch, latent_dim=backbone_latent, **kwargs)
    return ConditionalGenerator(backbone, num_classes, conditioning, latent_dim, embed_dim)


def _init_like_output_layer(embedding: nn.Embedding, backbone: nn.Module) -> None:
    """Start the projection at the scale of the backbone's own logit, so it neither dominates the first steps nor
    starts at zero (where spectral norm would divide by a zero norm): N(0, 0.02) as DCGAN's weights, Glorot
    uniform as SNGAN's (whose code initialises the embedding so)."""
    if isinstance(backbone, DCGANDiscriminator):
        nn.init.normal_(embedding.weight, 0.0, 0.02)
    else:
        nn.init.xavier_uniform_(embedding.weight)


class ProjectionDiscriminator(nn.Module):
    """``(x, labels) -> logits (N,)``: the backbone's logit plus ``<embed(y), phi(x)>`` (Miyato & Koyama 2018).

    ``phi(x)`` are the features the backbone's own linear output layer reads, so the logit is the paper's
    ``linear(phi(x)) + <embed(y), phi(x)>`` for either family: ResNet's globally sum-pooled features (SNGAN), and
    the DCGAN discriminator's last map, flattened (its output conv spans the whole 4x4 or 7x7 map, a linear
    layer on it). Sum-pooling that map for the projection alone would hide *where* a feature is from the class
    term: a class that differs by position (a lesion's side, an organ's place) could then not be told apart.
    With ``spectral_norm`` the class embedding is spectrally normalised too, as in the paper's code
    (``SNEmbedID``).
    """

    def __init__(self, backbone: nn.Module, num_classes: int, spectral_norm: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.embedding = nn.Embedding(num_classes, backbone.num_features)
        _init_like_output_layer(self.embedding, backbone)
        if spectral_norm:
            with_spectral_norm(self.embedding)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, return_features: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits (N,); with ``return_features`` also ``phi(x)`` (N, num_features)."""
        logits, features = self.backbone(x, return_features=True)
        logits = logits + (self.embedding(labels).to(features.dtype) * features).sum(1)
        return (logits, features) if return_features else logits


class AuxiliaryClassifierDiscriminator(nn.Module):
    """``x -> (logits (N,), class_logits (N, K))``: ACGAN's two heads on the backbone's last features."""

    def __init__(self, backbone: nn.Module, num_classes: int, spectral_norm: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.classifier = nn.Linear(backbone.num_features, num_classes)
        if spectral_norm:
            with_spectral_norm(self.classifier)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, features = self.backbone(x, return_features=True)
        return logits, self.classifier(features)


def build_projection_discriminator(arch: str, num_classes: int, **kwargs: Any) -> ProjectionDiscriminator:
    """A family's discriminator (``kwargs`` as :func:`~synthmed.nn.registry.build_discriminator`) with projection."""
    backbone = build_discriminator(arch, **kwargs)
    return ProjectionDiscriminator(backbone, num_classes, spectral_norm=bool(kwargs.get("spectral_norm")))


def build_auxiliary_discriminator(arch: str, num_classes: int, **kwargs: Any) -> AuxiliaryClassifierDiscriminator:
    """A family's discriminator with an auxiliary classifier head (ACGAN)."""
    backbone = build_discriminator(arch, **kwargs)
    return AuxiliaryClassifierDiscriminator(backbone, num_classes, spectral_norm=bool(kwargs.get("spectral_norm")))

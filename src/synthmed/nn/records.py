"""Networks for patient records (vectors of code values): medGAN's autoencoder, generator and discriminator.

Choi et al. 2017, "Generating Multi-label Discrete Patient Records using Generative Adversarial Networks"; the
layouts follow the reference code (mp2893/medgan): an autoencoder of one tanh (binary) or ReLU (count) layer each
way, a generator of fully connected layers with batch norm and shortcut connections ``h + act(BN(W h))`` whose last
layer emits a code of the autoencoder's latent space, and a discriminator of ReLU layers (256, 128) that sees each
record beside its batch's mean record (:class:`~synthmed.nn.minibatch.MinibatchAveraging`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from synthmed.nn.minibatch import MinibatchAveraging, MinibatchDiscrimination

#: Binary records: tanh hidden units, a sigmoid output; counts: ReLU everywhere (non-negative outputs).
VALUE_KINDS = ("binary", "count")
BATCH_FEATURES = ("none", "averaging", "discrimination")
#: Records compared with each other by minibatch discrimination: its cost grows with the group squared (one
#: medGAN step at 512 records took 18 s on a CPU core with the whole batch as one group, 0.5 s with groups of 64).
DISCRIMINATION_GROUP = 64


def _activation(values: str) -> nn.Module:
    if values not in VALUE_KINDS:
        raise ValueError(f"values must be one of {', '.join(VALUE_KINDS)} (got {values!r})")
    return nn.Tanh() if values == "binary" else nn.ReLU()


def _stack(widths: Sequence[int], values: str) -> nn.Sequential:
    """Linear layers between consecutive ``widths``, each followed by the value kind's activation."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), _activation(values)]
    return nn.Sequential(*layers)


class RecordEncoder(nn.Module):
    """Records (N, D) -> codes (N, embedding_dim): linear layers, tanh (binary) or ReLU (count) after each.

    Args:
        record_dim: Codes per record (D).
        embedding_dim: Width of the code (the latent space the generator writes into).
        hidden: Widths of extra layers before the code (the reference: none).
        values: ``binary`` or ``count``.
    """

    def __init__(self, record_dim: int, embedding_dim: int, hidden: Sequence[int] = (), values: str = "binary"):
        super().__init__()
        self.layers = _stack([record_dim, *hidden, embedding_dim], values)

    def forward(self, records: torch.Tensor) -> torch.Tensor:
        return self.layers(records)


class RecordDecoder(nn.Module):
    """Codes (N, embedding_dim) -> records (N, D): logits of each code being present (binary) or counts >= 0.

    Binary decoders return logits so the losses can use the stable ``binary_cross_entropy_with_logits``;
    :meth:`values` gives probabilities (binary) or counts (count).

    Args:
        embedding_dim: Width of the code.
        record_dim: Codes per record (D).
        hidden: Widths of extra layers after the code (the reference: none).
        values: ``binary`` or ``count``.
    """

    def __init__(self, embedding_dim: int, record_dim: int, hidden: Sequence[int] = (), values: str = "binary"):
        super().__init__()
        self.values_kind = values
        self.hidden = _stack([embedding_dim, *hidden], values)
        self.out = nn.Linear(([embedding_dim, *hidden])[-1], record_dim)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """Logits (binary) or pre-activation counts; see :meth:`values`."""
        return self.out(self.hidden(codes))

    def values(self, codes: torch.Tensor) -> torch.Tensor:
        """Probabilities in [0, 1] (binary) or counts >= 0 (count)."""
        raw = self(codes)
        return torch.sigmoid(raw) if self.values_kind == "binary" else torch.relu(raw)


class ResidualLayer(nn.Module):
    """``act(BN(W h)) (+ h)``: one generator layer; batch norm and the shortcut can each be switched off.

    Without batch norm the linear layer has a bias (with it, BN's shift plays that part, as in the reference).

    Args:
        n_in: Input width.
        n_out: Output width (equal to ``n_in`` with a shortcut).
        activation: The activation after batch norm.
        batch_norm: Batch norm after the linear layer.
        shortcut: Add the layer's input to its output.
        momentum: Batch norm's running-statistics momentum: 0.01 is the reference's decay of 0.99.
    """

    def __init__(self, n_in: int, n_out: int, activation: nn.Module, batch_norm: bool, shortcut: bool,
                 momentum: float = 0.01) -> None:
        super().__init__()
        if shortcut and n_in != n_out:
            raise ValueError(f"a shortcut connection needs equal widths (got {n_in} -> {n_out})")
        self.linear = nn.Linear(n_in, n_out, bias=not batch_norm)
        self.norm = nn.BatchNorm1d(n_out, momentum=momentum) if batch_norm else nn.Identity()
        self.activation = activation
        self.shortcut = shortcut

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.activation(self.norm(self.linear(h)))
        return out + h if self.shortcut else out


class RecordGenerator(nn.Module):
    """Noise (N, noise_dim) -> a code (N, embedding_dim) of the autoencoder's latent space.

    ``hidden`` ReLU layers, then one layer to ``embedding_dim`` with tanh (binary) or ReLU (count), as the
    reference. medGAN: batch norm (decay 0.99, i.e. momentum 0.01) and shortcut connections in every layer, which
    need ``noise_dim == hidden widths == embedding_dim`` (128 in the paper).

    Args:
        noise_dim: Length of the generator's input noise.
        embedding_dim: Width of the code it writes (the autoencoder's).
        hidden: Widths of the hidden layers.
        values: ``binary`` or ``count`` (the last layer's activation).
        batch_norm: Batch norm after each linear layer.
        shortcut: Shortcut connections (each layer adds its input).
    """

    def __init__(self, noise_dim: int, embedding_dim: int, hidden: Sequence[int] = (128, 128),
                 values: str = "binary", batch_norm: bool = True, shortcut: bool = True) -> None:
        super().__init__()
        widths = [noise_dim, *hidden, embedding_dim]
        activations = [nn.ReLU() for _ in hidden] + [_activation(values)]
        self.layers = nn.Sequential(*(
            ResidualLayer(n_in, n_out, act, batch_norm, shortcut)
            for n_in, n_out, act in zip(widths[:-1], widths[1:], activations, strict=True)))

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.layers(noise)


class RecordDiscriminator(nn.Module):
    """Records (N, D) -> one logit each: ReLU layers after an optional look at the whole batch.

    Args:
        record_dim: Codes per record (D).
        hidden: Widths of the hidden layers (the reference: 256, 128).
        batch_features: What the first layer sees besides each record: ``none``; ``averaging`` (the batch's mean
            record, medGAN); ``discrimination`` (Salimans et al.'s minibatch discrimination of the records, within
            groups of :data:`DISCRIMINATION_GROUP` records).
        dropout: Dropout after each hidden activation (the reference: keep rate 1, i.e. none).
    """

    def __init__(self, record_dim: int, hidden: Sequence[int] = (256, 128), batch_features: str = "averaging",
                 dropout: float = 0.0) -> None:
        super().__init__()
        if batch_features not in BATCH_FEATURES:
            raise ValueError(f"batch_features must be one of {', '.join(BATCH_FEATURES)} (got {batch_features!r})")
        if batch_features == "averaging":
            self.batch_layer: nn.Module = MinibatchAveraging()
            width = 2 * record_dim
        elif batch_features == "discrimination":
            self.batch_layer = MinibatchDiscrimination(record_dim, group_size=DISCRIMINATION_GROUP, fast=True)
            width = self.batch_layer.out_features
        else:
            self.batch_layer, width = nn.Identity(), record_dim
        layers: list[nn.Module] = []
        for n_out in hidden:
            layers += [nn.Linear(width, n_out), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
            width = n_out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1)

    def forward(self, records: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.batch_layer(records))).squeeze(1)

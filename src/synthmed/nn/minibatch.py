"""Layers that let a discriminator see its batch: minibatch discrimination (Salimans et al. 2016, "Improved
Techniques for Training GANs", sec. 3.2), minibatch standard deviation (Karras et al. 2018, "Progressive Growing
of GANs", sec. 3) and medGAN's minibatch averaging."""

from __future__ import annotations

import torch
from torch import nn


class MinibatchDiscrimination(nn.Module):
    """Append, per sample, how close it is to the other samples of the batch.

    With ``M_i = x_i T`` reshaped to (num_kernels, kernel_dim) and
    ``o(x_i)_b = sum_{j != i} exp(-||M_{i,b} - M_{j,b}||_1)``, the output is ``[x_i, o(x_i)]`` of shape
    (N, in_features + num_kernels). A collapsed generator makes fake batches whose samples are all close,
    which the discriminator can then see.

    The cost grows with the batch size squared: ``group_size`` compares each sample with the others of its group
    of that many consecutive samples only (Salimans et al. used minibatches of 64 to 100; medGAN's batches hold
    1,000 records). ``fast=True`` computes the L1 distances with ``torch.cdist`` per kernel, 3x faster at 512
    samples and without the (N, N, kernels, dims) intermediate of the broadcast difference, but ``cdist`` has no
    second derivative: keep the default where a penalty differentiates the discriminator's gradient (R1, WGAN-GP).

    Args:
        in_features: Features per sample (after flattening).
        num_kernels: Kernels B (features appended).
        kernel_dim: Dimensions C of each kernel's projection.
        group_size: Samples compared with each other (None: the whole batch); a last, smaller group compares
            within itself.
        fast: L1 distances by ``torch.cdist`` (no second derivative) instead of a broadcast difference.
    """

    def __init__(self, in_features: int, num_kernels: int = 50, kernel_dim: int = 5,
                 group_size: int | None = None, fast: bool = False) -> None:
        super().__init__()
        if group_size is not None and group_size < 2:
            raise ValueError(f"group_size must be at least 2 (got {group_size})")
        self.in_features, self.num_kernels, self.kernel_dim = in_features, num_kernels, kernel_dim
        self.group_size, self.fast = group_size, fast
        self.out_features = in_features + num_kernels
        # T is weight-normalised per output column, as in the reference code: it keeps the L1 distances
        # O(|x|) whatever in_features is, so exp(-d) does not underflow to 0 for every pair at init.
        self.theta = nn.Parameter(torch.randn(in_features, num_kernels * kernel_dim) * 0.05)
        self.log_scale = nn.Parameter(torch.zeros(num_kernels * kernel_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        t = self.theta * (self.log_scale.exp() / self.theta.norm(dim=0).clamp_min(1e-12))
        m = (x @ t).view(x.shape[0], self.num_kernels, self.kernel_dim)  # (N, B, C)
        groups = m.split(self.group_size or max(1, x.shape[0]))
        closeness = self._closeness_cdist if self.fast else self._closeness
        o = torch.cat([closeness(group) for group in groups]) if x.shape[0] else m.new_zeros(0, self.num_kernels)
        return torch.cat([x, o.to(x.dtype)], dim=1)

    @staticmethod
    def _closeness(m: torch.Tensor) -> torch.Tensor:
        """(g, B) sums of exp(-L1 distance) to the group's other samples, per kernel, for ``m`` (g, B, C)."""
        dist = (m.unsqueeze(1) - m.unsqueeze(0)).abs().sum(-1)  # (g, g, B) L1 distances
        # Exclude j == i (exp(-0) = 1 for every sample) so a batch of one gives 0, not a constant 1.
        others = 1.0 - torch.eye(m.shape[0], dtype=dist.dtype, device=dist.device).unsqueeze(-1)
        return (torch.exp(-dist) * others).sum(1)

    @staticmethod
    def _closeness_cdist(m: torch.Tensor) -> torch.Tensor:
        """:meth:`_closeness` with ``torch.cdist`` per kernel."""
        per_kernel = m.transpose(0, 1).contiguous()  # (B, g, C)
        dist = torch.cdist(per_kernel, per_kernel, p=1.0)  # (B, g, g)
        others = 1.0 - torch.eye(m.shape[0], dtype=dist.dtype, device=dist.device)
        return (torch.exp(-dist) * others).sum(2).T

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.group_size else ""
        return (f"in_features={self.in_features}, num_kernels={self.num_kernels}, kernel_dim={self.kernel_dim}{group}"
                f"{', fast=True' if self.fast else ''}")


class MinibatchStdDev(nn.Module):
    """Append the spread of each group of samples as constant feature maps (Karras et al. 2018, sec. 3).

    For each group of ``group_size`` consecutive samples and each of ``num_channels`` groups of consecutive
    channels: the standard deviation over the group's samples of every feature, averaged over the channel group's
    channels and all positions, is one number, appended as a constant map to every sample of the group. The output
    of (N, C, *spatial) is (N, C + num_channels, *spatial). A generator that draws only a narrow part of the data
    makes fake groups with a smaller spread than real ones, which the discriminator can then see; unlike
    :class:`MinibatchDiscrimination` it has no parameters and costs O(N).

    The standard deviation is the population one, ``sqrt(mean((x - mean)^2) + 1e-8)`` as in ProGAN's code. When N
    is not a multiple of ``group_size`` the last group is smaller; a sample that would be left alone joins the group
    before it instead (alone it has no spread, which would read as a collapsed generator even for real data), and
    a batch of one gets ``sqrt(1e-8)``, not NaN. ProGAN groups the samples strided (sample i in group
    i % (N / group_size)); in a shuffled batch either way draws random groups, and consecutive ones keep a partial
    last group whole. The statistic is computed in float32 at least (in bf16, with its 8-bit mantissa, the
    deviations of close values are mostly rounding error) and appended in the input's dtype.

    Args:
        group_size: Samples whose spread is measured together (ProGAN: 4); a last, smaller group uses its own (a
            last sample alone joins the group before it).
        num_channels: Groups of consecutive channels, one appended map each (ProGAN: 1). Must divide the input's
            channels.
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1) -> None:
        super().__init__()
        if group_size < 2:
            raise ValueError(f"group_size must be at least 2 (got {group_size})")
        if num_channels < 1:
            raise ValueError(f"num_channels must be at least 1 (got {num_channels})")
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        if c % self.num_channels:
            raise ValueError(f"C={c} input channels do not split into num_channels={self.num_channels} groups")
        # Work in the layout the input has: with the channels innermost (channels_last, as the convs before and
        # after this layer run on CPU) the (N, *spatial, C) view needs no copy in and none out, 2.5x faster than
        # going through NCHW and back at (64, 128, 7, 7).
        channels_innermost = x.ndim > 2 and x.movedim(1, -1).is_contiguous()
        h = x.movedim(1, -1) if channels_innermost else x.reshape(n, c, -1).transpose(1, 2)  # (N, ..., C), a view
        stats = self._stats(h.reshape(n, -1, c).to(torch.promote_types(x.dtype, torch.float32)))  # (N, F)
        maps = stats.to(x.dtype).view(n, *(1,) * (x.ndim - 2), self.num_channels)
        if channels_innermost:
            return torch.cat([h, maps.expand(*h.shape[:-1], self.num_channels)], dim=-1).movedim(-1, 1)
        return torch.cat([x, maps.movedim(-1, 1).expand(n, self.num_channels, *x.shape[2:])], dim=1)

    def _stats(self, h: torch.Tensor) -> torch.Tensor:
        """(N, num_channels): each sample's group statistic, for ``h`` (N, positions, C). The full groups in one
        pass, a partial last one apart."""
        n = h.shape[0]
        full = n - n % self.group_size
        if n % self.group_size == 1 and full:  # no lone sample: it joins the last full group
            full -= self.group_size
        parts = [self._group_stats(h[:full], self.group_size)] if full else []
        if full < n:
            parts.append(self._group_stats(h[full:], n - full))
        return torch.cat(parts) if parts else h.new_zeros(0, self.num_channels)

    def _group_stats(self, h: torch.Tensor, size: int) -> torch.Tensor:
        """(n, num_channels) for ``h`` (n, positions, C) made of n / size groups of ``size`` consecutive samples."""
        n, positions, c = h.shape
        y = h.reshape(n // size, size, positions, self.num_channels, c // self.num_channels)  # (groups, members, ...)
        # The variance written out: torch.var over a short, non-innermost dim (4 members) runs a slow CPU
        # reduction, 9x this form forward + backward at (64, 128, 7, 7), which made the layer double a 28-px step.
        deviation = y - y.mean(dim=1, keepdim=True)
        std = (deviation.square().mean(dim=1) + 1e-8).sqrt()  # over the members, per feature
        return std.mean(dim=(1, 3)).repeat_interleave(size, dim=0)  # one value per channel group, to every member

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class MinibatchAveraging(nn.Module):
    """medGAN's minibatch averaging (Choi et al. 2017, sec. 3.2): append the batch's mean record to every record.

    The output is ``[x_i, mean_j x_j]`` of shape (N, 2 * features). The discriminator then judges each record
    together with its batch's code frequencies, so a generator that draws the same few records (whose batch mean
    is far from the real batches') is caught. Under torchrun the mean is over each process's batch, as in the
    reference's one-device training. No parameters.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return torch.cat([x, x.mean(0, keepdim=True).expand_as(x)], dim=1)

"""Fast kernels with PyTorch's own as the reference, behind one switch (as NVlabs' ``torch_utils/ops``).

* :mod:`synthmed.ops.cpu_conv`: 2-D convolution layers that lower the shapes oneDNN runs slowly on CPU to one
  GEMM, and 4x4 stride-2 layers of small maps to Winograd's minimal filtering (:mod:`synthmed.ops.winograd`),
  with exact adjoint backward passes (:mod:`synthmed.ops.conv_backward` for double backward).
* ``cpu_kernels``: ``auto`` uses them where they were measured faster (CPU, float32, channels-last models);
  ``native`` runs PyTorch's own kernels everywhere. On GPUs the layers are PyTorch's, whatever the switch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from synthmed.errors import ConfigError

CPU_KERNELS = ("auto", "native")


@contextlib.contextmanager
def kernels(mode: str) -> Iterator[None]:
    """Run the block with ``mode``'s kernels: ``auto`` (synthmed's where faster) or ``native`` (PyTorch's)."""
    from synthmed.ops import cpu_conv

    if mode not in CPU_KERNELS:
        raise ConfigError(f"cpu_kernels must be one of {', '.join(CPU_KERNELS)} (got {mode!r})")
    with cpu_conv.native_convolutions() if mode == "native" else contextlib.nullcontext():
        yield


__all__ = ["CPU_KERNELS", "kernels"]

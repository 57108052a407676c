"""The feature-extractor interface shared by every feature space (Inception, domain CNN, radiomics)."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from synthmed.errors import ConfigError, DataError


class FeatureExtractor(abc.ABC):
    """Maps images (N, C, H, W) in [-1, 1] to feature vectors (N, dim) float64.

    Subclasses implement :meth:`_features` for one batch; :meth:`extract` validates, batches, shows progress and
    assembles the result. :meth:`describe` says exactly which feature space a number was computed in, so that every
    metric figure can name it.
    """

    name: ClassVar[str]
    default_batch_size: ClassVar[int] = 256
    dim: int
    device: torch.device

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able description: ``name``, ``dim`` and what defines the feature space (weights, inputs, data)."""

    @abc.abstractmethod
    def _features(self, batch: torch.Tensor) -> torch.Tensor | np.ndarray:
        """Features of one validated batch already on :attr:`device` (float32, (B, C, H, W))."""

    def check_images(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Validate ``images`` (a tensor or array); batches are cast to float32 on the device one at a time."""
        if isinstance(images, np.ndarray):
            images = torch.from_numpy(images)
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
            raise DataError(None, f"{self.name} features need images shaped (N, C, H, W); got {shape}")
        if not images.is_floating_point():
            raise DataError(None, f"{self.name} features need float images in [-1, 1]; got {images.dtype}")
        return images

    def extract(
        self, images: torch.Tensor | np.ndarray, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """Features of ``images`` (N, C, H, W) in [-1, 1] as an (N, dim) float64 array.

        ``batch_size`` defaults to the extractor's :attr:`default_batch_size`; results do not depend on it beyond
        floating-point rounding.
        """
        return self._batched(images, batch_size, progress, self._features, self.dim)

    def _batched(
        self,
        images: torch.Tensor | np.ndarray,
        batch_size: int | None,
        progress: bool,
        fn: Callable[[torch.Tensor], torch.Tensor | np.ndarray],
        dim: int,
    ) -> np.ndarray:
        """Run ``fn`` over validated batches on :attr:`device` under ``no_grad``; stack into (N, dim) float64."""
        images = self.check_images(images)
        batch_size = int(batch_size or self.default_batch_size)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        out = np.empty((images.shape[0], dim), dtype=np.float64)
        with torch.no_grad(), progress_bar(f"{self.name} features", images.shape[0], progress) as advance:
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size].to(self.device, torch.float32)
                if not bool(torch.isfinite(batch).all()):
                    raise DataError(None, f"images {start}..{start + len(batch) - 1} contain NaN or inf values")
                values = fn(batch)
                if isinstance(values, torch.Tensor):
                    values = values.detach().to("cpu", torch.float64).numpy()
                out[start : start + len(batch)] = values
                advance(len(batch))
        return out


@contextmanager
def progress_bar(label: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A transient rich progress bar; yields ``advance(n)`` (a no-op when disabled)."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a weights file, remembered while the file is unchanged (:func:`synthmed.io.sha256_file`)."""
    from synthmed.io import sha256_file as digest

    return digest(path, remember=True)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"auto" -> the machine's accelerator (:func:`synthmed.devices.select_device`); else as given."""
    from synthmed.devices import select_device

    return select_device("auto" if device is None else str(device))


def to_grey_or_rgb(images: torch.Tensor, name: str) -> torch.Tensor:
    """Repeat a grey channel to RGB; RGB unchanged; other channel counts are an error naming the fix."""
    channels = images.shape[1]
    if channels == 3:
        return images
    if channels == 1:
        return images.expand(-1, 3, -1, -1)
    raise ConfigError(
        f"{name} features need 1 (grey) or 3 (RGB) channels, got {channels}; select channels with --channels, "
        "or use the 'domain' or 'radiomics' extractor, which take any channel count"
    )

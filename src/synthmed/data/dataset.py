"""The one in-memory data set that every source produces.

Every source (MedMNIST npz, image folder, npz arrays, DICOM, NIfTI) ends in an :class:`ImageDataset`:
preprocessed tensors held in memory, so that a training batch is one indexing operation rather than a
Python loop over files (medical image sets of 28-128 px fit in memory many times over).
Samples are dicts with the keys ``image`` (C, H, W) float32 in [-1, 1], and where present ``label`` (int64
scalar), ``mask`` (1, H, W) float32 in {0, 1}, ``target`` (C', H, W) for paired translation, and ``meta``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about its data; stored in every run's config and checkpoint."""

    source: str
    channels: int
    height: int
    width: int
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    split: str = "all"
    channel_names: tuple[str, ...] = ()
    attribution: str = ""

    @property
    def image_size(self) -> int:
        """Side length for square images (the networks' ``image_size``)."""
        return max(self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["class_names"] = list(self.class_names)
        data["channel_names"] = list(self.channel_names)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataInfo:
        data = dict(data)
        data["class_names"] = tuple(data.get("class_names", ()))
        data["channel_names"] = tuple(data.get("channel_names", ()))
        return cls(**data)


@dataclass
class ImageDataset(torch.utils.data.Dataset):
    """Preprocessed images (and optional labels, masks, targets, patient ids) held as tensors."""

    images: torch.Tensor
    info: DataInfo
    labels: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    patients: np.ndarray | None = None
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.dtype != torch.float32 or self.images.ndim < 3:
            raise ValueError("images must be a float32 tensor shaped (N, C, ...)")
        for name in ("labels", "masks", "targets"):
            value = getattr(self, name)
            if value is not None and value.shape[0] != n:
                raise ValueError(f"{name} has {value.shape[0]} entries for {n} images")
        if self.patients is not None and len(self.patients) != n:
            raise ValueError(f"patients has {len(self.patients)} entries for {n} images")
        if self.meta and len(self.meta) != n:
            raise ValueError(f"meta has {len(self.meta)} entries for {n} images")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample: dict[str, Any] = {"image": self.images[index]}
        if self.labels is not None:
            sample["label"] = self.labels[index]
        if self.masks is not None:
            sample["mask"] = self.masks[index]
        if self.targets is not None:
            sample["target"] = self.targets[index]
        meta = dict(self.meta[index]) if self.meta else {}
        if self.patients is not None:
            meta.setdefault("patient", str(self.patients[index]))
        sample["meta"] = meta
        return sample

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """A training batch as one gather per tensor (no per-sample Python work, no ``meta``)."""
        out = {"image": self.images.index_select(0, indices)}
        if self.labels is not None:
            out["label"] = self.labels.index_select(0, indices)
        if self.masks is not None:
            out["mask"] = self.masks.index_select(0, indices)
        if self.targets is not None:
            out["target"] = self.targets.index_select(0, indices)
        return out

    def subset(
        self, indices: Sequence[int] | np.ndarray | torch.Tensor, split: str | None = None
    ) -> ImageDataset:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ImageDataset(
            images=self.images.index_select(0, idx),
            info=replace(self.info, split=split or self.info.split),
            labels=None if self.labels is None else self.labels.index_select(0, idx),
            masks=None if self.masks is None else self.masks.index_select(0, idx),
            targets=None if self.targets is None else self.targets.index_select(0, idx),
            patients=None if self.patients is None else self.patients[idx.numpy()],
            meta=[self.meta[i] for i in idx.tolist()] if self.meta else [],
        )

    def to(self, device: torch.device | str) -> ImageDataset:
        """Move the tensors (e.g. to the GPU once, so batches never cross the bus)."""

        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return replace(
            self,
            images=self.images.to(device),
            labels=move(self.labels),
            masks=move(self.masks),
            targets=move(self.targets),
        )

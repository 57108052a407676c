"""The one in-memory data set that every source produces.

Every source (MedMNIST npz, image folder, npz arrays, DICOM, NIfTI) ends in an :class:`ImageDataset`:
preprocessed tensors held in memory, so that a training batch is one indexing operation rather than a
Python loop over files (medical image sets of 28-128 px fit in memory many times over).
Samples are dicts with the keys ``image`` (C, H, W) float32 in [-1, 1], and where present ``label`` (int64
scalar), ``mask`` (1, H, W) float32 in {0, 1}, ``target`` (C', H, W) for paired translation, and ``meta``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from synthmed.data.sets import BatchStream, DataSpec

@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about its data; stored in every run's config and checkpoint.

    ``kind`` says what a batch holds (:data:`synthmed.data.sets.KINDS`): ``images``; ``paired`` (``image`` ->
    ``target`` of ``target_channels`` channels named ``target_names``; ``target_is_mask``: the target is a
    {0, 1} mask, not an image in [-1, 1]); ``unpaired`` (the same, with ``sizes`` = (domain A, domain B));
    ``records`` (``channels`` = the record width D, ``height`` = ``width`` = 1, ``columns`` = the vocabulary).
    ``target_source`` is the target folder or file when it is not ``source``. Configs written before these
    fields existed read back with their defaults (kind ``images``).
    ``intensity`` / ``target_intensity`` say how the stored values of the images / targets were mapped to
    [-1, 1] (:meth:`synthmed.data.intensity.IntensityMapping.to_dict`, plain JSON-able dicts), so a translation
    tool can read a new file the same way and write its output back in the file's units; empty: unknown (runs
    saved before they were recorded, or data made in memory). They take no part in hashing (dicts cannot).
    ``mask_classes``: for label-map mask targets (data option ``mask_values="labels"``), the number of classes
    (largest label + 1, background 0 included; >= 2), the ``target`` holding class indices as float32 values;
    0 for binary {0, 1} masks.
    ``vocabulary``: for records, what each column of ``columns`` means (plain JSON-able lists, one entry per
    column in column order): ``values`` (``"binary"``: every cell 0 or 1, or ``"count"``), and, when the records
    came with a vocabulary file (``synthmed ehr extract`` writes one), ``concept_id`` (int, or None), ``concept_name``
    and ``domain`` (``condition``, ``drug``, ``person`` or ``""``), so a run can write OMOP-shaped tables without
    its training data. Empty for images.
    """

    source: str
    channels: int
    height: int
    width: int
    num_classes: int = 0
    class_names: tuple[str, ...] = ()
    split: str = "all"
    channel_names: tuple[str, ...] = ()
    attribution: str = ""
    kind: str = "images"
    target_channels: int = 0
    target_names: tuple[str, ...] = ()
    target_is_mask: bool = False
    target_source: str = ""
    columns: tuple[str, ...] = ()
    sizes: tuple[int, ...] = ()
    intensity: dict[str, Any] = field(default_factory=dict, hash=False)
    target_intensity: dict[str, Any] = field(default_factory=dict, hash=False)
    mask_classes: int = 0
    vocabulary: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def image_size(self) -> int:
        """Side length for square images (the networks' ``image_size``)."""
        return max(self.height, self.width)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name in _TUPLE_FIELDS:  # lists, so JSON / YAML configs hold plain arrays
            data[name] = list(getattr(self, name))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataInfo:
        data = dict(data)
        for name in _TUPLE_FIELDS:
            if name in data:
                data[name] = tuple(int(v) for v in data[name]) if name == "sizes" else tuple(data[name])
        for name in ("intensity", "target_intensity", "vocabulary"):  # absent in older configs; null if hand-edited
            data[name] = dict(data.get(name) or {})
        return cls(**data)


_TUPLE_FIELDS = ("class_names", "channel_names", "target_names", "columns", "sizes")


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

    @property
    def tensors(self) -> dict[str, torch.Tensor]:
        """The named tensors of a batch: ``image`` and, where present, ``label``, ``mask``, ``target``."""
        named = {"image": self.images, "label": self.labels, "mask": self.masks, "target": self.targets}
        return {k: v for k, v in named.items() if v is not None}

    def spec(self) -> DataSpec:
        """Images (kind ``images``), or paired data when a source filled ``target``."""
        from synthmed.data.sets import DataSpec

        channels = {k: (int(v.shape[1]) if v.dim() >= 2 else None) for k, v in self.tensors.items()}
        return DataSpec("paired" if self.targets is not None else "images", channels)

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """A training batch as one gather per tensor (no per-sample Python work, no ``meta``)."""
        return {k: v.index_select(0, indices) for k, v in self.tensors.items()}

    def batches(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> BatchStream:
        """Endless training batches, epoch by epoch, with a resumable state."""
        from synthmed.data.sets import SampledBatches

        return SampledBatches(self.batch, len(self), self.images.device, batch_size, seed, rank, world_size)

    def map_tensors(self, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> ImageDataset:
        """The same set with ``fn(name, tensor)`` applied to each named tensor (device moves, memory layout)."""

        def apply(name: str, t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else fn(name, t)

        return replace(self, images=fn("image", self.images), labels=apply("label", self.labels),
                       masks=apply("mask", self.masks), targets=apply("target", self.targets))

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

        return self.map_tensors(lambda _, t: t.to(device))

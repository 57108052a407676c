"""Training data as named tensors, whatever its kind: images, paired images, unpaired domains, records.

Every training set is held in memory and hands out batches as dicts of named tensors, one gather per tensor:

========== ==================================================== ==================================
kind       batch keys                                           built by
========== ==================================================== ==================================
images     ``image`` (+ ``label``, ``mask``)                    :class:`~synthmed.data.dataset.ImageDataset`
paired     ``image`` -> ``target`` (+ ``mask``, ``label``)      :class:`TensorSet` (``load_paired``)
unpaired   ``image`` (domain A), ``target`` (domain B)          :class:`UnpairedSet`, each domain sampled alone
records    ``record`` (N, D) float, columns named               :class:`TensorSet` (``load_records``)
========== ==================================================== ==================================

What a set gives is described by a :class:`DataSpec`; a consumer (a recipe) states the spec it needs and
:func:`check_spec` turns a mismatch into one line naming both. Nothing here knows about GANs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import torch

from synthmed.data.dataset import DataInfo
from synthmed.data.sampling import EpochSampler
from synthmed.errors import ConfigError

KINDS = ("images", "paired", "unpaired", "records")
_KIND_WORDS = {
    "images": "images",
    "paired": "paired data (image -> target)",
    "unpaired": "unpaired data (domain A as image, domain B as target)",
    "records": "tabular records",
}


@dataclass(frozen=True)
class DataSpec:
    """What a training set gives (or a recipe needs): its kind and batch keys with their channel counts.

    ``channels`` maps a key to its channel count (images) or width (records); ``None`` means "any". A needed
    spec matches a given one when the kinds agree, every needed key is given, and fixed counts agree.
    """

    kind: str
    channels: dict[str, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown data kind {self.kind!r}; kinds: {', '.join(KINDS)}")

    def describe(self) -> str:
        keys = ", ".join(k if c is None else f"{k} ({c} ch)" for k, c in self.channels.items())
        return f"{_KIND_WORDS[self.kind]}" + (f" [{keys}]" if keys and self.kind != "records" else "")


def _hint(needed: DataSpec, given: DataSpec) -> str:
    if needed.kind == "paired" and given.kind == "images" and "mask" in given.channels:
        return "pass --pair image:mask"
    if needed.kind == "paired":
        return "pass --target FOLDER (files matched by name) or --pair A:B (channels of one array)"
    if needed.kind == "unpaired":
        return ("pass --data-kind unpaired with --target FOLDER (domain B) or --pair A:B (channel groups of "
                "disjoint patients)")
    if needed.kind == "records":
        return "give a CSV or parquet file of records"
    return "give images (a folder, npz, DICOM, NIfTI or medmnist:NAME)"


def check_spec(needed: DataSpec, given: DataSpec, data_name: str, recipe_name: str) -> None:
    """Raise one :class:`ConfigError` line when ``given`` data cannot feed a recipe that needs ``needed``."""
    what = _KIND_WORDS[given.kind] if given.kind != "images" else "images" + (
        " and masks" if "mask" in given.channels else "")
    if needed.kind != given.kind:
        raise ConfigError(f"recipe {recipe_name!r} needs {_KIND_WORDS[needed.kind]}; {data_name} gives {what}: "
                          f"{_hint(needed, given)}")
    for key, channels in needed.channels.items():
        if key not in given.channels:
            raise ConfigError(f"recipe {recipe_name!r} needs '{key}' in every batch; {data_name} gives "
                              f"{', '.join(given.channels) or 'nothing'}")
        have = given.channels[key]
        if channels is not None and have is not None and channels != have:
            raise ConfigError(f"recipe {recipe_name!r} needs '{key}' with {channels} channel(s); {data_name} "
                              f"gives {have} (choose channels with --channels)")


class BatchStream(Protocol):
    """Endless batches with a state that a checkpoint stores (so a resumed run draws the same batches)."""

    def next(self) -> dict[str, torch.Tensor]: ...

    def state(self) -> dict[str, torch.Tensor]: ...

    def load_state(self, state: dict[str, torch.Tensor]) -> None: ...


class TrainingSet(Protocol):
    """What the trainer needs of training data: its size, its description, batches, a device move."""

    info: DataInfo

    def __len__(self) -> int: ...

    def spec(self) -> DataSpec: ...

    def batches(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> BatchStream: ...

    def to(self, device: torch.device | str) -> TrainingSet: ...

    def map_tensors(self, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> TrainingSet: ...


class SampledBatches:
    """Batches of one in-memory set, drawn epoch by epoch without replacement (:class:`EpochSampler`)."""

    def __init__(self, gather: Callable[[torch.Tensor], dict[str, torch.Tensor]], n: int, device: torch.device,
                 batch_size: int, seed: int, rank: int = 0, world_size: int = 1, prefix: str = "sampler") -> None:
        self.gather = gather
        self.device = device
        self.prefix = prefix
        self.sampler = EpochSampler(n, batch_size, seed=seed, rank=rank, world_size=world_size)

    def next(self) -> dict[str, torch.Tensor]:
        return self.gather(self.sampler.next().to(self.device, non_blocking=True))

    def state(self) -> dict[str, torch.Tensor]:
        return {k.replace("sampler", self.prefix, 1): v for k, v in self.sampler.state().items()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.sampler.load_state({k.replace(self.prefix, "sampler", 1): v for k, v in state.items()
                                 if k.startswith(self.prefix + "/")})


def _device_of(tensors: dict[str, torch.Tensor]) -> torch.device:
    return next(iter(tensors.values())).device


@dataclass
class TensorSet:
    """N samples as named tensors that share their first dimension (paired images, records, ...).

    ``kind`` is one of :data:`KINDS`; ``patients`` (one id per sample) drive patient-level splits;
    ``columns`` names the columns of a ``record`` tensor (its vocabulary: diagnosis or drug codes).
    """

    tensors: dict[str, torch.Tensor]
    info: DataInfo
    kind: str = "paired"
    patients: np.ndarray | None = None
    columns: tuple[str, ...] = ()
    meta: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.tensors:
            raise ValueError("a TensorSet needs at least one tensor")
        sizes = {k: int(v.shape[0]) for k, v in self.tensors.items()}
        if len(set(sizes.values())) != 1:
            raise ValueError(f"named tensors disagree on the number of samples: {sizes}")
        if self.patients is not None and len(self.patients) != len(self):
            raise ValueError(f"patients has {len(self.patients)} entries for {len(self)} samples")

    def __len__(self) -> int:
        return int(next(iter(self.tensors.values())).shape[0])

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample: dict[str, Any] = {k: v[index] for k, v in self.tensors.items()}
        meta = dict(self.meta[index]) if self.meta else {}
        if self.patients is not None:
            meta.setdefault("patient", str(self.patients[index]))
        sample["meta"] = meta
        return sample

    def spec(self) -> DataSpec:
        def width(t: torch.Tensor) -> int | None:
            return int(t.shape[1]) if t.dim() >= 2 else None

        return DataSpec(self.kind, {k: width(v) for k, v in self.tensors.items()})

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v.index_select(0, indices) for k, v in self.tensors.items()}

    def batches(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> BatchStream:
        return SampledBatches(self.batch, len(self), _device_of(self.tensors), batch_size, seed, rank, world_size)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor, split: str | None = None) -> TensorSet:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return replace(
            self, tensors={k: v.index_select(0, idx.to(v.device)) for k, v in self.tensors.items()},
            info=replace(self.info, split=split or self.info.split),
            patients=None if self.patients is None else self.patients[idx.numpy()],
            meta=[self.meta[i] for i in idx.tolist()] if self.meta else [],
        )

    def map_tensors(self, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> TensorSet:
        return replace(self, tensors={k: fn(k, v) for k, v in self.tensors.items()})

    def to(self, device: torch.device | str) -> TensorSet:
        return self.map_tensors(lambda _, t: t.to(device))


class _UnpairedBatches:
    """Independent streams over the two domains: their own orders, their own epochs, one stored state."""

    def __init__(self, a: BatchStream, b: BatchStream) -> None:
        self.a, self.b = a, b

    def next(self) -> dict[str, torch.Tensor]:
        return {**self.a.next(), **self.b.next()}

    def state(self) -> dict[str, torch.Tensor]:
        return {**self.a.state(), **self.b.state()}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.a.load_state(state)
        self.b.load_state(state)


@dataclass
class UnpairedSet:
    """Two domains of different sizes (CycleGAN): batches hold ``image`` from A and ``target`` from B, drawn
    independently, so no sample of A is ever tied to one of B. ``len`` is the larger domain (one epoch)."""

    domain_a: TensorSet
    domain_b: TensorSet
    info: DataInfo

    def __post_init__(self) -> None:
        if "image" not in self.domain_a.tensors or "target" not in self.domain_b.tensors:
            raise ValueError("an UnpairedSet holds 'image' in domain A and 'target' in domain B")

    def __len__(self) -> int:
        return max(len(self.domain_a), len(self.domain_b))

    @property
    def sizes(self) -> tuple[int, int]:
        return len(self.domain_a), len(self.domain_b)

    def spec(self) -> DataSpec:
        return DataSpec("unpaired", {"image": int(self.domain_a.tensors["image"].shape[1]),
                                     "target": int(self.domain_b.tensors["target"].shape[1])})

    def batches(self, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> BatchStream:
        smallest = min(self.sizes)
        if batch_size * world_size > smallest:
            raise ValueError(f"batch of {batch_size * world_size} is larger than the smaller domain ({smallest})")
        a = SampledBatches(self.domain_a.batch, len(self.domain_a), _device_of(self.domain_a.tensors),
                           batch_size, seed, rank, world_size, prefix="sampler_a")
        b = SampledBatches(self.domain_b.batch, len(self.domain_b), _device_of(self.domain_b.tensors),
                           batch_size, seed + 7919, rank, world_size, prefix="sampler_b")
        return _UnpairedBatches(a, b)

    def map_tensors(self, fn: Callable[[str, torch.Tensor], torch.Tensor]) -> UnpairedSet:
        return replace(self, domain_a=self.domain_a.map_tensors(fn), domain_b=self.domain_b.map_tensors(fn))

    def to(self, device: torch.device | str) -> UnpairedSet:
        return self.map_tensors(lambda _, t: t.to(device))

"""Batch indices drawn without replacement, epoch by epoch, with a resumable state."""

from __future__ import annotations

import torch


class EpochSampler:
    """Shuffles ``n`` indices each epoch and hands out batches; the last short batch of an epoch is dropped.

    All processes draw the same global batch of ``batch_size * world_size`` indices from the same generator and
    each keeps its own slice, so data-parallel ranks never see the same sample in one step.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.n = n
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.global_batch = batch_size * world_size
        if self.global_batch > n:
            raise ValueError(f"batch of {self.global_batch} is larger than the {n} training samples")
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(n, generator=self.generator)
        self.position = 0
        self.epoch = 0

    def next(self) -> torch.Tensor:
        if self.position + self.global_batch > self.n:
            self.order = torch.randperm(self.n, generator=self.generator)
            self.position = 0
            self.epoch += 1
        start = self.position + self.rank * self.batch_size
        batch = self.order[start:start + self.batch_size]
        self.position += self.global_batch
        return batch

    def state(self) -> dict[str, torch.Tensor]:
        return {
            "sampler/generator": self.generator.get_state(),
            "sampler/order": self.order.clone(),
            "sampler/position_epoch": torch.tensor([self.position, self.epoch], dtype=torch.int64),
        }

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["sampler/generator"])
        self.order = state["sampler/order"].clone()
        self.position, self.epoch = (int(v) for v in state["sampler/position_epoch"].tolist())

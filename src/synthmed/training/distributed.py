"""Data parallelism across processes started by ``torchrun``.

GAN steps alternate several networks, freeze some of them, and take gradients of gradients (WGAN-GP, R1), all
of which fight ``DistributedDataParallel``'s per-module hooks. As in NVlabs' StyleGAN2-ADA, we keep plain
modules and average each optimiser's gradients with one flattened all-reduce just before it steps: every
process then applies the same update, so the parameters never drift apart. BatchNorm running statistics stay
per process (as with DDP's ``broadcast_buffers=False``); rank 0's are the ones saved.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group that ``torchrun`` describes in the environment; single-process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" and dist.is_nccl_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_gradients(params: list[torch.nn.Parameter], world_size: int) -> None:
    """Average the gradients of ``params`` over all processes in one collective."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def gradient_averager(info: DistInfo) -> Callable[[list[torch.nn.Parameter]], None] | None:
    """What :class:`~synthmed.recipes.step.StepContext` calls before each optimiser step: None in one process."""
    return functools.partial(all_reduce_gradients, world_size=info.world_size) if info.enabled else None


def value_averager(info: DistInfo) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """What :meth:`~synthmed.recipes.step.StepContext.mean_over_processes` calls: None in one process."""
    return functools.partial(all_reduce_mean, world_size=info.world_size) if info.enabled else None


def broadcast_module(module: torch.nn.Module) -> None:
    """Make every process start from rank 0's parameters and buffers."""
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def all_reduce_mean(tensor: torch.Tensor, world_size: int) -> torch.Tensor:
    out = tensor.clone()
    dist.all_reduce(out)
    return out / world_size


def any_process(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is true on any process (so all of them stop at the same step)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj: object, world_size: int) -> list[object]:
    out: list[object] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()

"""Data-parallel training under torchrun: read the environment, pick the device, average across processes.

``torchrun --nproc_per_node N -m dflowgen train ...`` sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; without them the run is a single process. CUDA runs use NCCL with one
GPU per process (``cuda:LOCAL_RANK``), CPU runs use gloo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dflowgen.devices import resolve_device
from dflowgen.errors import DflowgenError


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, logs and progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise DflowgenError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_distributed(requested_device: str | None) -> tuple[DistContext, torch.device]:
    """Join the torchrun job described by the environment (if any) and choose this process's device."""
    context = DistContext(_env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0))
    device = resolve_device(requested_device, context.local_rank if context.distributed else None)
    if context.distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=context.rank, world_size=context.world_size)
    return context, device


def shutdown_distributed() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def mean_across(values: torch.Tensor, context: DistContext) -> torch.Tensor:
    """The element-wise mean of ``values`` over all processes (the tensor itself when alone)."""
    if not context.distributed:
        return values
    total = values.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / context.world_size


def barrier(context: DistContext) -> None:
    """Wait for every process (no-op when alone)."""
    if context.distributed:
        dist.barrier()

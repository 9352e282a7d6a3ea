"""torch.distributed identity and helpers shared by training and evaluation (torchrun, DDP).

The process group is joined by the CLI (:func:`init_from_env` reads torchrun's environment);
library code asks :func:`current` who it is and never reads the environment itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """Rank and world size of this process (world_size 1: a single process)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes outputs."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def current() -> DistInfo:
    """The rank and world size of an initialised process group, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size())
    return DistInfo()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op for a single process)."""
    if info.active:
        dist.barrier()


def gather_objects(obj: T, info: DistInfo) -> list[T] | None:
    """Every rank's ``obj`` in rank order on rank 0 (None elsewhere); ``[obj]`` for one process."""
    if not info.active:
        return [obj]
    parts: list[T | None] = [None] * info.world_size
    dist.all_gather_object(parts, obj)
    return [p for p in parts if p is not None] if info.is_main else None


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> None:
    """Sum ``t`` in place over ranks (no-op for a single process)."""
    if info.active:
        dist.all_reduce(t)


def init_from_env(env: Mapping[str, str], device: str) -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (called by the CLI, not the library).

    NCCL on CUDA (each process takes GPU ``LOCAL_RANK``), gloo on CPU. Returns the identity.
    """
    if int(env.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return current()
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(int(env.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return current()


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """Under DDP on CUDA every rank uses its own current GPU; otherwise ``device``."""
    if info.active and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device

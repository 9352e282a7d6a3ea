"""Device selection shared by train, explain and evaluate."""

from __future__ import annotations

import torch

from bam.errors import BamError


def resolve_device(name: str | None) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cuda[:i]`` must exist."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BamError(f"device {name!r} requested but CUDA is not available; use --device cpu")
        return torch.device(name)
    raise BamError(f"unknown device {name!r}; accepted: auto, cpu, cuda, cuda:N")


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated memory on ``device`` in MiB (CUDA), else peak RSS of this process."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

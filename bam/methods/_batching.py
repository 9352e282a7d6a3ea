"""Memory-bounded micro-batching for methods that expand the batch (steps, samples, restarts)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

#: Default number of expanded rows per forward/backward on CPU.
CPU_MICRO_BATCH = 64


def auto_micro_batch(model: torch.nn.Module, inputs: Tensor, bytes_per_row: int | None = None) -> int:
    """Rows per micro-batch: a fixed CPU default, or sized from free memory on CUDA.

    On CUDA the estimate assumes activations of ~``bytes_per_row`` per row (default: 200x the input
    row, a safe bound for ResNet-50 forward+backward) and keeps half the free memory in reserve.
    """
    if inputs.device.type != "cuda":
        return CPU_MICRO_BATCH
    row = inputs[0].numel() * inputs.element_size()
    per_row = bytes_per_row or 200 * row
    free, _total = torch.cuda.mem_get_info(inputs.device)
    return max(1, int(0.5 * free // per_row))


def chunks(n: int, size: int) -> Iterator[slice]:
    """Slices covering ``range(n)`` in pieces of at most ``size``."""
    size = max(1, int(size))
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def resolve_micro_batch(model: torch.nn.Module | None, inputs: Tensor, micro_batch: int | None) -> int:
    """``micro_batch`` when positive, else :func:`auto_micro_batch` (0/None mean "auto")."""
    if micro_batch is not None and int(micro_batch) > 0:
        return int(micro_batch)
    if model is None:
        return max(1, inputs.shape[0])
    return auto_micro_batch(model, inputs)

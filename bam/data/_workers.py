"""Helpers shared by the build and the composite export: deterministic PNG encoding and a job
runner (in-process or a spawn pool)."""

from __future__ import annotations

import io
import multiprocessing
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode uint8 HxWx{3,4} as PNG bytes (no metadata, fixed compression: deterministic)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def map_jobs(fn: Callable[[Any], Any], jobs: list[Any], workers: int) -> Iterable[Any]:
    """Run jobs in-process (workers <= 1) or in a spawn pool, yielding results as they finish."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(fn, jobs)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap_unordered(fn, jobs)

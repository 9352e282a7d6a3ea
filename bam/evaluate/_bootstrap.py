"""Percentile bootstrap confidence intervals over images (Efron & Tibshirani 1993), seeded."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from bam._io import hash_json
from bam.stats import over_resamples


def row_rng(seed: int, *parts: object) -> np.random.Generator:
    """A generator seeded from ``seed`` and a row identity (stable across runs and orderings)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(hash_json([str(p) for p in parts])[:8], 16)])


def bootstrap_ci(per_image: np.ndarray, statistic: Callable[[np.ndarray], float], n_boot: int,
                 confidence: float, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile CI of ``statistic`` over ``n_boot`` resamples (with replacement) of the rows.

    Returns (NaN, NaN) with no rows or ``n_boot`` = 0. For a 1-D sample with the mean as
    statistic the resamples are computed in one vectorised step.
    """
    n = len(per_image)
    if n == 0 or n_boot <= 0:
        return math.nan, math.nan
    idx = rng.integers(0, n, size=(n_boot, n))
    if per_image.ndim == 1 and getattr(statistic, "__name__", "") == "mean_statistic":
        stats = per_image[idx].mean(axis=1)
    else:
        stats = over_resamples(statistic, per_image[idx])
    stats = stats[np.isfinite(stats)]
    if len(stats) == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(stats, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return float(lo), float(hi)

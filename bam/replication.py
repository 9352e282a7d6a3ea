"""Statistics over repeated training runs: the two-level bootstrap and the replication rate (SPEC §6).

An interval over images says nothing about retraining. With S training seeds, each method's value
is pooled as the mean of the per-seed values, and its interval comes from a *two-level* bootstrap
(Davison & Hinkley 1997, §3.8, resampling clusters and then units within them): every outer
resample draws S seeds with replacement, then, for every drawn seed, resamples that seed's images
with replacement and computes the statistic; the pooled resample is the mean over the drawn seeds.
A seed drawn twice in one outer resample gets two independent image resamples. The spread between
seeds therefore enters the interval. With few seeds it is approximate: S = 3 gives 10 distinct
seed multisets, the resampled between-seed variance is (S - 1)/S of the unbiased one (too
narrow), and each seed's image noise is counted on top of the spread of the seed values, which
already contains it (too wide).

The *replication rate* of a metric: of the method pairs resolved in one seed, the share whose
difference has the same sign in each other seed (whether or not it is resolved there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from bam.stats import Statistic, _common, normal_p, over_resamples


def seed_replicates(per_image: np.ndarray, statistic: Statistic, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` image-level bootstrap replicates of ``statistic`` on one seed's per-image rows ([m])."""
    n = len(per_image)
    if n == 0 or m <= 0:
        return np.full(max(m, 0), math.nan)
    idx = rng.integers(0, n, size=(m, n))
    if per_image.ndim == 1 and getattr(statistic, "__name__", "") == "mean_statistic":
        return np.asarray(per_image[idx].mean(axis=1), dtype=float)
    return over_resamples(statistic, per_image[idx])


def paired_seed_replicates(a: tuple[Sequence[str], np.ndarray], b: tuple[Sequence[str], np.ndarray],
                           statistic: Statistic, m: int, rng: np.random.Generator) -> tuple[float, np.ndarray]:
    """statistic(a) - statistic(b) on the images both used in one seed, and ``m`` paired replicates of it.

    ``a`` and ``b`` are (image ids, per-image rows); every replicate draws the same images for both.
    No common image: (NaN, NaN replicates).
    """
    ia, ib = _common(a[0], b[0])
    n = len(ia)
    if n == 0:
        return math.nan, np.full(max(m, 0), math.nan)
    va, vb = a[1][ia], b[1][ib]
    delta = float(statistic(va) - statistic(vb))
    idx = rng.integers(0, n, size=(max(m, 0), n))
    if va.ndim == 1 and getattr(statistic, "__name__", "") == "mean_statistic":
        return delta, np.asarray((va - vb)[idx].mean(axis=1), dtype=float)
    return delta, over_resamples(statistic, va[idx]) - over_resamples(statistic, vb[idx])


@dataclass(frozen=True)
class Pooled:
    """A value pooled over seeds (mean of the per-seed values), its two-level interval, SE and p-value.

    ``p_value``: two-sided, of the value against 0 under N(0, se²) (used for differences).
    """

    value: float
    ci_low: float
    ci_high: float
    se: float
    p_value: float
    n_seeds: int


def two_level(values: Sequence[float], replicates: Sequence[np.ndarray], n_boot: int, confidence: float,
              rng: np.random.Generator) -> Pooled:
    """Pool per-seed ``values`` with a two-level bootstrap of ``n_boot`` resamples.

    ``replicates[s]`` holds at least ``n_boot * S`` independent image-level replicates of seed s
    (:func:`seed_replicates`), S = ``len(values)``; outer resample r uses replicate ``r * S + j`` for
    its j-th drawn seed, so every draw gets a fresh image resample. Seeds whose value is not finite
    are left out. No seed: NaN everywhere.
    """
    keep = [s for s, v in enumerate(values) if math.isfinite(float(v))]
    s_n = len(keep)
    if s_n == 0:
        return Pooled(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    value = float(np.mean([float(values[s]) for s in keep]))
    if n_boot <= 0:
        return Pooled(value, math.nan, math.nan, math.nan, math.nan, s_n)
    reps = np.stack([np.asarray(replicates[s], dtype=float)[: n_boot * s_n] for s in keep])  # [S, n_boot * S]
    if reps.shape[1] < n_boot * s_n:
        raise ValueError(f"two_level needs {n_boot * s_n} replicates per seed, got {reps.shape[1]}")
    drawn = rng.integers(0, s_n, size=(n_boot, s_n))
    column = np.arange(n_boot)[:, None] * s_n + np.arange(s_n)[None, :]
    stats = reps[drawn, column].mean(axis=1)
    stats = stats[np.isfinite(stats)]
    if len(stats) == 0:
        return Pooled(value, math.nan, math.nan, math.nan, math.nan, s_n)
    lo, hi = np.quantile(stats, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    se = float(np.std(stats, ddof=1)) if len(stats) > 1 else math.nan
    return Pooled(value, float(lo), float(hi), se, normal_p(value, se), s_n)


@dataclass(frozen=True)
class Replication:
    """Of the (pair, seed) instances resolved in a seed, checked against every other seed: how many agree."""

    replicated: int
    checked: int

    @property
    def rate(self) -> float:
        """replicated / checked (NaN when nothing was resolved)."""
        return self.replicated / self.checked if self.checked else math.nan


def replication(per_seed: Sequence[Mapping[tuple[str, str], tuple[float, bool]]]) -> Replication:
    """The replication rate of resolved pairs across seeds.

    ``per_seed[s]`` maps a method pair (a, b) to (delta = value(a) - value(b), resolved) in seed s;
    a pair may be given in either order (the sign is flipped to match). For every seed s and pair
    resolved in s, each other seed t where the pair has a finite delta is one check; it replicates
    when sign(delta_t) == sign(delta_s) (a delta of exactly 0 does not).
    """
    canon: list[dict[tuple[str, str], tuple[float, bool]]] = []
    for table in per_seed:
        mine: dict[tuple[str, str], tuple[float, bool]] = {}
        for (a, b), (delta, resolved) in table.items():
            key, sign = ((a, b), 1.0) if a <= b else ((b, a), -1.0)
            mine[key] = (sign * float(delta), bool(resolved))
        canon.append(mine)
    replicated = checked = 0
    for s, table in enumerate(canon):
        for key, (delta, resolved) in table.items():
            if not resolved or not math.isfinite(delta) or delta == 0:
                continue
            for t, other in enumerate(canon):
                if t == s or key not in other or not math.isfinite(other[key][0]):
                    continue
                checked += 1
                replicated += int(np.sign(other[key][0]) == np.sign(delta))
    return Replication(replicated, checked)

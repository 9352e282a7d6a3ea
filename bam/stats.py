"""Statistics for rankings: paired bootstrap differences, Holm's correction, compact letter display,
Kendall's tau and W (SPEC §6).

Methods are scored on the same images, so the difference between two methods is estimated on the
images both used, resampling images and keeping pairs (Efron & Tibshirani 1993, §16). The p-value
is the two-sided normal approximation with the bootstrap standard error; Holm's step-down
correction (Holm 1979) controls the family-wise error over all pairs of one metric, under any
dependence between the pairs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

Statistic = Callable[[np.ndarray], float]


def over_resamples(statistic: Statistic, samples: np.ndarray) -> np.ndarray:
    """``statistic`` of every resample ``samples[b]`` ([B, n, ...] -> [B]).

    Uses the statistic's own vectorised ``over_resamples`` method when it has one (the RMCS
    fitted fall of its curve), else one call per resample.
    """
    batched = getattr(statistic, "over_resamples", None)
    if batched is not None:
        return np.asarray(batched(samples), dtype=float)
    return np.array([statistic(x) for x in samples], dtype=float)


@dataclass(frozen=True)
class PairedDifference:
    """value(a) - value(b) on the images both used, its bootstrap CI and two-sided p-value."""

    n_common: int
    delta: float
    ci_low: float
    ci_high: float
    p_value: float


def _common(ids_a: Sequence[str], ids_b: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Row positions, in a and in b, of the image ids both have (in a's order)."""
    pos_b = {i: n for n, i in enumerate(ids_b)}
    pairs = [(n, pos_b[i]) for n, i in enumerate(ids_a) if i in pos_b]
    if not pairs:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    ia, ib = zip(*pairs)
    return np.asarray(ia, dtype=int), np.asarray(ib, dtype=int)


def normal_p(delta: float, se: float) -> float:
    """Two-sided p-value of ``delta`` under N(0, se²)."""
    if not (math.isfinite(delta) and math.isfinite(se)):
        return math.nan
    if se <= 0:
        return 1.0 if delta == 0 else 0.0
    return math.erfc(abs(delta) / (se * math.sqrt(2.0)))


def paired_difference(a: tuple[Sequence[str], np.ndarray], b: tuple[Sequence[str], np.ndarray], statistic: Statistic,
                      n_boot: int, confidence: float, rng: np.random.Generator) -> PairedDifference:
    """Paired bootstrap of statistic(a) - statistic(b) over the images in both ``a`` and ``b``.

    ``a`` and ``b`` are (image ids, per-image values with one row per id); every resample draws the
    same images for both. With the mean as statistic the resamples are one vectorised step.
    """
    ia, ib = _common(a[0], b[0])
    n = len(ia)
    if n == 0:
        return PairedDifference(0, math.nan, math.nan, math.nan, math.nan)
    va, vb = a[1][ia], b[1][ib]
    delta = statistic(va) - statistic(vb)
    if n_boot <= 0:
        return PairedDifference(n, float(delta), math.nan, math.nan, math.nan)
    idx = rng.integers(0, n, size=(n_boot, n))
    if va.ndim == 1 and getattr(statistic, "__name__", "") == "mean_statistic":
        stats = (va - vb)[idx].mean(axis=1)
    else:
        stats = over_resamples(statistic, va[idx]) - over_resamples(statistic, vb[idx])
    stats = stats[np.isfinite(stats)]
    if len(stats) == 0:
        return PairedDifference(n, float(delta), math.nan, math.nan, math.nan)
    lo, hi = np.quantile(stats, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    se = float(np.std(stats, ddof=1)) if len(stats) > 1 else math.nan
    return PairedDifference(n, float(delta), float(lo), float(hi), normal_p(float(delta), se))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN stays NaN and does not count as a test)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), math.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def letters(order: Sequence[str], resolved: Callable[[str, str], bool]) -> dict[str, str]:
    """Compact letter display over ``order`` (best first): methods that share a letter are not resolved.

    Each letter is a maximal run of consecutive methods (in ``order``) with no resolved pair inside;
    a method gets the letters of every run it belongs to ("a", "ab", "b", ...).
    """
    names = list(order)
    runs: list[tuple[int, int]] = []
    for i in range(len(names)):
        j = i
        while j + 1 < len(names) and not any(resolved(names[k], names[j + 1]) for k in range(i, j + 1)):
            j += 1
        if not runs or j > runs[-1][1]:
            runs.append((i, j))
    out = {n: "" for n in names}
    for r, (i, j) in enumerate(runs):
        tag = _letter(r)
        for k in range(i, j + 1):
            out[names[k]] += tag
    return out


def _letter(r: int) -> str:
    """a..z, then aa, ab, ..."""
    s = ""
    r += 1
    while r:
        r, m = divmod(r - 1, 26)
        s = chr(ord("a") + m) + s
    return s


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between two score vectors over the same items (ties handled); NaN if undefined."""
    xa, ya = np.asarray(x, float), np.asarray(y, float)
    i, j = np.triu_indices(len(xa), k=1)
    dx, dy = np.sign(xa[i] - xa[j]), np.sign(ya[i] - ya[j])
    n0 = len(i)
    tx, ty = int((dx == 0).sum()), int((dy == 0).sum())
    den = math.sqrt((n0 - tx) * (n0 - ty))
    return float((dx * dy).sum() / den) if den > 0 else math.nan


def mean_pairwise_tau(scores: np.ndarray) -> float:
    """Mean Kendall tau-b over every pair of rows of ``scores`` [raters (seeds), items (methods)]."""
    taus = [kendall_tau(scores[a], scores[b]) for a in range(len(scores)) for b in range(a + 1, len(scores))]
    taus = [t for t in taus if math.isfinite(t)]
    return float(np.mean(taus)) if taus else math.nan


def kendall_w(scores: np.ndarray) -> float:
    """Kendall's coefficient of concordance W of [raters, items] scores (higher score = better rank).

    Ranks use average ranks for ties, with the tie correction of Kendall & Babington Smith (1939):
    W = 12 S / (m² (n³ - n) - m Σ T), T = Σ (t³ - t) over tie groups of a rater. 1 = every rater
    ranks the items the same way; 0 = no agreement.
    """
    m, n = scores.shape
    if m < 2 or n < 2:
        return math.nan
    ranks = np.vstack([_average_ranks(r) for r in scores])
    s = float(((ranks.sum(axis=0) - m * (n + 1) / 2.0) ** 2).sum())
    ties = 0.0
    for r in scores:
        _, counts = np.unique(r, return_counts=True)
        ties += float((counts**3 - counts).sum())
    den = m * m * (n**3 - n) - m * ties
    return 12.0 * s / den if den > 0 else math.nan


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n of ``x`` (ascending), ties get their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(1, len(x) + 1, dtype=float)
    for v in np.unique(x):
        tie = x == v
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks

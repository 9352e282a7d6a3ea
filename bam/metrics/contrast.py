"""Model contrast: MCS and its graded version RMCS (SPEC §4.3, §4.7; Yang & Kim 2019, §3.1, §3.4)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bam.metrics._base import MetricInfo, MetricValue, Need, frozen, mean_statistic, pair_records, register_metric
from bam.roles import commonality, commonality_k, commonality_roles

_PAPER = "Yang & Kim, Benchmarking Attribution Methods with Relative Feature Importance, arXiv:1907.09701 (2019)"


def _mcs_needs(num_k: int) -> tuple[Need, ...]:
    """MCS reads the obj and scene models on the val composites."""
    return (Need("obj", "obj", "composite"), Need("scene", "scene", "composite"))


def _rmcs_needs(num_k: int) -> tuple[Need, ...]:
    """RMCS always reads the reference model commonality-K on common_in_scene."""
    return (Need(commonality(num_k), "common_in_scene", "common_in_scene"),)


def _rmcs_curve_needs(num_k: int) -> tuple[Need, ...]:
    """... and the commonality-k models (k = 1..K-1) that exist: the points of the curve."""
    return tuple(Need(commonality(k), "common_in_scene", "common_in_scene") for k in range(1, num_k))


def model_contrast(records: pd.DataFrame, a: tuple[str, str], b: tuple[str, str], metric: str = "mcs",
                   k: int | None = None) -> MetricValue:
    """Mean over the correct-for-both images of g(f_a, x) - g(f_b, x) (records of one method)."""
    ids, ga, gb, excluded = pair_records(records, a, b)
    diff = ga - gb
    return MetricValue(metric=metric, value=mean_statistic(diff), n_used=len(ids), excluded=frozen(excluded),
                       per_image=diff, image_ids=tuple(ids), statistic=mean_statistic, roles=(a[0], b[0]), k=k)


@register_metric(MetricInfo(
    name="mcs", title="Model contrast score", paper=_PAPER, direction="higher", range=(-1.0, 1.0), chance=0.0,
    selection_subset="obj", needs=_mcs_needs,
    description="mean of g(f_obj, x) - g(f_scene, x) over obj/scene val composites both models classify correctly",
))
def mcs(records: pd.DataFrame) -> MetricValue:
    """MCS (SPEC §4.3): mean over C of g(f_obj, x) - g(f_scene, x), x the val composites.

    ``records``: per-image records of one method with the obj model on input "composite" and the
    scene model on input "composite". C = images both classify correctly with a defined g.
    """
    return model_contrast(records, ("obj", "composite"), ("scene", "composite"), "mcs")


def commonality_ks(records: pd.DataFrame) -> list[int]:
    """The k of every ``commonality-k`` role present in ``records``, ascending."""
    return sorted({k for r in records["model_role"].unique() if (k := commonality_k(str(r))) is not None})


def average_ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks of ``v``, ties sharing their average rank (as ``pandas.Series.rank("average")``);
    numpy only (for :func:`spearman`, the rank statistic the RMCS summary used before :class:`CurveFall`)."""
    order = np.argsort(v, kind="mergesort")
    sv = v[order]
    first = np.empty(len(v), dtype=bool)
    first[:1] = True
    first[1:] = sv[1:] != sv[:-1]
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], len(v))
    ranks = np.empty(len(v), dtype=float)
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(first) - 1]
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); 0 when either side is constant, NaN if < 2 points."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 2:
        return math.nan
    rx, ry = average_ranks(x), average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = math.sqrt(float((rx * rx).sum() * (ry * ry).sum()))
    return float((rx * ry).sum() / den) if den > 0 else 0.0


def _column_means(mat: np.ndarray) -> np.ndarray:
    """Means over axis -2 of the finite entries (NaN where a column has none)."""
    with np.errstate(invalid="ignore"):
        counts = np.isfinite(mat).sum(-2)
        return np.where(counts > 0, np.nansum(mat, -2) / np.maximum(counts, 1), np.nan)


@dataclass(frozen=True)
class CurveFall:
    """Fitted fall of a curve: -(least-squares slope of the per-k means on k) x (max k - min k).

    ``__call__`` takes a [n_images, n_k] matrix (NaN = image unused at that k), takes each column's
    mean over its finite entries (the curve points MCS_k), fits a line through the points that exist
    and returns how far it falls from the first k to the last, in the curve's own units (MCS). A
    strictly linear fall from 0.3 to 0.1 scores 0.2, a flat or constant curve 0, a curve of noise
    around 0 a number of the size of that noise: the summary has the null 0 and a bootstrap over the
    images (rows, resampled jointly for every k) gives it a CI. NaN with fewer than 2 points.
    """

    ks: np.ndarray

    @property
    def span(self) -> float:
        """max k - min k over the curve (the k of the columns)."""
        return float(self.ks.max() - self.ks.min()) if len(self.ks) else math.nan

    def _from_means(self, means: np.ndarray) -> float:
        ok = np.isfinite(means)
        if ok.sum() < 2:
            return math.nan
        x, y = self.ks[ok], means[ok]
        dx = x - x.mean()
        return -float((dx * (y - y.mean())).sum() / (dx * dx).sum()) * self.span + 0.0

    def __call__(self, mat: np.ndarray) -> float:
        """The fitted fall of the column means of the finite entries."""
        return self._from_means(_column_means(mat))

    def over_resamples(self, mats: np.ndarray) -> np.ndarray:
        """The statistic of every matrix of ``mats`` [B, n_images, n_k] at once (bootstrap)."""
        means = _column_means(mats)  # [B, n_k]
        out = np.full(len(means), math.nan)
        full = np.isfinite(means).all(1)
        if full.any() and means.shape[1] >= 2:
            dx = self.ks - self.ks.mean()
            m = means[full]
            out[full] = -((m - m.mean(1, keepdims=True)) @ dx) / float((dx * dx).sum()) * self.span + 0.0
        for b in np.flatnonzero(~full):
            out[b] = self._from_means(means[b])
        return out


def curve_summary(metric: str, curve: tuple[MetricValue, ...], roles: tuple[str, ...]) -> MetricValue:
    """The summary row of a curve of paired contrasts (one MetricValue per k): per-image matrix
    [images used at any k, k] (NaN where an image is not used at that k), statistic :class:`CurveFall`,
    ``n_used`` = distinct images, exclusions summed over the points."""
    ids = sorted({i for c in curve for i in c.image_ids})
    pos = {i: n for n, i in enumerate(ids)}
    mat = np.full((len(ids), len(curve)), np.nan)
    for j, c in enumerate(curve):
        for i, v in zip(c.image_ids, c.per_image):
            mat[pos[i], j] = v
    stat = CurveFall(np.array([float(c.k if c.k is not None else j + 1) for j, c in enumerate(curve)]))
    excluded: dict[str, int] = {}
    for c in curve:
        for r, n in c.excluded.items():
            excluded[r] = excluded.get(r, 0) + n
    return MetricValue(metric=metric, value=stat(mat) if ids else math.nan, n_used=len(ids),
                       excluded=frozen(excluded), per_image=mat, image_ids=tuple(ids), statistic=stat, roles=roles,
                       curve=curve)


@register_metric(MetricInfo(
    name="rmcs", title="Relative model contrast (fitted fall of the MCS_k curve)", paper=_PAPER,
    direction="higher", range=(-3.0, 3.0), chance=0.0, selection_subset="common_in_scene", needs=_rmcs_needs,
    optional_needs=_rmcs_curve_needs, min_optional=2, context=("num_k",),
    description="MCS(commonality-k vs commonality-K) on common_in_scene for k=1..K-1 (rows 'rmcs_curve'); "
                "summary = the least-squares line's fall from k=1 to k=K-1 in MCS units (0 = flat or noise)",
))
def rmcs(records: pd.DataFrame, num_k: int | None = None) -> MetricValue:
    """RMCS (SPEC §4.7): the curve MCS_k = MCS(commonality-k vs commonality-K) on common_in_scene.

    Returns as value the fitted fall of the curve (:class:`CurveFall`: minus the least-squares slope
    of MCS_k on k, times K - 2, over the k with at least one used image), positive when the common
    object matters less as k grows, 0 for a flat curve, in MCS units so that a curve of noise near 0
    gives a summary near 0; the curve points (metric ``rmcs_curve``, field ``k``) are in ``.curve``.
    ``num_k`` = K (default: the largest k present in ``records``).
    """
    present = commonality_ks(records)
    big_k = num_k if num_k is not None else (max(present) if present else 0)
    ref = (commonality(big_k) if big_k >= 1 else "", "common_in_scene")
    curve = tuple(model_contrast(records, (commonality(k), "common_in_scene"), ref, "rmcs_curve", k)
                  for k in range(1, big_k))
    return curve_summary("rmcs", curve, commonality_roles(big_k))

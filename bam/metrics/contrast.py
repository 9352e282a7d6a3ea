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
    numpy only, as the RMCS bootstrap calls it hundreds of thousands of times."""
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
class _RmcsStatistic:
    """Negated Spearman between k and the per-k mean of a [n_images, n_k] matrix (NaN = unused)."""

    ks: np.ndarray

    def _from_means(self, means: np.ndarray) -> float:
        ok = np.isfinite(means)
        rho = spearman(self.ks[ok], means[ok])
        return -rho + 0.0 if math.isfinite(rho) else math.nan

    def __call__(self, mat: np.ndarray) -> float:
        """-Spearman(k, column means of the finite entries)."""
        return self._from_means(_column_means(mat))

    def over_resamples(self, mats: np.ndarray) -> np.ndarray:
        """The statistic of every matrix of ``mats`` [B, n_images, n_k] at once (bootstrap)."""
        means = _column_means(mats)  # [B, n_k]
        out = np.full(len(means), math.nan)
        full = np.isfinite(means).all(1)
        if full.any() and means.shape[1] >= 2:
            m = means[full]
            # average ranks per row: #smaller + (#equal + 1) / 2
            ry = (m[:, None, :] < m[:, :, None]).sum(2) + ((m[:, None, :] == m[:, :, None]).sum(2) + 1) / 2.0
            rx = average_ranks(self.ks)
            rx, ry = rx - rx.mean(), ry - ry.mean(1, keepdims=True)
            den = np.sqrt((rx * rx).sum() * (ry * ry).sum(1))
            with np.errstate(invalid="ignore", divide="ignore"):
                rho = np.where(den > 0, (ry * rx).sum(1) / np.where(den > 0, den, 1.0), 0.0)
            out[full] = -rho + 0.0
        for b in np.flatnonzero(~full):
            out[b] = self._from_means(means[b])
        return out


@register_metric(MetricInfo(
    name="rmcs", title="Relative model contrast (rank correlation of the MCS_k curve)", paper=_PAPER,
    direction="higher", range=(-1.0, 1.0), chance=0.0, selection_subset="common_in_scene", needs=_rmcs_needs,
    optional_needs=_rmcs_curve_needs, min_optional=2, context=("num_k",),
    description="MCS(commonality-k vs commonality-K) on common_in_scene for k=1..K-1 (rows 'rmcs_curve'); "
                "summary = -Spearman(k, MCS_k), so 1 means the curve decreases strictly with k",
))
def rmcs(records: pd.DataFrame, num_k: int | None = None) -> MetricValue:
    """RMCS (SPEC §4.7): the curve MCS_k = MCS(commonality-k vs commonality-K) on common_in_scene.

    Returns the summary value -Spearman(k, MCS_k) over the k with at least one used image
    (negated so that higher is better: the common object should matter less as k grows); the
    curve points (metric ``rmcs_curve``, field ``k``) are in ``.curve``. ``num_k`` = K (default:
    the largest k present in ``records``).
    """
    present = commonality_ks(records)
    big_k = num_k if num_k is not None else (max(present) if present else 0)
    ref = (commonality(big_k) if big_k >= 1 else "", "common_in_scene")
    curve = tuple(model_contrast(records, (commonality(k), "common_in_scene"), ref, "rmcs_curve", k)
                  for k in range(1, big_k))
    ids = sorted({i for c in curve for i in c.image_ids})
    pos = {i: n for n, i in enumerate(ids)}
    mat = np.full((len(ids), len(curve)), np.nan)
    for j, c in enumerate(curve):
        for i, v in zip(c.image_ids, c.per_image):
            mat[pos[i], j] = v
    ks = np.arange(1, big_k, dtype=float)
    stat = _RmcsStatistic(ks)
    value = stat(mat) if len(ids) else math.nan
    excluded: dict[str, int] = {}
    for c in curve:
        for r, n in c.excluded.items():
            excluded[r] = excluded.get(r, 0) + n
    roles = commonality_roles(big_k)
    return MetricValue(metric="rmcs", value=value, n_used=len(ids), excluded=frozen(excluded), per_image=mat,
                       image_ids=tuple(ids), statistic=stat, roles=roles, curve=curve)

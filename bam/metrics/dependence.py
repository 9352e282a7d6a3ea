"""Input dependence and independence: IDR and IIR (SPEC §4.4-4.5; Yang & Kim 2019, §3.2-3.3)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bam.metrics._base import MetricInfo, MetricValue, Need, frozen, mean_statistic, pair_records, register_metric

_PAPER = "Yang & Kim, Benchmarking Attribution Methods with Relative Feature Importance, arXiv:1907.09701 (2019)"

#: Relative tolerance of IIR (SPEC §4.5, protocol).
IIR_THRESHOLD = 0.1


def _idr_needs(num_k: int) -> tuple[Need, ...]:
    """IDR reads the scene model on the composites and on their scene-only versions."""
    return (Need("scene", "scene", "composite"), Need("scene", "scene_only", "scene_only"))


def _iir_needs(num_k: int) -> tuple[Need, ...]:
    """IIR reads the scene_only model on the iir_scene images and their patched versions."""
    return (Need("scene_only", "iir_scene", "iir_scene"), Need("scene_only", "iir_scene", "iir_patch"))


@register_metric(MetricInfo(
    name="idr", title="Input dependence rate", paper=_PAPER, direction="higher", range=(0.0, 1.0), chance=0.5,
    selection_subset="obj", needs=_idr_needs,
    description="fraction of images where the scene model attributes less to the object region of the "
                "composite than to the same region of the scene-only image",
))
def idr(records: pd.DataFrame) -> MetricValue:
    """IDR (SPEC §4.4): fraction over C of [g(f_scene, x_scene_only) > g(f_scene, x_composite)].

    ``records``: the scene model's records on inputs "composite" and "scene_only" (the same
    image_id; region = the object mask in both). C = f_scene correct on both, g defined on both.
    """
    ids, g_so, g_comp, excluded = pair_records(records, ("scene", "scene_only"), ("scene", "composite"))
    hits = (g_so > g_comp).astype(float)
    return MetricValue(metric="idr", value=mean_statistic(hits), n_used=len(ids), excluded=frozen(excluded),
                       per_image=hits, image_ids=tuple(ids), statistic=mean_statistic, roles=("scene",))


def iir_hits(g_x: np.ndarray, g_patched: np.ndarray, threshold: float = IIR_THRESHOLD) -> np.ndarray:
    """Per image 1.0 where |g(x) - g(x+delta)| < t * g(x) (strict; g(x) = 0 never counts), else 0.0."""
    return (np.abs(np.asarray(g_x) - np.asarray(g_patched)) < threshold * np.asarray(g_x)).astype(float)


@register_metric(MetricInfo(
    name="iir", title="Input independence rate", paper=_PAPER, direction="higher", range=(0.0, 1.0), chance=None,
    selection_subset="iir_scene", needs=_iir_needs, defaults={"threshold": IIR_THRESHOLD},
    description="fraction of IIR-scene images whose object-region attribution changes by less than t=0.1 "
                "(relative) when a functionally insignificant patch is added",
))
def iir(records: pd.DataFrame, threshold: float = IIR_THRESHOLD) -> MetricValue:
    """IIR (SPEC §4.5): fraction over C of [|g(f_so, x) - g(f_so, x+delta)| < t * g(f_so, x)].

    ``records``: the scene_only model's records on inputs "iir_scene" (x) and "iir_patch"
    (x+delta, with a ``patch_unchanged`` column). C = images whose patch kept the prediction,
    classified correctly on both, g defined on both. ``threshold`` = t (relative).
    """
    ids, g_x, g_p, excluded = pair_records(records, ("scene_only", "iir_scene"), ("scene_only", "iir_patch"))
    hits = iir_hits(g_x, g_p, threshold)
    return MetricValue(metric="iir", value=mean_statistic(hits), n_used=len(ids), excluded=frozen(excluded),
                       per_image=hits, image_ids=tuple(ids), statistic=mean_statistic, roles=("scene_only",))

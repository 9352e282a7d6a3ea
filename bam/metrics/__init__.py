"""BAM metrics: object attribution g(f, x) and MCS / IDR / IIR / RMCS (SPEC §4; Yang & Kim 2019).

>>> from bam.metrics import object_attribution, METRICS, mcs
>>> g = object_attribution(attributions, masks)       # Tensor[N], NaN for a constant map
>>> value = mcs(records)                               # MetricValue over per-image records

Every metric is one function over the per-image records of one method (columns of
``records.csv``), registered in :data:`METRICS` with a frozen :class:`MetricInfo`.
"""

from __future__ import annotations

from bam.metrics._base import (
    EXCLUSION_REASONS,
    METRICS,
    MetricInfo,
    MetricValue,
    Need,
    get_metric_info,
    list_metrics,
    pair_records,
    register_metric,
)
from bam.metrics.contrast import mcs, model_contrast, rmcs, spearman
from bam.metrics.dependence import IIR_THRESHOLD, idr, iir, iir_hits
from bam.metrics.object_attribution import normalise_maps, object_attribution, percentile_rows, positive_map
from bam.metrics.tcav import tcav_mcs, tcav_rmcs, tcav_score

__all__ = [
    "EXCLUSION_REASONS", "IIR_THRESHOLD", "METRICS", "MetricInfo", "MetricValue", "Need", "get_metric_info",
    "idr", "iir", "iir_hits", "list_metrics", "mcs", "model_contrast", "normalise_maps", "object_attribution",
    "pair_records", "percentile_rows", "positive_map", "register_metric", "rmcs", "spearman", "tcav_mcs", "tcav_rmcs",
    "tcav_score",
]

"""TCAV model contrast: TCAV MCS and TCAV RMCS over the records of :func:`bam.concepts.tcav_records`.

Yang & Kim 2019 (§4) ran TCAV (Kim et al. 2018) on the BAM models: the TCAV score of the common
object concept for the object model's object class minus that for the scene model's scene class,
on the common-object-in-common-scene images, is a model contrast; over the commonality-k models it
is a relative contrast. Here both are per image (the mean over the concept runs of "the directional
derivative is positive"), so the evaluation's bootstrap over images is paired. They are registered
with ``concept_method="tcav"``: the evaluation runs TCAV once on the models they need and scores the
method "tcav" with them. Records columns: see :data:`bam.concepts.RECORD_COLUMNS`.
"""

from __future__ import annotations

import pandas as pd

from bam.errors import BamError
from bam.metrics._base import MetricInfo, MetricValue, Need, frozen, mean_statistic, register_metric
from bam.metrics.contrast import commonality_ks, curve_summary
from bam.roles import OBJ, SCENE, commonality, commonality_roles
from bam.schema import bool_column


def _layer_rows(records: pd.DataFrame, layer: str | None) -> pd.DataFrame:
    """Concept-run rows of one layer (None: the rows flagged as the summary layer)."""
    rows = records[records["kind"] == "concept"]
    if layer is None:
        rows = rows[bool_column(rows["summary"], False)]
        if rows.empty:
            raise BamError("tcav records have no summary layer; accepted: records from tcav_records or a layer name")
        return rows
    out = rows[rows["layer"] == layer]
    if out.empty:
        layers = sorted(map(str, rows["layer"].unique()))
        raise BamError(f"tcav layer {layer!r} is not in the records; accepted: {', '.join(layers) or '(none)'}")
    return out


def _per_image(rows: pd.DataFrame, role: str) -> pd.DataFrame:
    """[image_id, share of positive concept runs, correct] of one model role."""
    sel = rows[rows["model_role"] == role]
    if sel.empty:
        raise BamError(f"tcav records have no model role {role!r}; accepted: "
                       f"{', '.join(sorted(map(str, rows['model_role'].unique())))}")
    frame = pd.DataFrame({"image_id": sel["image_id"].astype(str).to_numpy(),
                          "positive": bool_column(sel["positive"], False).astype(float),
                          "correct": bool_column(sel["correct"], False)})
    return frame.groupby("image_id", sort=True).agg(share=("positive", "mean"), correct=("correct", "all"))


def _contrast(rows: pd.DataFrame, a: str, b: str, correct_only: bool, metric: str,
              k: int | None = None) -> MetricValue:
    """Per image: share of positive runs of role ``a`` minus that of role ``b``."""
    pa, pb = _per_image(rows, a), _per_image(rows, b)
    m = pa.merge(pb, how="outer", left_index=True, right_index=True, suffixes=("_a", "_b")).sort_index()
    both = m["share_a"].notna().to_numpy() & m["share_b"].notna().to_numpy()
    correct = (m["correct_a"].fillna(False).astype(bool).to_numpy()
               & m["correct_b"].fillna(False).astype(bool).to_numpy())
    used = both & (correct | (not correct_only))
    excluded = {"missing": int((~both).sum()), "incorrect": int((both & ~used).sum())}
    diff = (m["share_a"] - m["share_b"]).to_numpy(dtype=float)[used]
    ids = tuple(str(i) for i in m.index[used])
    return MetricValue(metric=metric, value=mean_statistic(diff), n_used=len(ids),
                       excluded=frozen({r: n for r, n in excluded.items() if n}), per_image=diff, image_ids=ids,
                       statistic=mean_statistic, roles=(a, b), k=k)


def tcav_score(records: pd.DataFrame, role: str, layer: str | None = None) -> MetricValue:
    """TCAV score of one model role: the mean over target images of the share of positive concept runs."""
    per = _per_image(_layer_rows(records, layer), role)
    x = per["share"].to_numpy(dtype=float)
    return MetricValue(metric="tcav_score", value=mean_statistic(x), n_used=len(x), excluded=frozen({}),
                       per_image=x, image_ids=tuple(map(str, per.index)), statistic=mean_statistic, roles=(role,))


_PAPER = ("Yang & Kim, Benchmarking Attribution Methods with Relative Feature Importance, arXiv:1907.09701 (2019); "
          "Kim et al., TCAV, ICML 2018")


def _mcs_roles(num_k: int) -> tuple[Need, ...]:
    """TCAV MCS scores the obj and scene models on the common-in-scene images."""
    return (Need(OBJ, "common_in_scene", "tcav"), Need(SCENE, "common_in_scene", "tcav"))


def _rmcs_ref(num_k: int) -> tuple[Need, ...]:
    """TCAV RMCS always needs commonality-K (the reference) ..."""
    return (Need(commonality(num_k), "common_in_scene", "tcav"),)


def _rmcs_curve(num_k: int) -> tuple[Need, ...]:
    """... and the commonality-k models that exist (the curve points)."""
    return tuple(Need(commonality(k), "common_in_scene", "tcav") for k in range(1, num_k))


@register_metric(MetricInfo(
    name="tcav_mcs", title="TCAV model contrast", paper=_PAPER, direction="higher", range=(-1.0, 1.0), chance=0.0,
    selection_subset="common_in_scene", needs=_mcs_roles, defaults={"layer": None, "correct_only": False},
    concept_method="tcav",
    description="TCAV score of the common-object concept for the obj model's object class minus that for the "
                "scene model's common-scene class, on the common-object-in-common-scene images",
))
def tcav_mcs(records: pd.DataFrame, layer: str | None = None, correct_only: bool = False) -> MetricValue:
    """TCAV MCS = TCAV(obj model, common object class) - TCAV(scene model, common scene class).

    Per target image: mean over the concept runs of ``positive`` for the obj model minus that for
    the scene model. ``layer``: the bottleneck (None: the summary layer of the records);
    ``correct_only``: use only images both models classify as their target class (SPEC §4.2
    style; TCAV itself scores every image of the class, the default). Range [-1, 1], higher is better.
    """
    return _contrast(_layer_rows(records, layer), OBJ, SCENE, correct_only, "tcav_mcs")


@register_metric(MetricInfo(
    name="tcav_rmcs", title="TCAV relative model contrast (fitted fall of the curve)", paper=_PAPER,
    direction="higher", range=(-3.0, 3.0), chance=0.0, selection_subset="common_in_scene", needs=_rmcs_ref,
    optional_needs=_rmcs_curve, min_optional=2, context=("num_k",), defaults={"layer": None, "correct_only": False},
    concept_method="tcav",
    description="TCAV_k - TCAV_K over the commonality models (rows 'tcav_rmcs_curve'); summary = the "
                "least-squares line's fall from k=1 to k=K-1 (0 = flat or noise)",
))
def tcav_rmcs(records: pd.DataFrame, layer: str | None = None, num_k: int | None = None,
              correct_only: bool = False) -> MetricValue:
    """TCAV RMCS: the curve TCAV_k - TCAV_K (commonality-k vs commonality-K) for k = 1..K-1 and its
    summary, the fitted fall of the curve from k = 1 to K - 1 (:class:`bam.metrics.contrast.CurveFall`,
    as :func:`bam.metrics.contrast.rmcs`; positive: decreasing in k, 0: flat).

    The curve points (metric ``tcav_rmcs_curve``, field ``k``) are in ``.curve``; ``num_k`` = K
    (default: the largest k in the records).
    """
    rows = _layer_rows(records, layer)
    present = commonality_ks(rows)
    big_k = num_k if num_k is not None else (max(present) if present else 0)
    if big_k < 2:
        raise BamError(f"tcav_rmcs needs commonality-k models for k = 1..K with K >= 2; found k = {present}")
    curve = tuple(_contrast(rows, commonality(k), commonality(big_k), correct_only, "tcav_rmcs_curve", k)
                  for k in range(1, big_k))
    return curve_summary("tcav_rmcs", curve, commonality_roles(big_k))

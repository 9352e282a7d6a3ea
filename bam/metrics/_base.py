"""Metric metadata, the per-metric result type, the registry, and the shared pairing logic.

A metric is a function ``fn(records, **params) -> MetricValue`` over the per-image records of
ONE method (a pandas DataFrame with the ``records.csv`` columns of docs/architecture.md),
registered with :func:`register_metric` and a frozen :class:`MetricInfo`.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from bam.registry import Registry
from bam.schema import bool_column

#: Why an image is left out of a metric, in the order they are checked (first match wins).
#: ``missing``: a record of the pair is absent; ``patch_changed``: the IIR patch changed the
#: prediction (SPEC §4.6); ``incorrect``: a model of the pair misclassifies it (SPEC §4.2);
#: ``method_failed``: the method reported failure (``valid`` false); ``nonfinite``: NaN/inf in the
#: attribution; ``empty_mask``: no object pixel; ``constant_map``: P99 == min (SPEC §4.1).
EXCLUSION_REASONS: tuple[str, ...] = (
    "missing", "patch_changed", "incorrect", "method_failed", "nonfinite", "empty_mask", "constant_map",
)


class Need(NamedTuple):
    """One (model role, subset, input) whose records a metric reads."""

    role: str
    subset: str
    input: str


def _no_needs(num_k: int) -> tuple[Need, ...]:
    """No records."""
    return ()


@dataclass(frozen=True)
class MetricInfo:
    """Metadata of one metric (read by the CLI, the evaluation planner and reports).

    The planner runs a metric only when every model role of ``needs`` is present, plus at least
    ``min_optional`` of ``optional_needs`` (absent optional roles leave points out, e.g. of the
    RMCS curve). The metric function is called as ``fn(records, **params)`` with ``params`` =
    ``defaults`` overridden by the evaluation config's ``metric_params[name]``, plus the facts of
    the evaluated dataset named in ``context`` (e.g. ``num_k``, the number of scene classes).
    """

    name: str
    title: str
    paper: str
    direction: str  # "higher" | "lower"
    range: tuple[float, float]
    #: the expected value of an attribution unrelated to the models (None: not defined)
    chance: float | None
    #: the dataset subset whose val images are selected (and limited by ``EvalConfig.images[name]``)
    selection_subset: str
    #: K (number of scene classes) -> the (role, subset, input) triples it always reads
    needs: Callable[[int], tuple[Need, ...]] = _no_needs
    #: K -> further triples it reads when their models exist
    optional_needs: Callable[[int], tuple[Need, ...]] = _no_needs
    #: how many of ``optional_needs`` must be present for the metric to run
    min_optional: int = 0
    #: tunable parameters and their protocol defaults
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: dataset facts passed as keyword arguments (accepted: "num_k")
    context: tuple[str, ...] = ()
    #: a concept method (bam.concepts, e.g. "tcav") whose records it reads instead of attribution records;
    #: such a metric scores that method, not the attribution methods, and its needs name roles only
    concept_method: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", types.MappingProxyType(dict(self.defaults)))
        bad = set(self.context) - set(CONTEXT)
        if bad:
            raise ValueError(f"metric {self.name}: unknown context {sorted(bad)}; accepted: {CONTEXT}")


#: Dataset facts a metric may ask for (:attr:`MetricInfo.context`).
CONTEXT: tuple[str, ...] = ("num_k",)


@dataclass(frozen=True)
class MetricValue:
    """The value of one metric for one method, with the images behind it.

    ``per_image`` holds one row per used image (1-D: the statistic is the mean) or, for curve
    summaries, a 2-D array with NaN where an image is not used; ``statistic`` maps a (re)sample
    of its rows to the value (used by the bootstrap).
    """

    metric: str
    value: float
    n_used: int
    excluded: Mapping[str, int]
    per_image: np.ndarray
    image_ids: tuple[str, ...]
    statistic: Callable[[np.ndarray], float]
    roles: tuple[str, ...] = ()
    k: int | None = None
    curve: tuple[MetricValue, ...] = ()

    @property
    def n_excluded(self) -> int:
        """Images left out (all reasons)."""
        return int(sum(self.excluded.values()))


def mean_statistic(x: np.ndarray) -> float:
    """Mean of a 1-D sample; NaN for an empty one."""
    return float(np.mean(x)) if len(x) else math.nan


#: A metric: ``fn(records, **params) -> MetricValue`` (its keyword parameters: MetricInfo.defaults
#: and MetricInfo.context).
MetricFn = Callable[..., MetricValue]


METRICS: Registry[MetricFn] = Registry("metric")


def register_metric(info: MetricInfo) -> Callable[[MetricFn], MetricFn]:
    """Decorator: register ``fn`` under ``info.name``."""

    def deco(fn: MetricFn) -> MetricFn:
        """Add ``fn`` to :data:`METRICS` and attach its metadata."""
        METRICS.add(info.name, fn, info)
        fn.bam_info = info  # type: ignore[attr-defined]
        return fn

    return deco


def get_metric_info(name: str) -> MetricInfo:
    """The :class:`MetricInfo` of a registered metric (BamError listing the names otherwise)."""
    return METRICS.meta(name)  # type: ignore[return-value]


def list_metrics() -> list[str]:
    """Names of the registered metrics, in protocol order."""
    order = ["mcs", "idr", "iir", "rmcs", "tcav_mcs", "tcav_rmcs"]
    return [m for m in order if m in METRICS] + [m for m in METRICS.names() if m not in order]


def row_order() -> dict[str, int]:
    """Position of each metric name among result rows: :func:`list_metrics` order, a metric's
    curve points (``<metric>_curve``) just before its summary row."""
    names = [n for m in list_metrics() for n in (f"{m}_curve", m)]
    return {n: i for i, n in enumerate(names)}


def _side(records: pd.DataFrame, role: str, inp: str) -> pd.DataFrame:
    """Records of one (model role, input) as [image_id, g, correct, status, unchanged]."""
    sel = records[(records["model_role"] == role) & (records["input"] == inp)].drop_duplicates("image_id")
    g = pd.to_numeric(sel["g"], errors="coerce").to_numpy(dtype=float)
    valid = bool_column(sel["valid"], False)
    if "status" in sel.columns:
        status = sel["status"].fillna("ok").astype(str).to_numpy()
    else:
        status = np.where(valid & np.isfinite(g), "ok", np.where(valid, "constant_map", "method_failed"))
    status = np.where((status == "ok") & ~np.isfinite(g), "constant_map", status)
    unchanged = (bool_column(sel["patch_unchanged"], True) if "patch_unchanged" in sel.columns
                 else np.ones(len(sel), bool))
    return pd.DataFrame({"image_id": sel["image_id"].astype(str).to_numpy(), "g": g,
                         "correct": bool_column(sel["correct"], False), "status": status, "unchanged": unchanged})


def _flag(col: pd.Series, missing: bool) -> np.ndarray:
    """A joined boolean column with ``missing`` where the record was absent."""
    return col.fillna(missing).astype(bool).to_numpy()


def pair_records(records: pd.DataFrame, a: tuple[str, str], b: tuple[str, str],
                 ids: list[str] | None = None) -> tuple[list[str], np.ndarray, np.ndarray, dict[str, int]]:
    """Join the records of (role, input) ``a`` and ``b`` on image_id and apply the filters.

    Returns (used image ids in sorted order, g of a, g of b, {reason: count}) where an image is
    used only if both records exist, the IIR patch (if any) kept the prediction, both models
    classify it correctly and both g are defined (SPEC §4.1-4.2). The first reason in
    :data:`EXCLUSION_REASONS` that applies is counted. ``ids`` restricts to those images.
    """
    sa, sb = _side(records, *a), _side(records, *b)
    m = sa.merge(sb, on="image_id", how="outer", suffixes=("_a", "_b"), indicator=True)
    if ids is not None:
        want = set(map(str, ids))
        m = m[m["image_id"].isin(want)]
        extra = len(want - set(m["image_id"]))
    else:
        extra = 0
    m = m.sort_values("image_id", kind="stable").reset_index(drop=True)
    both = (m["_merge"] == "both").to_numpy()
    unchanged = _flag(m["unchanged_a"], True) & _flag(m["unchanged_b"], True)
    correct = _flag(m["correct_a"], False) & _flag(m["correct_b"], False)
    sta, stb = m["status_a"].fillna("").to_numpy(), m["status_b"].fillna("").to_numpy()
    conds = [~both, ~unchanged, ~correct]
    conds += [(sta == r) | (stb == r) for r in ("method_failed", "nonfinite", "empty_mask", "constant_map")]
    reason = np.select(conds, list(EXCLUSION_REASONS), default="")
    excluded = {r: int((reason == r).sum()) for r in EXCLUSION_REASONS}
    excluded["missing"] += extra
    ok = reason == ""
    used = m.loc[ok, "image_id"].tolist()
    return (used, m.loc[ok, "g_a"].to_numpy(dtype=float), m.loc[ok, "g_b"].to_numpy(dtype=float),
            {k: v for k, v in excluded.items() if v})


def frozen(d: Mapping[str, int]) -> Mapping[str, int]:
    """A read-only copy of a reasons mapping."""
    return types.MappingProxyType(dict(d))

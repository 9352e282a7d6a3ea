"""From records to results: every metric as ``fn(records, **params)``, bootstrap CIs, counts, costs (SPEC §6)."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from bam.data.protocols import dataset_name
from bam.evaluate._bootstrap import bootstrap_ci, row_rng
from bam.evaluate._pairs import compare_methods
from bam.evaluate._records import records_for
from bam.evaluate.concepts import ConceptRun
from bam.evaluate.execute import Cost
from bam.evaluate.plan import EvalPlan, MetricPlan
from bam.metrics import METRICS, MetricValue
from bam.schema import CURVE_METRIC, RESULTS_COLUMNS, SCHEMA_VERSION, is_curve_point

log = logging.getLogger("bam.evaluate")

#: Order of metric rows within a method.
_ORDER = {m: i for i, m in enumerate(["mcs", "idr", "iir", CURVE_METRIC, "rmcs", "tcav_mcs", "tcav_rmcs_curve",
                                       "tcav_rmcs"])}


def _num(x: float | None, nd: int = 12) -> float:
    """Round for a stable CSV (None/NaN -> NaN, written as an empty cell)."""
    if x is None or not math.isfinite(float(x)):
        return math.nan
    return round(float(x), nd)


def cost_of(costs: Sequence[Cost], method: str, roles: Sequence[str]) -> dict[str, float | None]:
    """images/s, measured model rows per image and peak MiB of ``method`` over the given roles' inputs."""
    mine = [c for c in costs if c.method == method and c.role in roles]
    secs = sum(c.seconds for c in mine)
    images = sum(c.images for c in mine)
    peak = max((c.peak_mb for c in mine), default=0.0)
    counted = [c for c in mine if c.images and c.forward_rows >= 0]
    counted_images = sum(c.images for c in counted)
    passes = sum(c.forward_rows for c in counted) / counted_images if counted_images else None
    return {"images_per_s": images / secs if secs > 0 else None, "passes_per_image": passes,
            "peak_memory_mb": peak or None}


@dataclass(frozen=True)
class _Scored:
    """Who is scored in a row: the method (attribution or concept), its parameters, space and cost."""

    name: str
    params: Mapping[str, Any]
    space: str
    cost: Callable[[Sequence[str]], Mapping[str, float | None]]
    #: the method's version (results.csv ``method_version``)
    version: int = 1


def _row(plan: EvalPlan, mp: MetricPlan, method: _Scored, v: MetricValue) -> dict[str, Any]:
    """One results.csv row for a metric value (or a curve point) of one method (tier filled later)."""
    cfg = plan.config
    roles = plan.models[mp.kind]
    lo, hi = bootstrap_ci(v.per_image, v.statistic, cfg.bootstrap, cfg.confidence,
                          row_rng(plan.seed, method.name, v.metric, v.k, mp.kind))
    if v.n_used == 0:
        log.warning("%s for %s: no image passed the filters (%s)", v.metric, method.name,
                    json.dumps(dict(v.excluded), sort_keys=True))
    cost = method.cost(v.roles)
    return {
        "schema_version": SCHEMA_VERSION, "dataset": dataset_name(plan.data), "manifest_hash": plan.data.manifest_hash,
        "model_pair": "|".join(v.roles),
        "model_hashes": "|".join(roles[r].sha256[:16] for r in v.roles if r in roles),
        "method": method.name, "method_params": json.dumps(dict(method.params), sort_keys=True, default=str),
        "method_version": method.version,
        "metric": v.metric, "metric_params": json.dumps(dict(mp.params), sort_keys=True, default=str),
        "k": "" if v.k is None else int(v.k), "space": method.space, "value": _num(v.value),
        "ci_low": _num(lo), "ci_high": _num(hi), "n_used": v.n_used, "n_excluded": v.n_excluded,
        "excluded_reasons": json.dumps(dict(v.excluded), sort_keys=True),
        "direction": "none" if v.k is not None else mp.info.direction, "chance": _num(mp.info.chance), "tier": "",
        "images_per_s": _num(cost["images_per_s"], 3), "passes_per_image": _num(cost["passes_per_image"], 3),
        "peak_memory_mb": _num(cost["peak_memory_mb"], 1), "seed": plan.seed,
    }


@dataclass(frozen=True)
class Summary:
    """The tables of an evaluation: one row per (method, metric[, k]), and the pairwise comparisons."""

    results: pd.DataFrame
    comparisons: pd.DataFrame


def _attribution_cost(costs: Sequence[Cost], method: str) -> Callable[[Sequence[str]], Mapping[str, float | None]]:
    """A method's cost over the inputs of the given roles."""
    return lambda roles: cost_of(costs, method, roles)


def _concept_cost(run: ConceptRun) -> Callable[[Sequence[str]], Mapping[str, float | None]]:
    """A concept method's cost: target images scored per second over all its models."""
    n = int(run.records["image_id"].nunique()) * len(run.plan.models) if len(run.records) else 0
    ips = n / run.seconds if run.seconds > 0 else None
    return lambda roles: {"images_per_s": ips, "passes_per_image": None, "peak_memory_mb": None}


def summarise(plan: EvalPlan, records: pd.DataFrame, costs: Sequence[Cost],
              concepts: Sequence[ConceptRun] = ()) -> Summary:
    """Results rows (value, bootstrap CI, counts, costs, tier) and paired method comparisons.

    Each metric is called as ``fn(records, **MetricPlan.params)`` with the records of one attribution
    method on the metric's images, or (concept metrics) the records of its concept method.
    """
    rows: list[dict[str, Any]] = []
    values: dict[tuple[int, str], MetricValue] = {}
    metrics = [*plan.metrics, *(m for c in concepts for m in c.plan.metrics)]
    for idx, mp in enumerate(plan.metrics):
        fn = METRICS.get(mp.name)
        for method in (m for m in plan.methods if m.kind == mp.kind):
            value = fn(records_for(records, method.name, mp.ids_for(method.name)), **dict(mp.params))
            values[(idx, method.name)] = value
            who = _Scored(method.name, method.params, method.space, _attribution_cost(costs, method.name),
                          method.info.version)
            rows.extend({**_row(plan, mp, who, v), "_idx": idx} for v in (*value.curve, value))
    idx = len(plan.metrics)
    for run in concepts:
        who = _Scored(run.plan.method, run.plan.params, "pixel", _concept_cost(run))
        for mp in run.plan.metrics:
            value = METRICS.get(mp.name)(run.records, **dict(mp.params))
            values[(idx, who.name)] = value
            rows.extend({**_row(plan, mp, who, v), "_idx": idx} for v in (*value.curve, value))
            idx += 1
    comparisons, tiers = compare_methods(plan, metrics, values, dataset_name(plan.data))
    for r in rows:
        if r["k"] == "":
            r["tier"] = tiers.get((r["_idx"], r["method"]), "")
    df = pd.DataFrame(rows, columns=[*RESULTS_COLUMNS, "_idx"]).drop(columns="_idx")
    return Summary(results=_sorted(df), comparisons=comparisons)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    """Rows by method, then metric (protocol order), then k."""
    if df.empty:
        return df
    df["_o"] = df["metric"].map(lambda m: _ORDER.get(m, 99))
    df["_k"] = df["k"].map(lambda k: -1 if k == "" else int(k))
    df = df.sort_values(["method", "_o", "metric", "_k"], kind="stable").drop(columns=["_o", "_k"])
    return df.reset_index(drop=True)


def wide_table(results: pd.DataFrame) -> str:
    """Methods x metrics values as a text table (curve points left out); "" when there are none."""
    main = results[~is_curve_point(results)]
    if main.empty:
        return ""
    wide = main.pivot_table(index="method", columns="metric", values="value", aggfunc="first", dropna=False)
    return str(wide.to_string(float_format=lambda v: f"{v:.3f}"))

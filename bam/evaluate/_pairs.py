"""Pairwise method comparisons per metric (paired bootstrap + Holm) and the tiers they imply (SPEC §6).

For every metric and model kind, every pair of methods is compared on the images both used
(:func:`bam.stats.paired_difference`); p-values are Holm-adjusted over the pairs of that
metric, and a difference is *resolved* when the adjusted p-value is below 1 - confidence. The
tiers are a compact letter display over the methods sorted best first: methods that share a
letter are not resolved from each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd

from bam.evaluate._bootstrap import row_rng
from bam.evaluate.plan import EvalPlan, MetricPlan
from bam.metrics import MetricValue
from bam.schema import COMPARISON_COLUMNS, SCHEMA_VERSION
from bam.stats import holm, letters, paired_difference

#: The multiple-comparison correction recorded in comparisons.csv.
CORRECTION = "holm"


def _order(mp: MetricPlan, values: Mapping[str, MetricValue]) -> list[str]:
    """Methods best first (NaN last, then by name)."""
    sign = -1.0 if mp.info.direction == "lower" else 1.0
    return sorted(values, key=lambda m: (not math.isfinite(values[m].value), -sign * values[m].value
                                         if math.isfinite(values[m].value) else 0.0, m))


def compare_methods(plan: EvalPlan, metrics: Sequence[MetricPlan], values: Mapping[tuple[int, str], MetricValue],
                    dataset: str) -> tuple[pd.DataFrame, dict[tuple[int, str], str]]:
    """comparisons.csv rows and the tier letters per (index in ``metrics``, method)."""
    cfg = plan.config
    rows: list[dict[str, Any]] = []
    tiers: dict[tuple[int, str], str] = {}
    for idx, mp in enumerate(metrics):
        mine = {m: v for (i, m), v in values.items() if i == idx}
        order = _order(mp, mine)
        block: list[dict[str, Any]] = []
        for a_pos, a in enumerate(order):
            for b in order[a_pos + 1:]:
                va, vb = mine[a], mine[b]
                d = paired_difference((va.image_ids, va.per_image), (vb.image_ids, vb.per_image), va.statistic,
                                      cfg.bootstrap, cfg.confidence,
                                      row_rng(plan.seed, "pair", mp.name, mp.kind, a, b))
                block.append({"schema_version": SCHEMA_VERSION, "dataset": dataset,
                              "manifest_hash": plan.data.manifest_hash, "model_kind": mp.kind, "metric": mp.name,
                              "method_a": a, "method_b": b, "n_common": d.n_common, "delta": _num(d.delta),
                              "ci_low": _num(d.ci_low), "ci_high": _num(d.ci_high), "p_value": _num(d.p_value),
                              "p_adjusted": math.nan, "resolved": False, "correction": CORRECTION,
                              "confidence": cfg.confidence})
        for row, adj in zip(block, holm([r["p_value"] for r in block])):
            row["p_adjusted"] = _num(adj)
            row["resolved"] = bool(math.isfinite(adj) and adj < 1 - cfg.confidence)
        resolved = frozenset(frozenset((str(r["method_a"]), str(r["method_b"]))) for r in block if r["resolved"])
        ranked = [m for m in order if math.isfinite(mine[m].value)]
        for m, tag in letters(ranked, _is_resolved(resolved)).items():
            tiers[(idx, m)] = tag
        rows.extend(block)
    return pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS)), tiers


def _is_resolved(pairs: frozenset[frozenset[str]]) -> Callable[[str, str], bool]:
    """A predicate: is the pair (a, b) in ``pairs``."""
    return lambda a, b: frozenset((a, b)) in pairs


def _num(x: float) -> float:
    """Rounded for a stable CSV (NaN stays NaN)."""
    return round(float(x), 12) if math.isfinite(float(x)) else math.nan

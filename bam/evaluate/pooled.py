"""Values pooled over training seeds with two-level bootstrap intervals, and the tiers they imply (SPEC §6).

Each evaluation folder's per-image metric values are rebuilt from its ``records.csv`` exactly as
``bam evaluate`` computed them (same image selection, method image caps and metric parameters;
every rebuilt value must equal the folder's ``results.csv`` value). Per model kind and metric,
each method's value is the mean of its per-seed values with a two-level bootstrap interval
(:func:`bam.replication.two_level`: seeds, then images); every pair of methods gets the pooled
paired difference the same way (images paired within a seed), Holm-adjusted over the pairs of
the (kind, metric), and the tiers are the compact letter display of those pooled comparisons.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bam._io import read_json
from bam.errors import BamError
from bam.evaluate._bootstrap import row_rng
from bam.evaluate.config import EvalConfig
from bam.metrics import METRICS, MetricValue, get_metric_info
from bam.replication import paired_seed_replicates, seed_replicates, two_level
from bam.schema import is_curve_point
from bam.stats import holm, letters

#: pooled.csv columns: one row per (model kind, metric, method).
POOLED_COLUMNS: tuple[str, ...] = ("model_kind", "metric", "method", "n_seeds", "value", "ci_low", "ci_high", "se",
                                   "tier", "seed_values", "n_used")
#: pooled_comparisons.csv columns: one row per (model kind, metric, method pair).
POOLED_COMPARISON_COLUMNS: tuple[str, ...] = ("model_kind", "metric", "method_a", "method_b", "n_seeds", "delta",
                                              "ci_low", "ci_high", "p_value", "p_adjusted", "resolved")
#: |rebuilt - reported| above which a folder's records do not reproduce its results.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class SeedValues:
    """One evaluation folder's per-image metric values: (model kind, metric, method) -> MetricValue."""

    folder: Path
    seed: int
    n_boot: int
    confidence: float
    directions: Mapping[str, str]
    values: Mapping[tuple[str, str, str], MetricValue]


def load_seed_values(folder: Path, results: pd.DataFrame, records: pd.DataFrame) -> SeedValues:
    """Rebuild the per-image values behind ``results`` (one folder's results.csv) from its records."""
    from bam.config import load_config
    from bam.data import open_dataset
    from bam.evaluate.plan import select_ids

    prov = read_json(folder / "provenance.json")
    if not isinstance(prov, dict) or not isinstance(prov.get("dataset"), dict):
        raise BamError(f"{folder / 'provenance.json'}: no dataset entry; expected a folder written by bam evaluate")
    cfg = load_config(EvalConfig, folder / "config.yaml", {})
    root = Path(str(prov["dataset"].get("root", "")))
    data = open_dataset(root)  # the image selection is re-read from the dataset the evaluation used
    if data.manifest_hash != prov["dataset"].get("manifest_hash"):
        raise BamError(f"{folder}: dataset {root} has manifest {data.manifest_hash[:12]}, the evaluation used "
                       f"{str(prov['dataset'].get('manifest_hash'))[:12]}")
    kinds = {str(m): str(v.get("kind", "standard")) for m, v in dict(prov.get("methods") or {}).items()}
    by_method = {str(m): d for m, d in records.groupby("method", sort=False)}
    main = results[~is_curve_point(results)]
    reported = {(str(m), str(k)): float(v) for m, k, v in zip(main["method"], main["metric"], main["value"])}
    values: dict[tuple[str, str, str], MetricValue] = {}
    directions: dict[str, str] = {}
    for mp in prov.get("metrics") or []:
        name, kind, params = str(mp["name"]), str(mp["kind"]), dict(mp.get("params") or {})
        info = get_metric_info(name)
        directions[name] = info.direction
        ids = select_ids(data, info.selection_subset, cfg.image_limit(name), cfg.selection_seed)
        for method in sorted(m for m, k in kinds.items() if k == kind and (m, name) in reported):
            cap = cfg.method_image_cap(method)
            mine = set(ids if cap is None or cap >= len(ids) else ids[:cap])
            recs = by_method.get(method, records.iloc[:0])
            value = METRICS.get(name)(recs[recs["image_id"].isin(mine)], **params)
            _check(folder, method, name, value.value, reported[(method, name)])
            values[(kind, name, method)] = value
    return SeedValues(folder=folder, seed=int(cfg.seed), n_boot=int(cfg.bootstrap), confidence=float(cfg.confidence),
                      directions=directions, values=values)


def _check(folder: Path, method: str, metric: str, rebuilt: float, reported: float) -> None:
    """The rebuilt value must be the reported one (both NaN counts as equal)."""
    if math.isnan(rebuilt) and math.isnan(reported):
        return
    if not abs(rebuilt - reported) <= _TOLERANCE:
        raise BamError(f"{folder}: records.csv gives {metric} {rebuilt!r} for {method}, results.csv says {reported!r}; "
                       "the folder is not one evaluation's output set")


def _num(x: float) -> float:
    """Rounded for a stable CSV (NaN stays NaN)."""
    return round(float(x), 12) if math.isfinite(float(x)) else math.nan


def pooled_tables(seeds: Sequence[SeedValues]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """pooled.csv and pooled_comparisons.csv rows over the evaluations in ``seeds`` (see module docstring)."""
    n_boot, conf = seeds[0].n_boot, seeds[0].confidence
    base = seeds[0].seed
    m = n_boot * len(seeds)
    keys = sorted({(k, metric) for s in seeds for (k, metric, _) in s.values})
    rows: list[dict[str, Any]] = []
    comps: list[dict[str, Any]] = []
    for kind, metric in keys:
        methods = sorted({meth for s in seeds for (k, mt, meth) in s.values if (k, mt) == (kind, metric)})
        pooled = {}
        for meth in methods:
            vals = [s.values.get((kind, metric, meth)) for s in seeds]
            reps = [seed_replicates(v.per_image, v.statistic, m, row_rng(s.seed, "pooled", kind, metric, meth))
                    if v is not None else None for v, s in zip(vals, seeds)]
            pooled[meth] = (two_level([v.value if v is not None else math.nan for v in vals],
                                      [r if r is not None else np.zeros(0) for r in reps], n_boot, conf,
                                      row_rng(base, "pooled-seeds", kind, metric, meth)), vals)
        sign = -1.0 if seeds[0].directions.get(metric) == "lower" else 1.0
        order = sorted(methods, key=lambda x: (not math.isfinite(pooled[x][0].value),
                                               -sign * pooled[x][0].value if math.isfinite(pooled[x][0].value)
                                               else 0.0, x))
        block = [_pair(seeds, (kind, metric), (a, b), m) for i, a in enumerate(order) for b in order[i + 1:]]
        for row, adj in zip(block, holm([r["p_value"] for r in block])):
            row["p_adjusted"] = _num(adj)
            row["resolved"] = bool(math.isfinite(adj) and adj < 1 - conf)
        resolved = {frozenset((r["method_a"], r["method_b"])) for r in block if r["resolved"]}
        tiers = letters([x for x in order if math.isfinite(pooled[x][0].value)], _member(resolved))
        comps.extend(block)
        for meth in order:
            p, vals = pooled[meth]
            rows.append({"model_kind": kind, "metric": metric, "method": meth, "n_seeds": p.n_seeds,
                         "value": _num(p.value), "ci_low": _num(p.ci_low), "ci_high": _num(p.ci_high),
                         "se": _num(p.se), "tier": tiers.get(meth, ""),
                         "seed_values": json.dumps([None if v is None or not math.isfinite(v.value)
                                                    else round(v.value, 6) for v in vals]),
                         "n_used": json.dumps([0 if v is None else int(v.n_used) for v in vals])})
    return (pd.DataFrame(rows, columns=list(POOLED_COLUMNS)),
            pd.DataFrame(comps, columns=list(POOLED_COMPARISON_COLUMNS)))


def _member(pairs: set[frozenset[str]]) -> Callable[[str, str], bool]:
    """A predicate: is the pair (a, b) in ``pairs``."""
    return lambda a, b: frozenset((a, b)) in pairs


def _pair(seeds: Sequence[SeedValues], where: tuple[str, str], pair: tuple[str, str], m: int) -> dict[str, Any]:
    """The pooled paired difference of one method pair (a row of pooled_comparisons.csv, unadjusted)."""
    kind, metric = where
    a, b = pair
    deltas: list[float] = []
    reps: list[np.ndarray] = []
    for s in seeds:
        va, vb = s.values.get((kind, metric, a)), s.values.get((kind, metric, b))
        if va is None or vb is None:
            deltas.append(math.nan)
            reps.append(np.zeros(0))
            continue
        d, r = paired_seed_replicates((va.image_ids, va.per_image), (vb.image_ids, vb.per_image), va.statistic, m,
                                      row_rng(s.seed, "pooled-pair", kind, metric, a, b))
        deltas.append(d)
        reps.append(r)
    p = two_level(deltas, reps, seeds[0].n_boot, seeds[0].confidence,
                  row_rng(seeds[0].seed, "pooled-pair-seeds", kind, metric, a, b))
    return {"model_kind": kind, "metric": metric, "method_a": a, "method_b": b, "n_seeds": p.n_seeds,
            "delta": _num(p.value), "ci_low": _num(p.ci_low), "ci_high": _num(p.ci_high), "p_value": _num(p.p_value),
            "p_adjusted": math.nan, "resolved": False}

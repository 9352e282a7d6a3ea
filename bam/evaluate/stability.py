"""Does a ranking generalise beyond one training run? Agreement of method rankings across repeats.

Given the results of N evaluations of independently trained model sets (seeds s, s+1, ...), per
model kind and metric: every method's mean and standard deviation over the repeats, the agreement
of the method rankings across repeats (Kendall's W, 1 = identical rankings, and the mean pairwise
Kendall tau), how many method pairs each repeat resolves (paired bootstrap + Holm,
comparisons.csv) and the replication rate of those resolved pairs (:func:`bam.replication.replication`).
Methods of different model kinds (the invertible methods run on i-RevNets, the others on the
standard models) are never ranked together. Controls are left out of the rankings and of the
replication rate (they are chance references). W and tau count genuine ties (pairs no seed
resolves) as disagreement; the replication rate does not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from bam.replication import replication
from bam.schema import is_curve_point
from bam.stats import kendall_w, mean_pairwise_tau

#: stability.csv columns: one row per (model kind, metric).
STABILITY_COLUMNS: tuple[str, ...] = (
    "model_kind", "metric", "n_repeats", "n_methods", "kendall_w", "mean_tau", "replication_rate", "replicated",
    "replication_checks", "resolved_pairs_mean", "resolved_pairs", "n_pairs", "methods",
)
#: repeats.csv columns: one row per (model kind, metric, method).
REPEATS_COLUMNS: tuple[str, ...] = ("model_kind", "metric", "method", "n_repeats", "mean", "sd", "min", "max",
                                    "values", "seeds")
#: The model kind of a method missing from the kinds mapping (concept methods run on the standard models).
DEFAULT_KIND = "standard"


def _main_rows(results: pd.DataFrame) -> pd.DataFrame:
    """Summary rows (no curve points) of one results table."""
    return results[~is_curve_point(results)]


def _with_kind(results: pd.DataFrame, kinds: Mapping[str, str]) -> pd.DataFrame:
    """Summary rows with a ``model_kind`` column."""
    main = _main_rows(results)
    return main.assign(model_kind=[kinds.get(str(m), DEFAULT_KIND) for m in main["method"]])


def repeats_table(results: Sequence[pd.DataFrame], kinds: Mapping[str, str]) -> pd.DataFrame:
    """Per (model kind, metric, method): mean, sd (ddof 1), min, max over the repeats, and the per-repeat values."""
    frames = [_with_kind(r, kinds).assign(_rep=i) for i, r in enumerate(results)]
    allr = (pd.concat(frames, ignore_index=True) if frames
            else pd.DataFrame(columns=["model_kind", "metric", "method", "value", "seed", "_rep"]))
    rows = []
    for (kind, metric, method), d in allr.groupby(["model_kind", "metric", "method"], sort=True):
        v = d.sort_values("_rep")["value"].to_numpy(dtype=float)
        fin = v[np.isfinite(v)]
        rows.append({"model_kind": kind, "metric": metric, "method": method, "n_repeats": len(fin),
                     "mean": float(fin.mean()) if len(fin) else math.nan,
                     "sd": float(fin.std(ddof=1)) if len(fin) > 1 else math.nan,
                     "min": float(fin.min()) if len(fin) else math.nan,
                     "max": float(fin.max()) if len(fin) else math.nan,
                     "values": json.dumps([None if not math.isfinite(x) else round(float(x), 6) for x in v]),
                     "seeds": json.dumps([str(s) for s in d.sort_values("_rep")["seed"]])})
    return pd.DataFrame(rows, columns=list(REPEATS_COLUMNS))


def _pairs(comparisons: pd.DataFrame, kind: str, metric: str, controls: frozenset[str],
           kinds: Mapping[str, str]) -> dict[tuple[str, str], tuple[float, bool]]:
    """(method_a, method_b) -> (delta, resolved) of one repeat's non-control pairs of one kind and metric."""
    c = comparisons[(comparisons["metric"] == metric) & ~comparisons["method_a"].isin(controls)
                    & ~comparisons["method_b"].isin(controls)]
    if "model_kind" in c.columns:
        c = c[c["model_kind"] == kind]
    else:
        c = c[[kinds.get(str(a), DEFAULT_KIND) == kind for a in c["method_a"]]]
    return {(str(a), str(b)): (float(d), bool(r))
            for a, b, d, r in zip(c["method_a"], c["method_b"], c["delta"], c["resolved"])}


def stability_table(results: Sequence[pd.DataFrame], comparisons: Sequence[pd.DataFrame],
                    controls: frozenset[str], kinds: Mapping[str, str]) -> pd.DataFrame:
    """Per (model kind, metric): W and mean tau of the method rankings across repeats, resolved pairs, replication.

    ``kinds`` maps a method to its model kind (absent: ``standard``); only methods of one kind are
    ranked together.
    """
    tagged = [_with_kind(r, kinds) for r in results]
    keys = sorted({(k, m) for t in tagged for k, m in zip(t["model_kind"], t["metric"])})
    rows = []
    for kind, metric in keys:
        tables = [t[(t["metric"] == metric) & (t["model_kind"] == kind)].set_index("method")["value"] for t in tagged]
        common = sorted(set.intersection(*(set(t.index) for t in tables)) - controls) if tables else []
        scores = np.array([[float(t[m]) for m in common] for t in tables]) if common else np.zeros((len(tables), 0))
        keep = [j for j in range(scores.shape[1]) if np.isfinite(scores[:, j]).all()]
        scores, names = scores[:, keep], [common[j] for j in keep]
        pairs = [_pairs(c, kind, metric, controls, kinds) for c in comparisons]
        counts = [sum(r for _, r in p.values()) for p in pairs]
        rep = replication(pairs)
        rows.append({"model_kind": kind, "metric": metric, "n_repeats": len(tables), "n_methods": len(names),
                     "kendall_w": kendall_w(scores) if len(names) > 1 else math.nan,
                     "mean_tau": mean_pairwise_tau(scores) if len(names) > 1 else math.nan,
                     "replication_rate": rep.rate, "replicated": rep.replicated, "replication_checks": rep.checked,
                     "resolved_pairs_mean": float(np.mean(counts)) if counts else math.nan,
                     "resolved_pairs": json.dumps(counts), "n_pairs": max((len(p) for p in pairs), default=0),
                     "methods": json.dumps(names)})
    return pd.DataFrame(rows, columns=list(STABILITY_COLUMNS))

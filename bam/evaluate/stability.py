"""Does a ranking generalise beyond one training run? Agreement of method rankings across repeats.

Given the results of N evaluations of independently trained model sets (seeds s, s+1, ...), per
metric: every method's mean and standard deviation over the repeats, and the agreement of the
method rankings across repeats: Kendall's W (1 = identical rankings) and the mean pairwise Kendall
tau, plus how many method pairs each repeat resolves (paired bootstrap + Holm, comparisons.csv).
Controls are left out of the rankings (they are chance references).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from bam.schema import is_curve_point
from bam.stats import kendall_w, mean_pairwise_tau

#: stability.csv columns: one row per metric.
STABILITY_COLUMNS: tuple[str, ...] = (
    "metric", "n_repeats", "n_methods", "kendall_w", "mean_tau", "resolved_pairs_mean", "resolved_pairs",
    "n_pairs", "methods",
)
#: repeats.csv columns: one row per (metric, method).
REPEATS_COLUMNS: tuple[str, ...] = ("metric", "method", "n_repeats", "mean", "sd", "min", "max", "values", "seeds")


def _main_rows(results: pd.DataFrame) -> pd.DataFrame:
    """Summary rows (no curve points) of one results table."""
    return results[~is_curve_point(results)]


def repeats_table(results: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Per (metric, method): mean, sd (ddof 1), min, max over the repeats, and the per-repeat values."""
    frames = [_main_rows(r).assign(_rep=i) for i, r in enumerate(results)]
    allr = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["metric", "method"])
    rows = []
    for (metric, method), d in allr.groupby(["metric", "method"], sort=True):
        v = d.sort_values("_rep")["value"].to_numpy(dtype=float)
        fin = v[np.isfinite(v)]
        rows.append({"metric": metric, "method": method, "n_repeats": len(fin),
                     "mean": float(fin.mean()) if len(fin) else math.nan,
                     "sd": float(fin.std(ddof=1)) if len(fin) > 1 else math.nan,
                     "min": float(fin.min()) if len(fin) else math.nan,
                     "max": float(fin.max()) if len(fin) else math.nan,
                     "values": json.dumps([None if not math.isfinite(x) else round(float(x), 6) for x in v]),
                     "seeds": json.dumps([str(s) for s in d.sort_values("_rep")["seed"]])})
    return pd.DataFrame(rows, columns=list(REPEATS_COLUMNS))


def stability_table(results: Sequence[pd.DataFrame], comparisons: Sequence[pd.DataFrame],
                    controls: frozenset[str]) -> pd.DataFrame:
    """Per metric: Kendall's W and mean pairwise tau of the method rankings across repeats, resolved pairs."""
    rows = []
    metrics = sorted({m for r in results for m in _main_rows(r)["metric"]})
    for metric in metrics:
        tables = [_main_rows(r)[_main_rows(r)["metric"] == metric].set_index("method")["value"] for r in results]
        common = sorted(set.intersection(*(set(t.index) for t in tables)) - controls) if tables else []
        scores = np.array([[float(t[m]) for m in common] for t in tables]) if common else np.zeros((len(tables), 0))
        keep = [j for j in range(scores.shape[1]) if np.isfinite(scores[:, j]).all()]
        scores, names = scores[:, keep], [common[j] for j in keep]
        counts = []
        n_pairs = 0
        for c in comparisons:
            mine = c[(c["metric"] == metric) & ~c["method_a"].isin(controls) & ~c["method_b"].isin(controls)]
            counts.append(int(mine["resolved"].astype(bool).sum()))
            n_pairs = max(n_pairs, len(mine))
        rows.append({"metric": metric, "n_repeats": len(tables), "n_methods": len(names),
                     "kendall_w": kendall_w(scores) if len(names) > 1 else math.nan,
                     "mean_tau": mean_pairwise_tau(scores) if len(names) > 1 else math.nan,
                     "resolved_pairs_mean": float(np.mean(counts)) if counts else math.nan,
                     "resolved_pairs": json.dumps(counts), "n_pairs": n_pairs, "methods": json.dumps(names)})
    return pd.DataFrame(rows, columns=list(STABILITY_COLUMNS))

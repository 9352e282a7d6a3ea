"""The summary of repeated evaluations (``bam run --repeats N``, ``bam evaluate --models A --models B``).

Writes ``repeats.csv`` (per metric and method: mean, sd, per-repeat values), ``stability.csv``
(per metric: Kendall's W, mean pairwise tau, resolved pairs per repeat) as one output set, and a
self-contained ``report.html`` with a mean ± sd chart per metric.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bam._io import csv_bytes, write_text
from bam.errors import BamError
from bam.outputs import check_output_set, write_output_set
from bam.schema import read_comparisons, read_results


@dataclass(frozen=True)
class RepeatsSummary:
    """The two summary tables and where they were written."""

    out: Path
    repeats: pd.DataFrame
    stability: pd.DataFrame


def _fmt(x: object, nd: int = 3) -> str:
    """A number for a table cell."""
    return f"{x:.{nd}f}" if isinstance(x, float) and math.isfinite(x) else ("" if isinstance(x, float) else str(x))


def _table(frame: pd.DataFrame, columns: Sequence[str]) -> str:
    """An HTML table of ``columns`` of ``frame``."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r[c]))}</td>" for c in columns) + "</tr>"
                   for r in frame.to_dict("records"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def summarise_repeats(eval_dirs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str]) -> RepeatsSummary:
    """Read every evaluation folder's results.csv and comparisons.csv and write the summary to ``out``."""
    import base64

    from bam.evaluate.stability import repeats_table, stability_table
    from bam.report import figures
    from bam.report.html import control_methods

    if len(eval_dirs) < 2:
        raise BamError(f"a summary of repeats needs at least 2 evaluations, got {len(eval_dirs)}")
    results, comparisons = [], []
    for d in map(Path, eval_dirs):
        check_output_set(d, required=("results.csv", "comparisons.csv"))
        results.append(read_results(d / "results.csv"))
        comparisons.append(read_comparisons(d / "comparisons.csv"))
    controls = control_methods()
    rep = repeats_table(results)
    stab = stability_table(results, comparisons, controls)
    out = Path(out)
    write_output_set(out, {"repeats.csv": csv_bytes(rep), "stability.csv": csv_bytes(stab)})
    parts = ["<h2>Ranking agreement across repeats</h2>",
             "<p>Kendall's W: 1 = every repeat ranks the (non-control) methods the same way, 0 = no agreement; "
             "mean tau: mean Kendall tau-b over pairs of repeats; resolved pairs: method pairs whose paired "
             "difference is resolved (Holm-adjusted) in each repeat.</p>",
             _table(stab, ["metric", "n_repeats", "n_methods", "kendall_w", "mean_tau", "resolved_pairs_mean",
                           "resolved_pairs", "n_pairs"])]
    for metric, d in rep.groupby("metric", sort=False):
        chart = d.assign(value=d["mean"], ci_low=d["mean"] - d["sd"], ci_high=d["mean"] + d["sd"])
        png = figures.ranking_figure(chart, f"{metric}: mean ± sd over repeats", controls, "higher")
        parts.append(f"<h3>{html.escape(str(metric))}</h3><img alt='{html.escape(str(metric))}' "
                     f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
        parts.append(_table(d, ["method", "n_repeats", "mean", "sd", "min", "max", "values"]))
    write_text(out / "report.html", "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>bam repeats"
               "</title><style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{border:1px solid "
               "#ddd;padding:2px 6px}table{border-collapse:collapse}</style></head><body><h1>bam: repeated "
               f"evaluations ({len(eval_dirs)})</h1>" + "".join(parts) + "</body></html>\n")
    return RepeatsSummary(out=out, repeats=rep, stability=stab)

"""The summary of repeated evaluations (``bam run --repeats N``, ``bam evaluate --models A --models B``).

A pure function of the evaluation folders (and the dataset they name). Writes as one output set
``repeats.csv`` (per model kind, metric and method: mean, sd, per-repeat values), ``stability.csv``
(per model kind and metric: Kendall's W, mean pairwise tau, replication rate, resolved pairs per
repeat), ``pooled.csv`` (each method's value pooled over seeds with a two-level bootstrap interval
and the tier of the pooled comparisons) and ``pooled_comparisons.csv``, then a self-contained
``report.html``.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bam._io import csv_bytes, read_json, write_text
from bam.errors import BamError
from bam.outputs import check_output_set, write_output_set
from bam.schema import read_comparisons, read_records, read_results

#: The files of a repeats summary (one output set).
SUMMARY_FILES: tuple[str, ...] = ("repeats.csv", "stability.csv", "pooled.csv", "pooled_comparisons.csv")


@dataclass(frozen=True)
class RepeatsSummary:
    """The summary tables and where they were written."""

    out: Path
    repeats: pd.DataFrame
    stability: pd.DataFrame
    pooled: pd.DataFrame
    pooled_comparisons: pd.DataFrame


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
    """Read every evaluation folder (results, comparisons, records, provenance) and write the summary to ``out``."""
    from bam.evaluate.pooled import load_seed_values, pooled_tables
    from bam.evaluate.stability import repeats_table, stability_table
    from bam.report.html import control_methods

    if len(eval_dirs) < 2:
        raise BamError(f"a summary of repeats needs at least 2 evaluations, got {len(eval_dirs)}")
    results, comparisons, seeds = [], [], []
    kinds: dict[str, str] = {}
    for d in map(Path, eval_dirs):
        check_output_set(d, required=("results.csv", "comparisons.csv", "records.csv", "provenance.json"))
        res = read_results(d / "results.csv")
        results.append(res)
        comparisons.append(read_comparisons(d / "comparisons.csv"))
        seeds.append(load_seed_values(d, res, read_records(d / "records.csv")))
        prov = read_json(d / "provenance.json")
        kinds.update({str(m): str(v.get("kind", "standard")) for m, v in dict(prov.get("methods") or {}).items()})
    controls = control_methods()
    rep = repeats_table(results, kinds)
    stab = stability_table(results, comparisons, controls, kinds)
    pooled, pooled_comp = pooled_tables(seeds)
    out = Path(out)
    write_output_set(out, {"repeats.csv": csv_bytes(rep), "stability.csv": csv_bytes(stab),
                           "pooled.csv": csv_bytes(pooled), "pooled_comparisons.csv": csv_bytes(pooled_comp)})
    write_text(out / "report.html", _html(len(eval_dirs), stab, pooled, controls))
    return RepeatsSummary(out=out, repeats=rep, stability=stab, pooled=pooled, pooled_comparisons=pooled_comp)


def _html(n: int, stab: pd.DataFrame, pooled: pd.DataFrame, controls: frozenset[str]) -> str:
    """The summary's self-contained report."""
    from bam.report import figures

    parts = ["<h2>Ranking agreement across repeats (per model kind)</h2>",
             "<p>Methods run on different model kinds (the invertible methods on i-RevNets, the others on the "
             "standard models) are never ranked together; controls are not ranked. Replication rate: of the method "
             "pairs resolved (Holm-adjusted paired bootstrap) in one repeat, the share whose difference has the same "
             "sign in each other repeat. Kendall's W (1 = every repeat ranks the methods the same way) and the mean "
             "Kendall tau-b over pairs of repeats also count genuine ties, pairs that no repeat resolves, as "
             "disagreement: read them beside the replication rate.</p>",
             _table(stab, ["model_kind", "metric", "n_repeats", "n_methods", "kendall_w", "mean_tau",
                           "replication_rate", "replicated", "replication_checks", "resolved_pairs_mean",
                           "resolved_pairs", "n_pairs"]),
             "<h2>Values pooled over repeats</h2>",
             "<p>Value: the mean of the per-repeat values. Interval: two-level bootstrap (resample repeats, then each "
             "drawn repeat's images), so it covers the training variance as well as the image sample. Tier: compact "
             "letter display of the pooled paired comparisons (Holm-adjusted); methods sharing a letter are not "
             "resolved.</p>"]
    for (kind, metric), d in pooled.groupby(["model_kind", "metric"], sort=False):
        png = figures.ranking_figure(d, f"{metric} ({kind} models): pooled over {n} repeats", controls, "higher")
        label = html.escape(f"{metric} ({kind})")
        parts.append(f"<h3>{label}</h3><img alt='{label}' src='data:image/png;base64,"
                     f"{base64.b64encode(png).decode()}'>")
        parts.append(_table(d, ["method", "n_seeds", "value", "ci_low", "ci_high", "tier", "seed_values", "n_used"]))
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>bam repeats</title><style>"
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto}td,th{border:1px solid #ddd;padding:2px 6px}"
            f"table{{border-collapse:collapse}}</style></head><body><h1>bam: repeated evaluations ({n})</h1>"
            + "".join(parts) + "</body></html>\n")


def summary_lines(summary: RepeatsSummary) -> list[str]:
    """One line per (model kind, metric) of the stability table (what ``bam run`` prints)."""
    return [f"{r['metric']:<10} {r['model_kind']:<10} Kendall W {_fmt(r['kendall_w'])}  mean tau "
            f"{_fmt(r['mean_tau'])}  replication {_fmt(r['replication_rate'])} ({r['replicated']} of "
            f"{r['replication_checks']})  resolved pairs {r['resolved_pairs']} of {r['n_pairs']}"
            for r in summary.stability.to_dict("records")]

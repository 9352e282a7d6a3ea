"""A self-contained HTML report of one evaluation (SPEC §6).

Input: a results directory holding ``results.csv`` (schema 2) and optionally ``provenance.json``,
``records.csv``, ``examples.safetensors`` (see :mod:`bam.report._cases`) and ``examples/*.png``.
Output: one HTML file with inline CSS and every figure embedded as base64 PNG (it opens offline
and can be mailed), plus the same figures as PNG files in ``figures/`` beside it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bam._io import dumps_json, write_bytes, write_text
from bam._paths import confine
from bam.errors import BamError
from bam.outputs import check_output_set
from bam.report import figures
from bam.report._cases import EXAMPLES_FILE, load_examples, worst_mcs_cases
from bam.schema import is_curve_point, parse_json_cell, read_records, read_results


def control_methods() -> frozenset[str]:
    """Controls (SPEC §5: drawn as chance references, never ranked): registered methods of family "control"."""
    from bam.methods import get_info, list_methods

    return frozenset(n for n in list_methods() if get_info(n).family == "control")


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1100px;color:#222;
padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left}
th{background:#f3f5f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.control td{color:#777;font-style:italic;background:#fafafa}
img{max-width:100%;height:auto}.muted{color:#777;font-size:.88em}
details pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:.8em}
nav a{margin-right:1em}
"""


@dataclass(frozen=True)
class ReportOutput:
    """Where the report went: the HTML file and the PNG figures written beside it."""

    html: Path
    figures: tuple[Path, ...]


def _slug(text: str) -> str:
    """A file-name/anchor-safe form of ``text``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "x"


def _num(x: Any, digits: int = 4) -> str:
    """Format a table number: floats with ``digits`` decimals, missing/NaN as ""."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)) or x is pd.NA:
        return ""
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _table(header: list[str], rows: list[list[str]], row_classes: list[str] | None = None,
           numeric: set[int] | None = None) -> str:
    """An HTML table from already-formatted cells (escaped here)."""
    numeric = numeric or set()
    out = ["<table><thead><tr>", "".join(f"<th>{html.escape(h)}</th>" for h in header), "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        cells = "".join(f'<td class="num">{html.escape(c)}</td>' if j in numeric else f"<td>{html.escape(c)}</td>"
                        for j, c in enumerate(row))
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</tbody></table>")
    return "".join(out)


class _Figures:
    """Collects figures: embeds them in the HTML and writes them as PNG files in ``folder``."""

    def __init__(self, folder: Path) -> None:
        """Figures go to ``folder`` (created on the first write)."""
        self.folder = folder
        self.paths: list[Path] = []

    def add(self, name: str, png: bytes, alt: str) -> str:
        """Write ``png`` as ``folder/name.png`` and return an <img> tag with it inline."""
        path = self.folder / f"{_slug(name)}.png"
        n = 2
        while path in self.paths:  # two groups with the same short name: keep both figures
            path = self.folder / f"{_slug(name)}_{n}.png"
            n += 1
        write_bytes(path, png)
        self.paths.append(path)
        data = base64.b64encode(png).decode("ascii")
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _pair_label(pair: str) -> str:
    """A short model-pair label: 'commonality-1|...|commonality-10' -> 'commonality-1 … commonality-10'."""
    roles = str(pair).split("|")
    return " vs ".join(roles) if len(roles) <= 3 else f"{roles[0]} … {roles[-1]} ({len(roles)} models)"


def _short(value: Any) -> str:
    """One-line text for a provenance value (JSON for mappings and lists)."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _models_text(prov: dict[str, Any], results: pd.DataFrame) -> str:
    """'role: arch sha256-prefix' per checkpoint (provenance.json), else role -> hash from results.csv."""
    ckpts = prov.get("checkpoints")
    if isinstance(ckpts, dict) and ckpts:
        parts = []
        for role, info in sorted(ckpts.items()):
            info = info if isinstance(info, dict) else {}
            parts.append(f"{role}: {info.get('arch', '')} {str(info.get('weights_sha256', ''))[:16]}".strip())
        return "; ".join(parts)
    found: dict[str, str] = {}
    for pair, cell in zip(results["model_pair"], results["model_hashes"]):  # "role|role" with "hash|hash"
        roles, hashes = str(pair).split("|"), str(cell).split("|")
        if len(roles) == len(hashes):
            found.update(dict(zip(roles, hashes)))
    return "; ".join(f"{r}: {h}" for r, h in sorted(found.items()) if h)


def _header(results: pd.DataFrame, prov: dict[str, Any], results_dir: Path) -> str:
    """Title block and provenance table (from provenance.json, falling back on results.csv)."""
    dataset = ", ".join(sorted(set(results["dataset"])))
    ds_prov = prov.get("dataset")
    root = ds_prov.get("root") if isinstance(ds_prov, dict) else ds_prov
    manifest = ", ".join(sorted(set(results["manifest_hash"]) - {""}))
    seeds = ", ".join(sorted(set(results["seed"].astype(str)) - {""}))
    versions = prov.get("versions")
    if isinstance(versions, dict):
        versions = ", ".join(f"{k} {v}" for k, v in sorted(versions.items(), key=lambda kv: kv[0].lower()))
    device = " ".join(str(x) for x in (prov.get("device"), prov.get("device_name")) if x)
    seed = prov.get("seed")
    rows = [
        ["results", str(results_dir)],
        ["dataset", dataset + (f" ({root})" if root else "")],
        ["dataset manifest hash", manifest],
        ["models", _models_text(prov, results)],
        ["seed", str(seed) if seed is not None else seeds],
        ["device", device],
        ["versions", _short(versions or "")],
        ["wall time (s)", _short(prov.get("wall_time_s") or "")],
    ]
    rows = [r for r in rows if r[1]]
    body = _table(["field", "value"], rows)
    skipped = prov.get("skipped")
    if isinstance(skipped, list) and skipped:
        body += "<p><b>skipped by bam evaluate:</b></p>" + _table(
            ["metric", "model kind", "methods", "reason"],
            [[str(x.get(k, "")) for k in ("metric", "kind", "methods", "reason")] for x in skipped
             if isinstance(x, dict)])
    failures = prov.get("failures")
    if isinstance(failures, dict) and failures:
        body += "<p><b>method failures:</b></p>" + _table(
            ["method", "message"], [[str(k), _short(v)] for k, v in sorted(failures.items())])
    if prov:
        body += ("<details><summary>full provenance.json</summary><pre>"
                 + html.escape(dumps_json(prov)) + "</pre></details>")
    else:
        body += '<p class="muted">no provenance.json beside results.csv; fields above come from results.csv.</p>'
    return body


#: What the intervals of one evaluation cover (said in its report and by ``bam run``).
SINGLE_RUN_NOTE = ("These intervals and tiers come from one training run: they resample its images, not training "
                   "runs, so another training seed can contradict a resolved order. `bam run --repeats N` trains N "
                   "seeds and reports values pooled over them with intervals over seeds and images (summary/).")


def _overview(results: pd.DataFrame, controls: frozenset[str]) -> str:
    """Methods x metrics: value [CI] (curve points excluded), after what the intervals cover."""
    main = results[~is_curve_point(results)]
    if main.empty:
        return '<p class="muted">no summary metrics in results.csv.</p>'
    note = f"<p><b>{html.escape(SINGLE_RUN_NOTE)}</b></p>"
    metrics = list(dict.fromkeys(main["metric"]))
    methods = sorted(set(main["method"]), key=lambda m: (m in controls, m))
    rows, classes = [], []
    for m in methods:
        row = [m + (" (control)" if m in controls else "")]
        for metric in metrics:
            d = main[(main["method"] == m) & (main["metric"] == metric)]
            cells = [f"{_num(v, 3)} [{_num(lo, 3)}, {_num(hi, 3)}]" if math.isfinite(lo) else _num(v, 3)
                     for v, lo, hi in zip(d["value"], d["ci_low"], d["ci_high"])]
            row.append("; ".join(cells))
        rows.append(row)
        classes.append("control" if m in controls else "")
    return note + _table(["method", *metrics], rows, classes, numeric=set(range(1, len(metrics) + 1)))


def _ranking(results: pd.DataFrame, controls: frozenset[str], figs: _Figures) -> str:
    """One section per (dataset, metric, model pair): bar chart + ranked table."""
    main = results[~is_curve_point(results)]
    parts = []
    many_datasets = main["dataset"].nunique() > 1
    for (ds, metric, pair), d in main.groupby(["dataset", "metric", "model_pair"], sort=False):
        direction = d["direction"].iloc[0]
        title = f"{metric} — {_pair_label(pair)}" + (f" — {ds}" if many_datasets else "")
        img = figs.add(f"ranking_{ds}_{metric}" if many_datasets else f"ranking_{metric}",
                       figures.ranking_figure(d, title, controls, direction), f"ranking for {metric}")
        ranked = d.sort_values("value", ascending=(direction == "lower"), na_position="last", kind="stable")
        rows, classes, rank = [], [], 0
        for r in ranked.itertuples(index=False):
            ctrl = r.method in controls
            ranked_row = not ctrl and math.isfinite(r.value)  # controls and undefined values get no rank
            if ranked_row:
                rank += 1
            reasons = parse_json_cell(r.excluded_reasons)
            rows.append([
                str(rank) if ranked_row else "", r.method + (" (control)" if ctrl else ""), _num(r.value),
                _num(r.ci_low), _num(r.ci_high), _num(r.n_used), _num(r.n_excluded),
                _short(reasons) if reasons else "", _num(r.images_per_s, 2), _num(r.passes_per_image, 0),
                _num(r.peak_memory_mb, 0), _short(parse_json_cell(r.method_params) or ""),
            ])
            classes.append("control" if ctrl else "")
        chance = d["chance"].dropna().unique()
        note = (f'<p class="muted">direction: {html.escape(direction)} is better'
                + (f"; chance level {chance[0]:.4g}" if len(chance) == 1 else "")
                + "; controls are chance references, not ranked.</p>")
        parts.append(f'<h3 id="{_slug(ds + "_" + metric + "_" + pair)}">{html.escape(title)}</h3>{note}{img}' + _table(
            ["rank", "method", "value", "CI low", "CI high", "n used", "n excluded", "excluded (why)", "images/s",
             "passes/image", "peak MiB", "parameters"], rows, classes, numeric={0, 2, 3, 4, 5, 6, 8, 9, 10}))
    return "".join(parts) or '<p class="muted">no summary metrics in results.csv.</p>'


def _curve(results: pd.DataFrame, controls: frozenset[str], figs: _Figures) -> str:
    """Curve figures and values (rows with k: rmcs_curve, tcav_rmcs_curve), one per (dataset, metric)."""
    curve = results[is_curve_point(results)]
    if curve.empty:
        return '<p class="muted">no RMCS curve rows (metric rmcs_curve) in results.csv.</p>'
    parts = []
    many = curve["dataset"].nunique() > 1
    for (ds, metric), d in curve.groupby(["dataset", "metric"], sort=True):  # model_pair differs per k
        name = f"{metric}_{ds}" if many else str(metric)
        title = ("RMCS curve" if metric == "rmcs_curve" else f"{metric}") + (f" — {ds}" if many else "")
        img = figs.add(name, figures.rmcs_curve_figure(d, controls, title), title)
        parts.append(f"<h3>{html.escape(title)}</h3>")
        ks = sorted({int(k) for k in d["k"]})
        methods = sorted(set(d["method"]), key=lambda m: (m in controls, m))
        rows, classes = [], []
        for m in methods:
            vals = {int(k): v for k, v in zip(d.loc[d["method"] == m, "k"], d.loc[d["method"] == m, "value"])}
            rows.append([m] + [_num(vals.get(k, math.nan), 3) for k in ks])
            classes.append("control" if m in controls else "")
        parts.append(img + _table(["method"] + [f"k={k}" for k in ks], rows, classes,
                                  numeric=set(range(1, len(ks) + 1))))
    return "".join(parts)


def _concepts(results_dir: Path) -> str:
    """The per-(model, layer) TCAV summary (tcav_summary.csv), when the evaluation ran TCAV."""
    path = results_dir / "tcav_summary.csv"
    if not path.is_file():
        return '<p class="muted">no concept method was run (no tcav_summary.csv).</p>'
    s = pd.read_csv(path, dtype=str, keep_default_na=False)
    cols = ["model_role", "layer", "summary", "target_name", "score", "score_sd", "random_score", "random_sd",
            "p_value", "significant", "cav_accuracy", "n_images", "n_runs"]
    rows = [[_num(float(r[c]), 3) if c in {"score", "score_sd", "random_score", "random_sd", "p_value",
                                              "cav_accuracy"} and r[c] not in ("", "nan") else r[c] for c in cols]
            for r in s.to_dict("records")]
    return ('<p class="muted">TCAV (Kim et al. 2018) of the common-object concept per model and bottleneck; the '
            "tcav_mcs / tcav_rmcs rows above use the layer marked summary; p: two-sided t-test of the concept runs "
            "against random-vs-random runs (docs/tcav.md).</p>" + _table(cols, rows, numeric={4, 5, 6, 7, 8, 10}))


def _gallery(results_dir: Path, controls: frozenset[str], figs: _Figures) -> str:
    """Heatmaps of fixed example images (examples.safetensors) and any examples/*.png."""
    parts = []
    path = results_dir / EXAMPLES_FILE
    if path.is_file():
        ex = load_examples(path)
        for role in sorted(ex.attrs):
            attrs = dict(sorted(ex.attrs[role].items(), key=lambda kv: (kv[0] in controls, kv[0])))
            png = figures.gallery_figure(ex.images, ex.masks, attrs, f"attributions under the {role} model",
                                         labels=ex.image_ids)
            parts.append(f"<h3>{html.escape(role)} model</h3>" + figs.add(f"gallery_{role}", png, f"gallery {role}"))
    folder = results_dir / "examples"
    if folder.is_dir():
        for png_path in sorted(folder.glob("*.png")):
            data = base64.b64encode(confine(results_dir, png_path, "example image").read_bytes()).decode("ascii")
            parts.append(f"<h3>{html.escape(png_path.name)}</h3>"
                         f'<img alt="{html.escape(png_path.name)}" src="data:image/png;base64,{data}">')
    if not parts:
        return (f'<p class="muted">no example attributions: write {EXAMPLES_FILE} (keys images [E,3,H,W], '
                "masks [E,1,H,W], attr/&lt;method&gt;/&lt;role&gt; [E,C,H,W]) or examples/*.png beside "
                "results.csv to get a gallery.</p>")
    return ('<p class="muted">heatmaps normalised as in the metric (positive part, min to P99); '
            "outline = object mask.</p>" + "".join(parts))


def _worst(results_dir: Path, n: int) -> str:
    """Worst MCS cases per method from records.csv."""
    path = results_dir / "records.csv"
    if not path.is_file():
        return '<p class="muted">no records.csv beside results.csv.</p>'
    worst = worst_mcs_cases(read_records(path), n=n)
    if worst.empty:
        return '<p class="muted">records.csv has no composite rows scored by both the obj and scene models.</p>'
    rows = [[r.method, r.image_id, _num(r.g_obj), _num(r.g_scene), _num(r.difference)]
            for r in worst.itertuples(index=False)]
    return (f'<p class="muted">per method, the {n} composites with the lowest g(f_obj, x) − g(f_scene, x) '
            "among images both models classify correctly.</p>"
            + _table(["method", "image_id", "g obj", "g scene", "difference"], rows, numeric={2, 3, 4}))


def build_report(results_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                 controls: frozenset[str] | None = None, worst: int = 5, title: str | None = None) -> ReportOutput:
    """Write the HTML report for ``results_dir`` to ``out`` (default ``results_dir/report.html``).

    Figures are embedded as base64 PNG and also written to ``figures/`` beside the HTML file.
    ``controls`` (default: the registry's control methods) are drawn as chance references.
    Raises a one-line BamError when ``results.csv`` is missing or malformed, or when the folder
    holds an interrupted or mixed output set (:func:`bam.outputs.check_output_set`).
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        what = "a file" if results_dir.exists() else "not found"
        raise BamError(f"results directory {results_dir}: {what}; expected a folder written by bam evaluate")
    if worst < 0:
        raise BamError(f"--worst {worst} is invalid; accepted: an integer >= 0")
    check_output_set(results_dir, required=("results.csv",))
    for entry in sorted(results_dir.iterdir()):  # read (results, provenance, examples) or written (figures/)
        confine(results_dir, entry, "evaluation output")
    controls = control_methods() if controls is None else controls
    results = read_results(results_dir / "results.csv")
    prov_path = results_dir / "provenance.json"
    if prov_path.is_file():
        from bam._io import read_json

        prov = read_json(prov_path)
        prov = prov if isinstance(prov, dict) else {"provenance": prov}
    else:
        prov = {}
    out_path = Path(out) if out is not None else results_dir / "report.html"
    figs = _Figures(out_path.parent / "figures")
    title = title or "bam report — " + ", ".join(sorted(set(results["dataset"])))
    sections = [
        ("provenance", "Provenance", _header(results, prov, results_dir)),
        ("overview", "Overview: value [CI low, CI high]", _overview(results, controls)),
        ("ranking", "Ranking per metric", _ranking(results, controls, figs)),
        ("rmcs", "RMCS curve", _curve(results, controls, figs)),
        ("concepts", "TCAV per model and layer", _concepts(results_dir)),
        ("gallery", "Heatmap gallery", _gallery(results_dir, controls, figs)),
    ]
    if worst:
        sections.append(("worst", "Worst MCS cases per method", _worst(results_dir, worst)))
    nav = "".join(f'<a href="#{sid}">{html.escape(name)}</a>' for sid, name, _ in sections)
    body = "".join(f'<h2 id="{sid}">{html.escape(name)}</h2>{content}' for sid, name, content in sections)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
           f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
           f'<p class="muted">generated by bam report on {stamp}</p><nav>{nav}</nav>{body}</body></html>\n')
    write_text(out_path, doc)
    return ReportOutput(html=out_path, figures=tuple(figs.paths))

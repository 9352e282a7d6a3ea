"""``bam report RESULTS_DIR``: a self-contained HTML report (+ PNG figures beside it)."""

from __future__ import annotations

from pathlib import Path

import click

from bam.cli._common import common_options


@click.command("report")
@click.argument("results_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, show_default="RESULTS_DIR/report.html",
              help="HTML file to write; figures go to figures/ beside it.")
@click.option("--worst", type=click.IntRange(min=0), default=5, show_default=True,
              help="Worst MCS cases listed per method (0 to skip).")
@click.option("--title", default=None, help="Report title (default: 'bam report - <dataset>').")
@common_options
def command(results_dir: Path, out: Path | None, worst: int, title: str | None) -> None:
    """Write an HTML report for the evaluation in RESULTS_DIR (results.csv, provenance.json, ...).

    \b
    Reads results.csv (required), provenance.json, records.csv (worst cases) and
    examples.safetensors or examples/*.png (heatmap gallery) when present. Refuses a folder whose
    output set is incomplete or mixed (outputs.json does not match its files).
    """
    from bam.report.html import build_report

    res = build_report(results_dir, out=out, worst=worst, title=title)
    click.echo(f"report written to {res.html} ({len(res.figures)} figures in {res.html.parent / 'figures'})")

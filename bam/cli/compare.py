"""``bam compare BASELINE.csv NEW.csv``: the CI regression gate (exit 1 on a regression)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bam.cli._common import common_options


@click.command("compare")
@click.argument("baseline", type=click.Path(path_type=Path))
@click.argument("new", type=click.Path(path_type=Path))
@click.option("--tolerance", type=float, default=0.05, show_default=True,
              help="Allowed absolute change in the bad direction before a row is a regression.")
@click.option("--use-ci/--no-use-ci", default=False, show_default=True,
              help="Measure from the baseline's CI bound (ci_low for higher-is-better) instead of its value.")
@click.option("--allow-missing", is_flag=True, default=False, show_default=True,
              help="Do not fail when a baseline row (method/metric) is absent from NEW.")
@click.option("--require-real/--tolerance-only", default=True, show_default=True,
              help="A change beyond the tolerance counts only when the interval test resolves it (z-test from "
                   "the two CIs, Holm-adjusted; the default), or (--tolerance-only) whatever the intervals.")
@click.option("--only-changes", is_flag=True, default=False, show_default=True,
              help="Print only rows whose status is not OK/INFO.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Also write the full diff table as CSV here.")
@click.option("--regenerate-with", "regenerate", default=None, metavar="COMMAND",
              help="The command that regenerates BASELINE, printed when it is out of date "
                   "[default: cp NEW BASELINE].")
@common_options
def command(baseline: Path, new: Path, tolerance: float, use_ci: bool, allow_missing: bool, require_real: bool,
            only_changes: bool, out: Path | None, regenerate: str | None) -> None:
    """Compare two results.csv files (schema 1 or 2) joined on (dataset, model_pair, method, metric, k).

    \b
    Exit status: 0 when nothing regressed, 1 on a regression or a missing row, 2 on bad input.
    A higher-is-better metric regresses when NEW < BASELINE - TOLERANCE (with --use-ci:
    NEW < BASELINE_CI_LOW - TOLERANCE) and the drop is real: a z-test of NEW - BASELINE with the
    standard errors of the two CIs, Holm-adjusted over the rows (--tolerance-only: the tolerance
    alone decides); lower-is-better is symmetric. A drop beyond the tolerance that is not real is
    NOISE. A row whose method definition changed (method_params, or method_version) is CHANGED,
    not gated. RMCS curve points and rows with direction none are informational; cost columns are
    ignored. When the baseline is out of date (older schema, other methods, changed definitions)
    one line says which command regenerates it.
    """
    from bam._io import write_csv
    from bam.errors import BamError
    from bam.report.compare import GateRules, compare_results, format_table, summary_line
    from bam.report.gate_lines import changed_lines, failure_lines, new_line, stale_line

    if tolerance < 0 or tolerance != tolerance:
        raise BamError(f"--tolerance {tolerance} is invalid; accepted: a number >= 0")
    if out is not None and out.is_dir():
        raise BamError(f"--out {out} is a directory; accepted: the path of a CSV file to write")
    cmp = compare_results(baseline, new, GateRules(tolerance=tolerance, use_ci=use_ci, allow_missing=allow_missing,
                                                   tolerance_only=not require_real))
    for note in cmp.notes:
        click.echo(note, err=True)
    click.echo(format_table(cmp, only_changes=only_changes))
    if out is not None:
        write_csv(out, cmp.frame)
        click.echo(f"diff written to {out}", err=True)
    extra = [*changed_lines(cmp), new_line(cmp), stale_line(cmp, regenerate or f"cp {new} {baseline}"),
             *failure_lines(cmp)]
    for line in extra:
        if line:
            click.echo(line)
    click.echo(summary_line(cmp))
    if cmp.failed:
        sys.exit(1)

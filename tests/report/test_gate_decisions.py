"""The gate's decisions beyond the tolerance: a broken method, changed definitions, a stale baseline."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from _report_fixtures import results_rows
from click.testing import CliRunner

from bam.cli.main import cli
from bam.report import compare_results
from bam.report.compare import GateRules
from bam.report.gate_lines import definition_change
from bam.schema import SCHEMA_VERSION, V2_DEFAULTS


def run(*args: object) -> tuple[int, list[str]]:
    """Invoke ``bam compare`` in-process; return (exit code, stdout lines)."""
    res = CliRunner().invoke(cli, ["compare", *map(str, args)])
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout.splitlines()


def broken(method: str, metric: str, value: float, half_width: float = 0.01) -> list[dict[str, object]]:
    """The fixture rows with one (method, metric) moved to ``value`` with a narrow CI."""
    rows = results_rows()
    for r in rows:
        if r["method"] == method and r["metric"] == metric:
            r["value"], r["ci_low"], r["ci_high"] = value, value - half_width, value + half_width
    return rows


def test_a_broken_method_fails_with_one_line_naming_method_and_metric(make_results: Callable[..., Path]) -> None:
    base = make_results("base.csv")
    code, lines = run(base, make_results("new.csv", rows=broken("gradcam", "mcs", 0.1)))
    assert code == 1
    failing = [ln for ln in lines if ln.startswith("REGRESSION:")]
    assert failing == ["REGRESSION: gradcam mcs on obj|scene: 0.6000 -> 0.1000 (delta -0.5000, beyond 0.5500, "
                       "p_adj 0)"], lines
    assert lines[-1].startswith("FAIL: 65 rows (1 regression, 45 info, 19 ok)")
    # the same drop with intervals so wide that the two runs are indistinguishable: NOISE, the gate passes
    code, lines = run(base, make_results("wide.csv", rows=broken("gradcam", "mcs", 0.1, half_width=0.9)))
    assert code == 0 and not [ln for ln in lines if ln.startswith("REGRESSION:")]
    assert "1 noise" in lines[-1]
    # ... unless the tolerance alone decides
    assert run(base, make_results("wide.csv", rows=broken("gradcam", "mcs", 0.1, 0.9)), "--tolerance-only")[0] == 1


def test_a_row_without_intervals_is_gated_by_the_tolerance(make_results: Callable[..., Path]) -> None:
    rows = broken("gradient", "idr", 0.1)
    for r in rows:
        if r["method"] == "gradient" and r["metric"] == "idr":
            r["ci_low"] = r["ci_high"] = ""
    cmp = compare_results(make_results("base.csv"), make_results("new.csv", rows=rows))
    bad = cmp.frame[cmp.frame["fails"]]
    assert list(zip(bad["method"], bad["metric"], bad["status"])) == [("gradient", "idr", "REGRESSION")]


def test_a_changed_definition_is_changed_not_a_regression(make_results: Callable[..., Path]) -> None:
    rows = results_rows({"smoothgrad": 0.0})  # smoothgrad falls by 0.3 on every metric ...
    for r in rows:
        if r["method"] == "smoothgrad":
            r["method_params"] = '{"steps": 50}'  # ... because it is another method now
    code, lines = run(make_results("base.csv"), make_results("new.csv", rows=rows))
    assert code == 0, lines
    table = [ln.split() for ln in lines if ln.startswith("smoothgrad ")]
    assert len(table) == 13 and {t[-1] for t in table} == {"CHANGED"}
    changed = [ln for ln in lines if ln.startswith("CHANGED ")]
    assert changed == ['CHANGED smoothgrad: {"steps": 25} -> {"steps": 50} (not gated: the baseline measured '
                       'another definition)']
    assert "13 changed" in lines[-1] and lines[-1].startswith("PASS")


def test_a_changed_method_version_is_changed(make_results: Callable[..., Path], tmp_path: Path) -> None:
    base, new = make_results("base.csv"), make_results("new.csv", values={"gradient": 0.1})
    for path, version in ((base, "1"), (new, "2")):
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        df["method_version"] = ["1" if m != "gradient" else version for m in df["method"]]
        df.to_csv(path, index=False)
    cmp = compare_results(base, new)
    assert not cmp.failed
    assert set(cmp.frame.loc[cmp.frame["method"] == "gradient", "status"]) == {"CHANGED"}
    assert set(cmp.frame.loc[cmp.frame["method"] != "gradient", "status"]) <= {"OK", "INFO"}
    _, lines = run(base, new)
    assert [ln for ln in lines if ln.startswith("CHANGED ")] == [
        "CHANGED gradient: v1 {} -> v2 {} (not gated: the baseline measured another definition)"]
    # a baseline without the column: the version is not compared, the drop is a regression again
    old = tmp_path / "old.csv"
    pd.read_csv(base, dtype=str, keep_default_na=False).drop(columns="method_version").to_csv(old, index=False)
    cmp = compare_results(old, new)
    assert cmp.failed and set(cmp.frame.loc[cmp.frame["fails"], "method"]) == {"gradient"}
    # ... and so when the baseline has the column but no version in it (a reader's default for old files)
    pd.read_csv(base, dtype=str, keep_default_na=False).assign(method_version="").to_csv(old, index=False)
    cmp = compare_results(old, new)
    assert cmp.failed and set(cmp.frame.loc[cmp.frame["fails"], "method"]) == {"gradient"}


def test_definition_change_shows_only_what_differs() -> None:
    assert definition_change('{"a": 1, "b": 2}', '{"a": 1, "b": 3, "c": 4}') == '{"b": 2} -> {"b": 3, "c": 4}'
    assert definition_change('v1 {"a": 1}', 'v2 {"a": 1}') == "v1 {} -> v2 {}"
    assert definition_change("v3 not json", "v3 other") == "not json -> other"


def test_a_stale_baseline_says_in_one_line_how_to_regenerate_it(make_results: Callable[..., Path],
                                                                tmp_path: Path) -> None:
    rows = [{**r, "schema_version": SCHEMA_VERSION} for r in results_rows()]  # the schema this bam writes
    base = make_results("base.csv", rows=[r for r in rows if r["method"] not in ("edge", "smoothgrad")])
    new = make_results("new.csv", rows=rows)
    code, lines = run(base, new)
    assert code == 0
    stale = [ln for ln in lines if "out of date" in ln]
    assert stale == [f"baseline out of date (methods not in it: edge, smoothgrad): regenerate it with: cp {new} {base}"]
    assert not [ln for ln in lines if ln.split()[-1:] == ["NEW"]]  # no wall of NEW rows ...
    assert [ln for ln in lines if ln.startswith("NEW:")] == [  # ... one line instead
        "NEW: 26 rows not in the baseline (methods edge, smoothgrad; metrics idr, iir, mcs, rmcs and 1 more)"]
    _, lines = run(base, new, "--regenerate-with", "bash scripts/ci_regression.sh --fresh --update-baseline")
    assert next(ln for ln in lines if "out of date" in ln).endswith(
        "regenerate it with: bash scripts/ci_regression.sh --fresh --update-baseline")
    # an older schema is out of date too, even with the same rows
    v1 = tmp_path / "v1.csv"
    df = pd.read_csv(new, dtype=str, keep_default_na=False)
    df.drop(columns=list(V2_DEFAULTS)).assign(schema_version="1").to_csv(v1, index=False)
    _, lines = run(v1, new)
    assert [ln for ln in lines if "out of date" in ln] == [
        f"baseline out of date (schema 1, this bam writes {SCHEMA_VERSION}): regenerate it with: cp {new} {v1}"]
    # a current baseline says nothing of the kind
    _, lines = run(new, new)
    assert not [ln for ln in lines if "out of date" in ln or ln.startswith(("NEW", "CHANGED"))]


def test_default_rules_gate_on_intervals() -> None:
    rules = GateRules()
    assert not rules.tolerance_only and rules.tolerance == 0.05

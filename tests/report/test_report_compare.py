"""`bam compare`: the CI regression gate, on constructed results.csv files (schema 2)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from _report_fixtures import results_rows
from click.testing import CliRunner

from bam.cli.main import cli
from bam.errors import BamError
from bam.report import compare_results, read_results
from bam.report.compare import GateRules
from bam.schema import RESULTS_COLUMNS


def run(*args: object) -> tuple[int, str, str]:
    """Invoke ``bam compare`` in-process; return (exit code, stdout, stderr)."""
    res = CliRunner().invoke(cli, ["compare", *map(str, args)])
    if res.exception and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.stdout, res.stderr


def line_for(stdout: str, method: str, metric: str) -> str:
    """The table line of (method, metric)."""
    hits = [ln for ln in stdout.splitlines() if ln.split()[:2] == [method, metric]]
    assert len(hits) == 1, stdout
    return hits[0]


def test_identical_files_pass(make_results: Callable[..., Path]) -> None:
    base = make_results("base.csv")
    code, out, _ = run(base, base)
    assert code == 0
    assert out.strip().splitlines()[-1].startswith("PASS: 65 rows (45 info, 20 ok)")
    assert "REGRESSION" not in out


def test_drop_beyond_tolerance_fails_and_marks_row(make_results: Callable[..., Path], tmp_path: Path) -> None:
    base = make_results("base.csv")
    new = make_results("new.csv", values={"gradient": 0.4 - 0.06})  # every gradient metric falls by 0.06
    code, out, _ = run(base, new, "--tolerance", "0.05", "--out", tmp_path / "diff.csv")
    assert code == 1
    line = line_for(out, "gradient", "mcs")
    assert "REGRESSION" in line and "-0.0600" in line and "0.4000" in line and "0.3400" in line
    assert "OK" in line_for(out, "gradcam", "mcs")
    assert out.strip().splitlines()[-1].startswith("FAIL:")
    diff = pd.read_csv(tmp_path / "diff.csv", keep_default_na=False)
    bad = diff[diff["status"] == "REGRESSION"]
    assert sorted(bad["metric"]) == ["idr", "iir", "mcs", "rmcs"]
    assert set(bad["method"]) == {"gradient"}
    assert bad["delta"].astype(float).round(6).tolist() == [-0.06] * 4
    # curve points of gradient fell too, but direction "none" is informational
    curve = diff[(diff["metric"] == "rmcs_curve") & (diff["method"] == "gradient")]
    assert set(curve["status"]) == {"INFO"} and not curve["fails"].astype(str).eq("True").any()


def test_curve_points_are_informational_whatever_their_direction(make_results: Callable[..., Path]) -> None:
    base = make_results("base.csv", rows=results_rows(curve_direction="higher"))
    new = make_results("new.csv", rows=results_rows({"gradcam": 0.1}, curve_direction="higher"))
    cmp = compare_results(base, new)
    curve = cmp.frame[cmp.frame["metric"] == "rmcs_curve"]
    assert set(curve["status"]) == {"INFO"} and not curve["fails"].any()
    assert set(cmp.frame.loc[cmp.frame["fails"], "method"]) == {"gradcam"}
    assert cmp.counts()["REGRESSION"] == 4


def test_drop_within_or_at_tolerance_passes(make_results: Callable[..., Path]) -> None:
    base = make_results("base.csv")
    assert run(base, make_results("n1.csv", values={"gradient": 0.36}), "--tolerance", "0.05")[0] == 0
    # exactly the tolerance (0.4 - 0.05 is not exact in binary) is still OK
    code, out, _ = run(base, make_results("n2.csv", values={"gradient": 0.35}), "--tolerance", "0.05")
    assert code == 0 and "OK" in line_for(out, "gradient", "mcs")
    # a tighter tolerance: the drop of 0.04 is beyond it but not resolved by the intervals (NOISE) ...
    code, out, _ = run(base, make_results("n3.csv", values={"gradient": 0.36}), "--tolerance", "0.01")
    assert code == 0 and "NOISE" in line_for(out, "gradient", "mcs")
    # ... and a failure when the tolerance alone decides
    assert run(base, make_results("n3.csv", values={"gradient": 0.36}), "--tolerance", "0.01",
               "--tolerance-only")[0] == 1


def test_improvement_passes(make_results: Callable[..., Path]) -> None:
    code, out, _ = run(make_results("base.csv"), make_results("new.csv", values={"random": 0.2}))
    assert code == 0
    assert "IMPROVED" in line_for(out, "random", "idr")
    assert "4 improved" in out.strip().splitlines()[-1]


def test_missing_row_fails_unless_allowed(make_results: Callable[..., Path]) -> None:
    rows = results_rows()
    base = make_results("base.csv", rows=rows)
    new = make_results("new.csv", rows=[r for r in rows if not (r["method"] == "edge" and r["metric"] == "iir")])
    code, out, _ = run(base, new)
    assert code == 1 and "MISSING" in line_for(out, "edge", "iir")
    code, out, _ = run(base, new, "--allow-missing")
    assert code == 0 and "MISSING (allowed)" in line_for(out, "edge", "iir")
    # a whole method gone: every one of its rows is missing
    gone = make_results("gone.csv", rows=[r for r in rows if r["method"] != "smoothgrad"])
    cmp = compare_results(base, gone)
    assert cmp.failed and cmp.counts()["MISSING"] == 4 + 9


def test_missing_curve_point_and_new_rows_are_informational(make_results: Callable[..., Path]) -> None:
    rows = results_rows()
    base = make_results("base.csv", rows=[r for r in rows if r["method"] != "edge"])
    no_k9 = [r for r in rows if r["k"] != 9]
    code, _out, _ = run(base, make_results("new.csv", rows=no_k9))
    assert code == 0  # edge rows are NEW, the k = 9 curve points are MISSING but informational
    cmp = compare_results(base, make_results("new.csv", rows=no_k9))
    assert cmp.counts()["NEW"] == 4 + 8 and cmp.counts()["MISSING"] == 4
    assert not cmp.failed


def test_use_ci_measures_from_ci_low(make_results: Callable[..., Path]) -> None:
    base = make_results("base.csv")  # CI = value +- 0.02
    new = make_results("new.csv", values={"gradient": 0.4 - 0.06})
    assert run(base, new, "--tolerance", "0.05")[0] == 1
    code, out, _ = run(base, new, "--tolerance", "0.05", "--use-ci")  # threshold = 0.38 - 0.05 = 0.33
    assert code == 0 and "OK" in line_for(out, "gradient", "mcs")
    code, out, _ = run(base, make_results("n2.csv", values={"gradient": 0.32}), "--tolerance", "0.05", "--use-ci")
    assert code == 1 and "REGRESSION" in line_for(out, "gradient", "mcs")
    # with --use-ci an improvement must clear ci_high + tolerance (0.42 + 0.05)
    cmp = compare_results(base, make_results("n3.csv", values={"gradient": 0.46}), GateRules(use_ci=True))
    assert cmp.frame.query("method == 'gradient' and metric == 'mcs'")["status"].item() == "OK"
    cmp = compare_results(base, make_results("n3.csv", values={"gradient": 0.46}), GateRules(use_ci=False))
    assert cmp.frame.query("method == 'gradient' and metric == 'mcs'")["status"].item() == "IMPROVED"


def test_lower_is_better_is_symmetric(make_results: Callable[..., Path]) -> None:
    def rows(v: float) -> list[dict[str, object]]:
        out = results_rows()
        for r in out:
            if r["metric"] == "iir":
                r["direction"] = "lower"
                if r["method"] == "gradient":
                    r["value"], r["ci_low"], r["ci_high"] = v, v - 0.02, v + 0.02
        return out

    base = make_results("base.csv", rows=rows(0.40))
    cmp = compare_results(base, make_results("up.csv", rows=rows(0.50)), GateRules(tolerance=0.05))
    row = cmp.frame.query("method == 'gradient' and metric == 'iir'")
    assert cmp.failed and row["status"].item() == "REGRESSION"
    assert math.isclose(row["threshold"].item(), 0.45)
    cmp = compare_results(base, make_results("down.csv", rows=rows(0.30)), GateRules(tolerance=0.05))
    assert not cmp.failed
    assert cmp.frame.query("method == 'gradient' and metric == 'iir'")["status"].item() == "IMPROVED"
    cmp = compare_results(base, make_results("up2.csv", rows=rows(0.44)), GateRules(tolerance=0.05))
    assert not cmp.failed


def test_nan_value_is_a_regression_and_costs_are_ignored(make_results: Callable[..., Path]) -> None:
    rows = results_rows()
    base = make_results("base.csv", rows=rows)
    nan_rows = [dict(r) for r in rows]
    for r in nan_rows:
        r["images_per_s"] = 0.001  # 100000x slower: not a regression, machines differ
        r["peak_memory_mb"] = 1e6
        if r["method"] == "gradcam" and r["metric"] == "mcs":
            r["value"] = ""
    cmp = compare_results(base, make_results("new.csv", rows=nan_rows))
    bad = cmp.frame[cmp.frame["fails"]]
    assert bad[["method", "metric"]].values.tolist() == [["gradcam", "mcs"]]


def test_k_is_normalised_for_the_join(make_results: Callable[..., Path], tmp_path: Path) -> None:
    base = make_results("base.csv")
    df = pd.read_csv(base, dtype=str, keep_default_na=False)
    df["k"] = [f"{k}.0" if k else "" for k in df["k"]]
    df.to_csv(tmp_path / "float_k.csv", index=False)
    cmp = compare_results(base, tmp_path / "float_k.csv")
    assert set(cmp.frame["status"]) == {"OK", "INFO"} and len(cmp.frame) == 65


@pytest.mark.parametrize(
    "mutate, expect",
    [
        (lambda df: df.drop(columns=["direction"]), "lacks column(s) direction"),
        (lambda df: df.assign(schema_version=99), "unsupported results schema_version 99"),
        (lambda df: df.assign(value="high"), "column 'value' row 1 is 'high'"),
        (lambda df: df.assign(direction="up"), "direction 'up'"),
        (lambda df: pd.concat([df, df.iloc[:1]]), "duplicate row for (dataset='tiny'"),
    ],
)
def test_bad_csv_is_a_one_line_error(make_results: Callable[..., Path], tmp_path: Path,
                                     mutate: Callable[[pd.DataFrame], pd.DataFrame], expect: str) -> None:
    base = make_results("base.csv")
    bad = tmp_path / "bad.csv"
    mutate(pd.read_csv(base, dtype=str, keep_default_na=False)).to_csv(bad, index=False)
    code, _out, err = run(base, bad)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert expect in err and str(bad) in err
    with pytest.raises(BamError):
        read_results(bad)


def test_ragged_empty_missing_and_foreign_files(make_results: Callable[..., Path], tmp_path: Path) -> None:
    base = make_results("base.csv")
    ragged = tmp_path / "ragged.csv"
    lines = base.read_text().splitlines()
    lines[3] += ",extra"  # the 4th line of the file has one field too many
    ragged.write_text("\n".join(lines) + "\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b\n1,2\n")
    n = len(RESULTS_COLUMNS)
    for path, expect in ((ragged, f"line 4 has {n + 1} fields, expected {n}"), (empty, "empty"),
                         (tmp_path / "nope.csv", "results file not found"), (foreign, "not a bam results.csv")):
        code, _, err = run(base, path)
        assert code == 2 and expect in err and err.count("\n") == 1, err
    code, _, err = run(base, base, "--tolerance", "-1")
    assert code == 2 and "--tolerance -1" in err


def test_schema_1_files_are_read_with_defaults(make_results: Callable[..., Path], tmp_path: Path) -> None:
    from bam.schema import V2_DEFAULTS, read_results

    path = make_results("v2.csv")
    old = pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=list(V2_DEFAULTS)).assign(schema_version="1")
    old.to_csv(tmp_path / "v1.csv", index=False)
    df = read_results(tmp_path / "v1.csv")
    assert (df["schema_version"] == 1).all() and (df["space"] == "pixel").all() and (df["tier"] == "").all()
    assert read_results(path)["value"].tolist() == df["value"].tolist()


def test_schema_2_files_are_read_with_an_unknown_method_version(make_results: Callable[..., Path],
                                                                 tmp_path: Path) -> None:
    from bam.schema import V3_DEFAULTS, read_results

    path = make_results("v3.csv")
    old = pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=list(V3_DEFAULTS)).assign(schema_version="2")
    old.to_csv(tmp_path / "v2.csv", index=False)
    df = read_results(tmp_path / "v2.csv")
    assert (df["schema_version"] == 2).all() and (df["method_version"] == "").all()
    assert read_results(path)["value"].tolist() == df["value"].tolist()


def test_schema_columns_match_the_architecture_doc() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "architecture.md").read_text()
    block = doc.split("`results.csv` (schema version 3)")[1].split("`method_params`,")[0]
    assert ", ".join(RESULTS_COLUMNS) in " ".join(block.replace("`", "").split())


def test_real_changes_use_both_cis_and_holm(make_results: Callable[..., Path]) -> None:
    """A change is real when it is large against the two CIs' standard errors (z-test, Holm over rows)."""
    rows = results_rows()
    base = make_results("base.csv", rows=rows)
    drop = [dict(r) for r in rows]
    for r in drop:
        if r["method"] == "gradcam" and r["metric"] == "mcs":
            r["value"] = round(float(r["value"]) - 0.2, 6)  # CIs are +-0.02 wide: se ~ 0.0102 each
            r["ci_low"], r["ci_high"] = round(r["value"] - 0.02, 6), round(r["value"] + 0.02, 6)
        if r["method"] == "gradient" and r["metric"] == "mcs":
            r["value"] = round(float(r["value"]) - 0.01, 6)  # within the noise
            r["ci_low"], r["ci_high"] = round(r["value"] - 0.02, 6), round(r["value"] + 0.02, 6)
    new = make_results("new.csv", rows=drop)
    frame = compare_results(base, new, GateRules(tolerance=0.005)).frame.set_index(["method", "metric"])
    assert math.isclose(frame.loc[("gradient", "mcs"), "delta"], -0.01)
    assert bool(frame.loc[("gradcam", "mcs"), "real"]) and not bool(frame.loc[("gradient", "mcs"), "real"])
    se = 0.04 / (2 * 1.959963984540054)
    z = 0.2 / math.sqrt(2 * se * se)
    assert frame.loc[("gradcam", "mcs"), "p_value"] == pytest.approx(math.erfc(z / math.sqrt(2)))
    # both drops exceed the tolerance; by default only the real one fails the gate, the other is NOISE
    assert frame.loc[("gradient", "mcs"), "status"] == "NOISE" and not bool(frame.loc[("gradient", "mcs"), "fails"])
    assert frame.loc[("gradcam", "mcs"), "status"] == "REGRESSION" and bool(frame.loc[("gradcam", "mcs"), "fails"])
    digits = compare_results(base, new, GateRules(tolerance=0.005, tolerance_only=True)).frame
    failing = digits[digits["fails"]]
    assert sorted(zip(failing["method"], failing["metric"])) == [("gradcam", "mcs"), ("gradient", "mcs")]

"""The CI script, the sample workflow and the committed baseline agree with the real CLI."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pandas as pd
import pytest
import yaml

from bam.cli.main import COMMANDS, cli
from bam.report import compare_results, read_results
from bam.report.compare import GateRules

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "ci_regression.sh"
WORKFLOW = ROOT / "examples" / "github-actions.yml"
BASELINE = ROOT / "baselines" / "ci_results.csv"


def bam_calls(text: str) -> list[tuple[str, list[str]]]:
    """(subcommand, [--options]) of every `bam ...` / `"$BAM" ...` call in shell text."""
    lines = [ln for ln in text.replace("\\\n", " ").splitlines()
             if not ln.lstrip().startswith("#") and "echo " not in ln]  # comments and messages are prose
    calls = []
    for line in lines:
        for m in re.finditer(r'(?:(?<![\w/.-])bam|"\$BAM")\s+(?:-q\s+)?([a-z][a-z-]*)([^;|&]*)', line):
            calls.append((m.group(1), re.findall(r"(?<=\s)(--[a-z][a-z-]*)", " " + m.group(2))))
    return calls


def check_calls(calls: list[tuple[str, list[str]]], where: str) -> None:
    """Each subcommand exists and declares each option used."""
    ctx = click.Context(cli)
    assert calls, f"no bam calls found in {where}"
    for sub, opts in calls:
        assert sub in COMMANDS, f"{where}: unknown subcommand {sub!r}"
        cmd = cli.get_command(ctx, sub)
        declared = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        for opt in opts:
            assert opt in declared, f"{where}: `bam {sub}` has no option {opt}"


def test_ci_script_parses_and_uses_real_options() -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash not available")
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    calls = bam_calls(SCRIPT.read_text())
    assert {c for c, _ in calls} >= {"build-data", "train", "evaluate", "report", "compare"}
    check_calls(calls, "scripts/ci_regression.sh")
    out = subprocess.run(["bash", str(SCRIPT), "--bogus"], capture_output=True, text=True)
    assert out.returncode == 2 and "unknown argument '--bogus'" in out.stderr


def test_workflow_is_valid_yaml_and_uses_real_options() -> None:
    wf = yaml.safe_load(WORKFLOW.read_text())
    steps = wf["jobs"]["bam"]["steps"]
    runs = "\n".join(s["run"] for s in steps if "run" in s)
    calls = bam_calls(runs)
    assert [c for c, _ in calls] == ["build-data", "train", "evaluate", "report", "compare"]
    check_calls(calls, "examples/github-actions.yml")
    assert "$METHOD" in runs and wf["env"]["METHOD"].count(":") == 1


def test_workflow_gate_is_green_before_a_change_and_red_after_one(tmp_path: Path) -> None:
    """The workflow's compare step, run as the runner would: first run (no baseline) green with a
    notice; the committed baseline against an identical run green; a broken method red."""
    if shutil.which("bash") is None:
        pytest.skip("bash not available")
    wf = yaml.safe_load(WORKFLOW.read_text())
    step = next(s for s in wf["jobs"]["bam"]["steps"] if s.get("name", "").startswith("Compare"))
    work = tmp_path / "bam-ci"
    (work / "eval").mkdir(parents=True)
    shutil.copy(BASELINE, work / "eval" / "results.csv")
    env = {**os.environ, **{k: str(v) for k, v in wf["env"].items() if "${{" not in str(v)}, "WORK": str(work),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def step_run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)

    first = step_run()
    assert first.returncode == 0 and "::notice title=bam: no baseline yet::" in first.stdout, first
    shutil.copy(BASELINE, tmp_path / wf["env"]["BASELINE"])
    same = step_run()
    assert same.returncode == 0 and same.stdout.splitlines()[-1].startswith("PASS"), same.stdout[-2000:]
    df = pd.read_csv(BASELINE, dtype=str, keep_default_na=False)
    hit = (df["method"] == "gradient") & (df["metric"] == "idr")
    value = float(df.loc[hit, "value"].item())
    assert value > 0.3
    df.loc[hit, ["value", "ci_low", "ci_high"]] = ["0.0", "0.0", "0.0"]  # gradient broken: IDR 0 for sure
    df.to_csv(work / "eval" / "results.csv", index=False)
    broken = step_run()
    assert broken.returncode == 1, broken.stdout[-2000:]
    failing = [ln for ln in broken.stdout.splitlines() if ln.startswith("REGRESSION:")]
    assert len(failing) == 1 and failing[0].startswith(f"REGRESSION: gradient idr on scene: {value:.4f} -> 0.0000 "
                                                        f"(delta {-value:+.4f}, beyond {value - 0.05:.4f}"), failing


def test_committed_baseline_is_current_and_complete() -> None:
    """The baseline is in this bam's schema, has every registered method, metric and TCAV row, and
    passes against itself with no "out of date" line (else: scripts/ci_regression.sh --fresh --update-baseline)."""
    from bam.methods import METHODS, list_methods
    from bam.metrics import list_metrics
    from bam.report.gate_lines import stale_line
    from bam.schema import SCHEMA_VERSION

    if not BASELINE.is_file():
        pytest.fail(f"{BASELINE} is missing: run scripts/ci_regression.sh --fresh --update-baseline")
    df = read_results(BASELINE)
    regen = "scripts/ci_regression.sh --fresh --update-baseline"
    assert set(df["schema_version"]) == {SCHEMA_VERSION}, f"baseline schema is old: run {regen}"
    assert set(df["dataset"]) == {"tiny"} and set(df["seed"].astype(str)) == {"0"}
    builtin = {m for m in list_methods() if METHODS.get(m).__module__.startswith("bam.")}  # not tests' methods
    assert set(df["method"]) == {*builtin, "tcav"}, f"baseline method set is out of date: run {regen}"
    assert {"mcs", "idr", "iir", "rmcs", "rmcs_curve", "tcav_mcs", "tcav_rmcs"} <= set(df["metric"])
    assert set(list_metrics()) <= set(df["metric"])
    cmp = compare_results(BASELINE, BASELINE, GateRules(tolerance=0.0))
    assert not cmp.failed and set(cmp.frame["status"]) <= {"OK", "INFO"}
    assert stale_line(cmp, "x") is None

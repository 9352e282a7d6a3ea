"""The performance scripts' CPU-reachable code paths: gpu_check (--tiny), its fail-fast wrapper,
bench_boundary and bench_shared_cpu (tiny runs; their numbers are not asserted, their structure is)."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA path")
def test_gpu_check_fails_fast_without_cuda() -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPTS / "gpu_check.sh")], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0]
    assert proc.stdout == ""


@pytest.mark.slow
def test_gpu_check_tiny_runs_the_whole_path(tmp_path, monkeypatch) -> None:
    out = tmp_path / "check.md"
    monkeypatch.syspath_prepend(str(SCRIPTS))
    monkeypatch.setattr(sys, "argv", [str(SCRIPTS / "gpu_check.py"), "--device", "cpu", "--tiny", "--out", str(out),
                                      "--methods", "gradient,deeplift,boundary_gradient,invertible_projection,edge"])
    runpy.run_path(str(SCRIPTS / "gpu_check.py"), run_name="__main__")
    text = out.read_text()
    for name in ("gradient", "deeplift", "boundary_gradient", "invertible_projection", "edge"):
        assert f"| {name} | 2 |" in text  # one row per method, 2 images each in tiny mode
    assert "error:" not in text
    assert "## Trainer" in text and "images/s" in text
    assert "31,200 attributions per method" in text and "Dominant costs:" in text
    assert "(IIR patch, 2 model families)" in text


def test_gpu_check_extrapolation_arithmetic() -> None:
    sys.path.insert(0, str(SCRIPTS))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPTS))
    rows = [{"method": "gradient", "s_per_image": 0.001}, {"method": "boundary_ig", "s_per_image": 0.5},
            {"method": "broken", "error": "x"}]
    costs, total = gpu_check.extrapolate(rows)
    assert costs[0] == ("boundary_ig", 0.5 * 31_200)
    assert dict(costs)["gradient"] == pytest.approx(31.2)
    assert dict(costs)["(IIR patch, 2 model families)"] == pytest.approx(2 * 30_000 * 0.001)
    assert total == pytest.approx(0.5 * 31_200 + 31.2 + 60.0)
    assert gpu_check._hms(3725) == "1 h 02 min" and gpu_check._hms(65) == "1 min 05 s"


@pytest.mark.slow
def test_bench_shared_cpu_worker_reports_throughput() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for extra in ([], ["--bam-threads"]):
        proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_shared_cpu.py"), "--worker", "evaluate",
                               "--seconds", "0.2", *extra], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        assert out["images_per_s"] > 0 and out["threads"] >= 1
        if extra:
            assert out["env"]["OMP_WAIT_POLICY"] == "PASSIVE"

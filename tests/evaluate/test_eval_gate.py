"""The regression gate on real evaluations: the same run passes with every delta 0; a broken method fails
with one line per failing metric, naming the method and the metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from evalfakes import FakeData, make_models
from torch import Tensor

from bam.evaluate import EvalConfig, evaluate
from bam.methods import METHODS
from bam.report.compare import compare_results
from bam.report.gate_lines import failure_lines

CONFIG = EvalConfig(methods=("bamtest_weighted", "random"), metrics=("mcs", "idr"), batch_size=8, bootstrap=100,
                    examples=0)


def run(data: FakeData, out: Path) -> Path:
    assert evaluate(data, make_models(data.manifest_hash), CONFIG, out) is not None
    return out / "results.csv"


def test_same_run_passes_and_a_broken_method_fails_naming_method_and_metric(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = FakeData(tmp_path / "data", n=4)
    base = run(data, tmp_path / "base")
    again = compare_results(base, run(data, tmp_path / "again"))
    assert not again.failed and set(again.frame["status"]) == {"OK"}
    assert (again.frame["delta"] == 0).all()  # same code, same seed, same machine: the same digits

    def broken(model: Any, inputs: Tensor, target: Tensor, **params: Any) -> Tensor:
        """The method with its computation lost: seeded noise, the same for every model."""
        return torch.rand(inputs.shape, generator=torch.Generator().manual_seed(0))

    monkeypatch.setitem(METHODS._entries, "bamtest_weighted", broken)
    cmp = compare_results(base, run(data, tmp_path / "broken"))
    assert cmp.failed
    frame = cmp.frame.set_index(["method", "metric"])
    assert frame.loc[("bamtest_weighted", "mcs"), "baseline"] > 0.5  # the object model's map was on the object
    lines = failure_lines(cmp)
    assert [ln.split(":")[1].split(" on ")[0].strip() for ln in lines] == ["bamtest_weighted idr",
                                                                          "bamtest_weighted mcs"]
    assert all(ln.startswith("REGRESSION: bamtest_weighted ") and "-> 0.0000" in ln for ln in lines), lines
    assert set(frame.loc[("random", slice(None)), "status"]) == {"OK"}

"""Sharding across torch.distributed ranks (2 gloo CPU processes) gives the single-process results."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch.multiprocessing as mp
from evalfakes import CALLS, FakeData, dist_worker, make_models

from bam.evaluate import EvalConfig, PatchConfig, evaluate
from bam.schema import COST_COLUMNS

METHODS = ("bamtest_weighted", "bamtest_noisy")


@pytest.mark.slow
def test_two_gloo_ranks_equal_single_process(tmp_path: Path) -> None:
    data = FakeData(tmp_path / "data1", n=4)
    cfg = EvalConfig(methods=METHODS, batch_size=5, bootstrap=100, iir_patch=PatchConfig(steps=3), seed=1)
    CALLS.clear()
    evaluate(data, make_models(data.manifest_hash), cfg, tmp_path / "single")
    mp.spawn(dist_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "data2"), str(tmp_path / "multi"), METHODS),
             nprocs=2, join=True)
    a = pd.read_csv(tmp_path / "single" / "results.csv", dtype=str, keep_default_na=False).drop(columns=list(COST_COLUMNS))
    b = pd.read_csv(tmp_path / "multi" / "results.csv", dtype=str, keep_default_na=False).drop(columns=list(COST_COLUMNS))
    assert len(a) > 0 and a.equals(b)
    assert (tmp_path / "single" / "records.csv").read_bytes() == (tmp_path / "multi" / "records.csv").read_bytes()
    # both ranks did work: their chunk files together cover every chunk exactly once
    n_single = len(list((tmp_path / "single" / "cache" / "records").rglob("*.json")))
    assert len(list((tmp_path / "multi" / "cache" / "records").rglob("*.json"))) == n_single

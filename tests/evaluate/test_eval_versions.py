"""The record cache is keyed on each method's version (issue 23): a bumped built-in is recomputed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from evalfakes import FakeData, make_models

from bam.evaluate import EvalConfig, PatchConfig, evaluate
from bam.methods import METHODS


def test_a_bumped_method_version_is_recomputed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = FakeData(tmp_path / "data", n=2)
    cfg = EvalConfig(methods=("gradient",), metrics=("mcs",), batch_size=8, bootstrap=20, examples=0,
                     iir_patch=PatchConfig(steps=3))
    out = tmp_path / "o"

    def run() -> tuple[int, dict]:
        res = evaluate(data, make_models(data.manifest_hash), cfg, out)
        assert res is not None and set(res.records["method_version"]) == set(res.results["method_version"])
        prov = json.loads((out / "provenance.json").read_text())
        return prov["methods"]["gradient"]["version"], prov["cache"]

    version = METHODS.meta("gradient").version
    first, cache = run()
    assert first == version and cache["records_from_cache"] == 0 and cache["records_computed"] == 36
    assert run()[1]["records_from_cache"] == 36  # unchanged: all from the cache
    monkeypatch.setitem(METHODS._meta, "gradient", dataclasses.replace(METHODS.meta("gradient"), version=version + 1))
    bumped, cache = run()
    assert bumped == version + 1 and cache["records_from_cache"] == 0 and cache["records_computed"] == 36
    assert run()[1]["records_from_cache"] == 36

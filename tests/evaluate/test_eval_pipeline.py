"""The evaluation pipeline's contracts: plan before work, failing plug-ins, measured costs, the output set."""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from evalfakes import CALLS, FakeData, make_models
from torch import Tensor

from bam.errors import BamError
from bam.evaluate import EvalConfig, EvalResult, PatchConfig, evaluate, plan
from bam.metrics import iir_hits, pair_records
from bam.outputs import MANIFEST, check_output_set, write_output_set

FAST = PatchConfig(steps=3)


def cfg(*methods: str, **kw: object) -> EvalConfig:
    base = dict(methods=methods, batch_size=5, bootstrap=50, iir_patch=FAST, examples=2)
    base.update(kw)
    return EvalConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
def data(tmp_path: Path) -> FakeData:
    return FakeData(tmp_path / "data", n=4)


def run(data: FakeData, out: Path, config: EvalConfig) -> EvalResult:
    CALLS.clear()
    res = evaluate(data, make_models(data.manifest_hash), config, out)
    assert res is not None
    return res


# ------------------------------------------------------------------------------ plug-ins
def raises_runtime(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """A plug-in that raises an ordinary exception."""
    raise RuntimeError("boom from a plug-in")


def raises_type(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """A plug-in with a bug."""
    return inputs + "not a tensor"  # type: ignore[operator]


def wrong_shape(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """A plug-in that returns one channel."""
    return inputs[:, :1]


def returns_nan(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """A plug-in whose maps are NaN."""
    return torch.full_like(inputs, float("nan"))


def fifty_forwards(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """Occlusion-like: 50 forward passes of the whole batch, no backward (its metadata says nothing)."""
    with torch.no_grad():
        for _ in range(50):
            model(inputs)
    return inputs.clone()


PLUGIN = "test_eval_pipeline:"


@pytest.mark.parametrize("name, needle", [
    ("raises_runtime", "RuntimeError: boom from a plug-in"),
    ("raises_type", "TypeError"),
    ("wrong_shape", "returned a float32 tensor of shape"),
])
def test_failing_plugin_is_recorded_and_never_crashes(data: FakeData, tmp_path: Path, name: str,
                                                      needle: str) -> None:
    res = run(data, tmp_path / "o", cfg("bamtest_weighted", PLUGIN + name))
    assert list(res.failed_everywhere) == [PLUGIN + name] and needle in res.failed_everywhere[PLUGIN + name]
    recs = res.records
    mine = recs["method"] == PLUGIN + name
    assert (recs.loc[mine, "status"] == "method_failed").all()
    # every other method's results are complete, and the provenance names the failure
    other = res.results[res.results["method"] == "bamtest_weighted"]
    assert set(other["metric"]) == {"mcs", "idr", "iir", "rmcs_curve", "rmcs"} and other["value"].notna().all()
    prov = json.loads((tmp_path / "o" / "provenance.json").read_text())
    assert needle in prov["failures"][PLUGIN + name]
    assert check_output_set(tmp_path / "o")


def test_nan_plugin_is_nonfinite_not_scored(data: FakeData, tmp_path: Path) -> None:
    res = run(data, tmp_path / "o", cfg(PLUGIN + "returns_nan", metrics=("mcs",)))
    row = res.results.iloc[0]
    assert row["n_used"] == 0 and math.isnan(row["value"])
    assert json.loads(row["excluded_reasons"]).get("nonfinite") == 27  # the 9 misread images count as incorrect
    assert set(res.records["status"]) == {"nonfinite"}


def test_passes_are_measured_at_the_model_boundary(data: FakeData, tmp_path: Path) -> None:
    res = run(data, tmp_path / "o", cfg(PLUGIN + "fifty_forwards", "gradient", "edge", metrics=("mcs",)))
    passes = res.results.set_index("method")["passes_per_image"]
    assert passes[PLUGIN + "fifty_forwards"] == 50.0  # whatever its (absent) metadata says
    assert passes["gradient"] == 1.0  # one forward per image (and one backward)
    assert passes["edge"] == 0.0  # controls never call the model


# ------------------------------------------------------------------------------ plan before work
def test_bad_method_parameter_is_rejected_before_any_work(data: FakeData, tmp_path: Path) -> None:
    CALLS.clear()
    with pytest.raises(BamError, match=r"steps=-3 is invalid"):
        evaluate(data, make_models(data.manifest_hash),
                 cfg("bamtest_weighted", "integrated_gradients", method_params={"integrated_gradients": {"steps": -3}}),
                 tmp_path / "o")
    assert sum(CALLS.values()) == 0 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("overrides, needle", [
    ({"images": {"mcss": 27}}, "unknown metric in eval config images 'mcss'"),
    ({"metric_params": {"iir": {"treshold": 0.2}}}, "unknown parameter(s) treshold for metric 'iir'"),
    ({"method_params": {"integrated_gradient": {"steps": 8}}}, "unknown method in eval config method_params"),
])
def test_config_typos_are_errors(data: FakeData, overrides: dict, needle: str) -> None:
    with pytest.raises(BamError) as exc:
        plan(data, make_models(data.manifest_hash), cfg("bamtest_weighted", **overrides))
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_metric_parameters_come_from_the_config(data: FakeData, tmp_path: Path) -> None:
    """IIR's threshold is an ordinary metric parameter: fn(records, **params), no special case."""
    res = run(data, tmp_path / "o", cfg("bamtest_noisy", metrics=("iir",), metric_params={"iir": {"threshold": 0.5}}))
    ids, g_x, g_p, _ = pair_records(res.records, ("scene_only", "iir_scene"), ("scene_only", "iir_patch"))
    row = res.results.iloc[0]
    assert row["value"] == pytest.approx(float(np.mean(iir_hits(g_x, g_p, 0.5))))
    assert row["n_used"] == len(ids)
    p = plan(data, make_models(data.manifest_hash), cfg("bamtest_noisy", metric_params={"iir": {"threshold": 0.5}}))
    params = {m.name: dict(m.params) for m in p.metrics}
    assert params["iir"] == {"threshold": 0.5} and params["rmcs"] == {"num_k": 3} and params["mcs"] == {}


def test_plan_is_pure_and_frozen(data: FakeData) -> None:
    p = plan(data, make_models(data.manifest_hash), cfg("bamtest_weighted", "bamtest_inv"))
    with pytest.raises(AttributeError):
        p.units = ()  # type: ignore[misc]
    # the invertible method lacks invertible models: skipped (not required: the config names no metric)
    assert {s.metric for s in p.skipped} == {"mcs", "idr", "iir", "rmcs"} and not any(s.required for s in p.skipped)
    assert all(s.kind == "invertible" and s.methods == ("bamtest_inv",) for s in p.skipped)
    assert {m.name for m in p.metrics} == {"mcs", "idr", "iir", "rmcs"}


# ------------------------------------------------------------------------------ the output set
def test_disk_full_leaves_the_previous_set_and_report_works(data: FakeData, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "o"
    run(data, out, cfg("bamtest_weighted"))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    import bam.outputs

    real = bam.outputs._write_synced
    calls = {"n": 0}

    def enospc_after_first(path: Path, payload: bytes) -> None:
        calls["n"] += 1
        if calls["n"] > 2:  # the marker and the first file get written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, payload)

    monkeypatch.setattr(bam.outputs, "_write_synced", enospc_after_first)
    with pytest.raises(OSError):
        run(data, out, cfg("bamtest_weighted", "bamtest_noisy"))
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before  # previous set intact, no temp file left
    assert check_output_set(out)
    import html

    from bam.report import build_report
    from bam.report.html import SINGLE_RUN_NOTE

    page = build_report(out).html
    # one evaluation says plainly that its intervals cover images, not training runs, and names --repeats
    assert "bam run --repeats N" in SINGLE_RUN_NOTE and "not training" in SINGLE_RUN_NOTE
    assert html.escape(SINGLE_RUN_NOTE) in page.read_text()


def test_report_refuses_a_mixed_set_in_one_line(data: FakeData, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from bam.cli.main import cli

    a, b = tmp_path / "a", tmp_path / "b"
    run(data, a, cfg("bamtest_weighted"))
    run(data, b, cfg("bamtest_noisy"))
    (a / "provenance.json").write_bytes((b / "provenance.json").read_bytes())  # a new file beside an old one
    res = CliRunner().invoke(cli, ["report", str(a)])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert "provenance.json does not belong to the output set" in res.stderr
    res = CliRunner().invoke(cli, ["compare", str(b / "results.csv"), str(a / "results.csv")])
    assert res.exit_code == 2 and "does not belong to the output set" in res.stderr
    (a / ".writing").write_text("")  # a swap that was interrupted
    res = CliRunner().invoke(cli, ["report", str(a)])
    assert res.exit_code == 2 and "partly written output set" in res.stderr


def test_write_output_set_replaces_the_whole_set(tmp_path: Path) -> None:
    write_output_set(tmp_path, {"a.csv": b"1", "b.json": b"{}"})
    write_output_set(tmp_path, {"a.csv": b"2"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", MANIFEST]
    assert json.loads((tmp_path / MANIFEST).read_text())["files"].keys() == {"a.csv"}
    assert check_output_set(tmp_path) and not check_output_set(tmp_path / "..")
    with pytest.raises(BamError, match="bad output file name"):
        write_output_set(tmp_path, {"../x": b""})


def test_results_match_the_records(data: FakeData, tmp_path: Path) -> None:
    """results.csv is a pure function of records.csv: recomputing MCS from the written records agrees."""
    from bam.metrics import mcs
    from bam.schema import read_records

    res = run(data, tmp_path / "o", cfg("bamtest_weighted", metrics=("mcs",)))
    recs = read_records(tmp_path / "o" / "records.csv")
    want = mcs(recs[recs["method"] == "bamtest_weighted"])
    assert res.results.iloc[0]["value"] == pytest.approx(want.value)
    assert pd.read_csv(tmp_path / "o" / "results.csv").shape[0] == len(res.results)


def test_method_images_caps_an_expensive_method_to_a_prefix(data: FakeData, tmp_path: Path) -> None:
    res = run(data, tmp_path / "o", cfg("bamtest_weighted", "bamtest_noisy", metrics=("mcs", "idr"),
                                        method_images={"bamtest_noisy": 7}))
    t = res.results.set_index(["method", "metric"])
    for metric in ("mcs", "idr"):
        assert t.loc[("bamtest_noisy", metric), "n_used"] + t.loc[("bamtest_noisy", metric), "n_excluded"] == 7
        assert t.loc[("bamtest_weighted", metric), "n_used"] + t.loc[("bamtest_weighted", metric), "n_excluded"] == 36
    recs = res.records
    noisy = recs[(recs["method"] == "bamtest_noisy") & (recs["model_role"] == "obj")]
    full = recs[(recs["method"] == "bamtest_weighted") & (recs["model_role"] == "obj")]
    assert len(noisy) == 7 and set(noisy["image_id"]) < set(full["image_id"])
    # the capped images are the first 7 of the metric's selection: the same as a 7-image run of that method
    alone = run(data, tmp_path / "alone", cfg("bamtest_noisy", metrics=("mcs", "idr"), images={"mcs": 7, "idr": 7}))
    a = alone.results.set_index(["method", "metric"])
    assert a.loc[("bamtest_noisy", "mcs"), "value"] == t.loc[("bamtest_noisy", "mcs"), "value"]

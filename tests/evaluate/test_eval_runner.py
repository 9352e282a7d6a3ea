"""The evaluation runner on tiny fakes: known answers, caching, determinism, errors (SPEC §4, §6)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from evalfakes import CALLS, FakeData, make_models

from bam.errors import BamError
from bam.evaluate import EvalConfig, EvalResult, PatchConfig, evaluate
from bam.schema import COST_COLUMNS, RESULTS_COLUMNS

FAST = PatchConfig(steps=3)


def cfg(*methods: str, **kw: object) -> EvalConfig:
    base = dict(methods=methods, batch_size=5, bootstrap=100, iir_patch=FAST)
    base.update(kw)
    return EvalConfig(**base)  # type: ignore[arg-type]


@pytest.fixture
def data(tmp_path: Path) -> FakeData:
    return FakeData(tmp_path / "data", n=4)


def run(data: FakeData, out: Path, config: EvalConfig, models: list | None = None) -> EvalResult:
    CALLS.clear()
    res = evaluate(data, models if models is not None else make_models(data.manifest_hash), config, out)
    assert res is not None
    return res


def reference_g(attr: np.ndarray, mask: np.ndarray) -> float:
    m = np.maximum(attr, 0).sum(0)
    lo, p99 = m.min(), np.percentile(m, 99)
    norm = np.clip((m - lo) / (p99 - lo), 0, 1)
    return float(norm[mask[0] > 0.5].mean())


def test_mcs_known_answer_and_report_schema(data: FakeData, tmp_path: Path) -> None:
    res = run(data, tmp_path / "out", cfg("bamtest_weighted"))
    table = res.results
    assert tuple(table.columns) == RESULTS_COLUMNS
    row = table[(table["metric"] == "mcs")].iloc[0]
    # slow reference: the obj model misreads instance 3 of every pair (see evalfakes), scene is always right
    models = {e.card.role: e.model for e in make_models(data.manifest_hash)}
    diffs = []
    for sub_name, _role in (("obj", "obj"),):
        sub = data.subset(sub_name)
        for i in range(len(sub)):
            if int(sub.table.iloc[i]["instance"]) % 4 == 3:
                continue
            x, _y, m = sub[i]
            g_obj = reference_g((x * models["obj"].weight[:, None, None]).numpy(), m.numpy())
            g_sc = reference_g((x * models["scene"].weight[:, None, None]).numpy(), m.numpy())
            diffs.append(g_obj - g_sc)
    assert row["value"] == pytest.approx(np.mean(diffs), abs=1e-6)  # float32 maps
    assert row["value"] > 0.3
    assert row["n_used"] == 27 and json.loads(row["excluded_reasons"]) == {"incorrect": 9}
    assert row["ci_low"] <= row["value"] <= row["ci_high"]
    assert row["model_pair"] == "obj|scene" and row["direction"] == "higher" and row["chance"] == 0.0
    assert json.loads(row["method_params"]) == {"scale": 1.0}
    out = tmp_path / "out"
    for name in ("results.csv", "records.csv", "provenance.json", "config.yaml"):
        assert (out / name).is_file()
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["dataset"]["manifest_hash"] == data.manifest_hash and prov["seed"] == 0
    entries = {e.card.role: e for e in make_models(data.manifest_hash)}
    assert prov["checkpoints"]["standard:obj"]["weights_sha256"] == entries["obj"].sha256
    assert {"torch", "numpy", "bam"} <= set(prov["versions"]) and prov["wall_time_s"] > 0
    recs = pd.read_csv(out / "records.csv")
    assert {"image_id", "subset", "input", "model_role", "model_hash", "method", "method_hash", "prediction",
            "label", "correct", "g", "valid"} <= set(recs.columns)
    assert set(recs["input"]) == {"composite", "scene_only", "iir_scene", "iir_patch", "common_in_scene"}
    from bam.schema import read_records, read_results

    read_results(out / "results.csv")  # the report side accepts the file
    read_records(out / "records.csv")


def _strip_costs(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False).drop(columns=list(COST_COLUMNS))


def test_same_seed_identical_csv_and_cache_reuse(data: FakeData, tmp_path: Path) -> None:
    c = cfg("bamtest_weighted", "bamtest_noisy", seed=3)
    run(data, tmp_path / "a", c)
    n_first = sum(CALLS.values())
    run(data, tmp_path / "b", c)
    assert _strip_costs(tmp_path / "a" / "results.csv").equals(_strip_costs(tmp_path / "b" / "results.csv"))
    assert (tmp_path / "a" / "records.csv").read_bytes() == (tmp_path / "b" / "records.csv").read_bytes()
    # a re-run in the same OUT reuses every chunk: no method call at all
    run(data, tmp_path / "a", c)
    assert sum(CALLS.values()) == 0 and n_first > 0
    assert _strip_costs(tmp_path / "a" / "results.csv").equals(_strip_costs(tmp_path / "b" / "results.csv"))
    # another seed changes the stochastic method only
    run(data, tmp_path / "a", cfg("bamtest_weighted", "bamtest_noisy", seed=4))
    assert CALLS["bamtest_weighted"] == 0 and CALLS["bamtest_noisy"] > 0
    a = pd.read_csv(tmp_path / "a" / "results.csv")
    b = pd.read_csv(tmp_path / "b" / "results.csv")
    noisy = a["method"] == "bamtest_noisy"
    assert not np.allclose(a.loc[noisy, "value"].fillna(0), b.loc[noisy, "value"].fillna(0))
    assert np.allclose(a.loc[~noisy, "value"].fillna(0), b.loc[~noisy, "value"].fillna(0))


def test_added_method_computes_only_that_method(data: FakeData, tmp_path: Path) -> None:
    run(data, tmp_path / "o", cfg("bamtest_weighted"))
    chunks = CALLS["bamtest_weighted"]
    run(data, tmp_path / "o", cfg("bamtest_weighted", "bamtest_noisy"))
    assert CALLS["bamtest_weighted"] == 0
    assert CALLS["bamtest_noisy"] == chunks
    table = pd.read_csv(tmp_path / "o" / "results.csv")
    assert set(table["method"]) == {"bamtest_weighted", "bamtest_noisy"}


def test_corrupted_cache_entry_is_recomputed(data: FakeData, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run(data, tmp_path / "o", cfg("bamtest_weighted"))
    before = (tmp_path / "o" / "results.csv").read_text()
    files = sorted((tmp_path / "o" / "cache" / "records").rglob("*.json"))
    doc = json.loads(files[0].read_text())
    doc["payload"]["g"][0] = 0.123456  # a silent edit: still valid JSON
    files[0].write_text(json.dumps(doc))
    files[1].write_text("{ truncated")
    with caplog.at_level(logging.WARNING, logger="bam.evaluate"):
        run(data, tmp_path / "o", cfg("bamtest_weighted"))
    assert CALLS["bamtest_weighted"] == 2
    assert "corrupt" in caplog.text
    assert _strip_costs(tmp_path / "o" / "results.csv").equals(pd.read_csv(
        pd.io.common.StringIO(before), dtype=str, keep_default_na=False).drop(columns=list(COST_COLUMNS)))


def test_interrupted_run_resumes(data: FakeData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import evalfakes

    run(data, tmp_path / "full", cfg("bamtest_weighted"))
    total = CALLS["bamtest_weighted"]
    original = evalfakes._weighted
    state = {"n": 0}

    def flaky(model, inputs, target, **params):
        state["n"] += 1
        if state["n"] > 4:
            raise KeyboardInterrupt
        return original(model, inputs, target, **params)

    from bam.methods import METHODS

    monkeypatch.setitem(METHODS._entries, "bamtest_weighted", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(data, tmp_path / "o", cfg("bamtest_weighted"))
    monkeypatch.undo()
    run(data, tmp_path / "o", cfg("bamtest_weighted"))
    assert CALLS["bamtest_weighted"] == total - 4
    assert _strip_costs(tmp_path / "o" / "results.csv").equals(_strip_costs(tmp_path / "full" / "results.csv"))


def test_manifest_mismatch_names_both_hashes(data: FakeData, tmp_path: Path) -> None:
    models = make_models("f" * 64)
    with pytest.raises(BamError) as exc:
        run(data, tmp_path / "o", cfg("bamtest_weighted"), models=models)
    msg = str(exc.value)
    assert "f" * 64 in msg and data.manifest_hash in msg and "\n" not in msg


def test_missing_role_skips_or_errors(data: FakeData, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    models = make_models(data.manifest_hash, roles=["obj", "scene"])
    with caplog.at_level(logging.WARNING, logger="bam.evaluate"):
        res = run(data, tmp_path / "o", cfg("bamtest_weighted"), models=models)
    assert set(res.results["metric"]) == {"mcs", "idr"}
    assert "bam train" in caplog.text and "--role scene_only" in caplog.text
    assert any(s.metric == "iir" and s.missing_roles == ("scene_only",) and not s.required for s in res.skipped)
    # a metric the config names explicitly must run: a missing role is then an error naming the fix
    with pytest.raises(BamError, match=r"role.*scene_only.*bam train"):
        run(data, tmp_path / "o2", cfg("bamtest_weighted", metrics=("iir",)), models=models)


def test_method_failing_everywhere_is_reported(data: FakeData, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bam.evaluate"):
        res = run(data, tmp_path / "o", cfg("bamtest_fail", metrics=("mcs",)))
    row = res.results.iloc[0]
    assert row["n_used"] == 0 and math.isnan(row["value"])
    assert json.loads(row["excluded_reasons"]) == {"incorrect": 9, "method_failed": 27}
    assert "no image passed" in caplog.text


def test_invertible_methods_use_invertible_models(data: FakeData, tmp_path: Path) -> None:
    models = make_models(data.manifest_hash) + make_models(data.manifest_hash, roles=["obj", "scene"], invertible=True)
    res = run(data, tmp_path / "o", cfg("bamtest_weighted", "bamtest_inv", metrics=("mcs",)), models=models)
    inv = [e for e in models if e.card.invertible]
    recs = res.records
    assert set(recs.loc[recs["method"] == "bamtest_inv", "model_hash"]) == {e.sha256[:16] for e in inv}
    assert set(recs.loc[recs["method"] == "bamtest_weighted", "model_hash"]) == \
        {e.sha256[:16] for e in models if not e.card.invertible and e.card.role in ("obj", "scene")}


def test_predictions_shared_and_limit(data: FakeData, tmp_path: Path) -> None:
    res = run(data, tmp_path / "o", cfg("bamtest_weighted", "bamtest_noisy", images={"mcs": 7, "idr": 12},
                                        metrics=("mcs", "idr")))
    t = res.results.set_index(["method", "metric"])
    assert t.loc[("bamtest_weighted", "mcs"), "n_used"] + t.loc[("bamtest_weighted", "mcs"), "n_excluded"] == 7
    assert t.loc[("bamtest_weighted", "idr"), "n_used"] + t.loc[("bamtest_weighted", "idr"), "n_excluded"] == 12
    preds = list((tmp_path / "o" / "cache" / "pred").rglob("*.json"))
    # one prediction file per (model, input, chunk): obj 7 ids (2 chunks), scene 12 (3), scene_only 12 (3)
    assert len(preds) == 2 + 3 + 3
    assert torch.get_num_threads() >= 1


def test_examples_file_for_the_report(data: FakeData, tmp_path: Path) -> None:
    """examples.safetensors holds each method's attribution of fixed val composites, per model role."""
    from bam.methods import attribute
    from bam.report._cases import load_examples

    run(data, tmp_path / "out", cfg("bamtest_weighted", "gradient", examples=3))
    ex = load_examples(tmp_path / "out" / "examples.safetensors")
    sub = data.subset("obj", split="val")
    idx = [int(i) for i in np.linspace(0, len(sub) - 1, num=3).round()]
    assert ex.image_ids == tuple(str(sub.table["image_id"].iloc[i]) for i in idx)
    images, _, masks = sub.load_batch(idx)
    assert np.array_equal(ex.images, images.numpy()) and np.array_equal(ex.masks, masks.numpy())
    models = {e.card.role: e.model for e in make_models(data.manifest_hash)}
    for role in ("obj", "scene"):
        for method in ("bamtest_weighted", "gradient"):
            target = models[role](images).argmax(1)
            want = attribute(method, models[role], images, target).numpy()
            assert np.allclose(ex.attrs[role][method], want, atol=1e-6)
    # none configured: no file
    run(data, tmp_path / "none", cfg("gradient", examples=0))
    assert not (tmp_path / "none" / "examples.safetensors").exists()

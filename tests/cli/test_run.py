"""`bam run`: the training plan, stage validation, and build -> train on the tiny recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bam.cli.main import cli
from bam.pipeline import RunConfig, TrainJob, training_plan


def test_training_plan_covers_every_role_the_metrics_need() -> None:
    plan = training_plan(RunConfig(commonality_config="c", invertible_config="i",
                                   invertible_commonality_config="ic"), num_scenes=3)
    assert [p.folder for p in plan] == [
        "obj", "scene", "scene_only", "commonality-1", "commonality-2", "commonality-3",
        "invertible-obj", "invertible-scene", "invertible-scene_only", "invertible-commonality-1",
        "invertible-commonality-2", "invertible-commonality-3"]
    assert plan[8] == TrainJob("invertible-scene_only", "scene_only", "i")
    assert plan[3] == TrainJob("commonality-1", "commonality-1", "c")
    assert plan[-1] == TrainJob("invertible-commonality-3", "commonality-3", "ic")
    no_inv_k = training_plan(RunConfig(commonality_config="c", invertible_config="i"), num_scenes=3)
    assert [p.folder for p in no_inv_k][-1] == "invertible-scene_only"
    bare = training_plan(RunConfig(commonality_config=None, invertible_config=None), num_scenes=3)
    assert [p.folder for p in bare] == ["obj", "scene", "scene_only"]


def test_unknown_stage_is_a_one_line_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["run", "--out", str(tmp_path), "--stages", "build,deploy"])
    assert res.exit_code == 2
    assert "deploy" in res.output and "accepted: build, train, evaluate, report" in res.output
    assert "Traceback" not in res.output


def test_unknown_run_config(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["run", "--config", "nope", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "unknown run config 'nope'" in res.output and "synthetic" in res.output


def test_build_and_train_stages_on_tiny(tmp_path: Path) -> None:
    train = tmp_path / "train.yaml"
    train.write_text(yaml.safe_dump({"arch": "small_resnet", "arch_kwargs": {"widths": [8, 8, 8]},
                                     "epochs": 1, "batch_size": 32, "lr": 0.01}))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"recipe": "tiny", "seed": 3, "train_config": str(train),
                                   "commonality_config": None, "invertible_config": None}))
    out = tmp_path / "out"
    args = ["-q", "run", "--config", str(cfg), "--out", str(out), "--stages", "build,train", "--device", "cpu"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert manifest["seed"] == 3
    cards = {p.parent.name: json.loads(p.read_text()) for p in (out / "models").glob("*/card.json")}
    assert sorted(cards) == ["obj", "scene", "scene_only"]
    assert {c["role"] for c in cards.values()} == {"obj", "scene", "scene_only"}
    assert all(c["seed"] == 3 for c in cards.values())
    # every stage resumes: a second run finds everything done and changes nothing
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "run.yaml"}
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0, again.output
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "run.yaml"}
    assert before == after


def test_repeats_summarise_ranking_stability(tmp_path: Path) -> None:
    train = tmp_path / "train.yaml"
    train.write_text(yaml.safe_dump({"arch": "small_resnet", "arch_kwargs": {"widths": [8, 8, 8]},
                                     "epochs": 1, "batch_size": 32, "lr": 0.01}))
    ev = tmp_path / "eval.yaml"
    ev.write_text(yaml.safe_dump({"methods": ["gradient", "gradcam", "random"], "metrics": ["mcs", "idr"],
                                  "bootstrap": 50, "examples": 0}))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"recipe": "tiny", "seed": 3, "train_config": str(train),
                                   "commonality_config": None, "invertible_config": None,
                                   "eval_config": str(ev)}))
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["run", "--config", str(cfg), "--out", str(out), "--repeats", "2", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "[train seed 4]" in res.output and "[summary] mcs" in res.output
    assert (out / "seed-3" / "eval" / "results.csv").is_file() and (out / "seed-4" / "eval" / "results.csv").is_file()
    assert not (out / "seed-3" / "data").exists()  # one build shared by both seeds
    import pandas as pd

    stab = pd.read_csv(out / "summary" / "stability.csv").set_index("metric")
    assert set(stab.index) == {"mcs", "idr"} and (stab["n_repeats"] == 2).all() and (stab["n_methods"] == 2).all()
    assert stab["kendall_w"].between(0, 1).all()
    rep = pd.read_csv(out / "summary" / "repeats.csv")
    assert set(rep["method"]) == {"gradient", "gradcam", "random"} and (rep["n_repeats"] == 2).all()
    assert (out / "summary" / "report.html").is_file() and (out / "summary" / "outputs.json").is_file()
    assert set(stab["model_kind"]) == {"standard"} and stab["replication_checks"].ge(0).all()
    pooled = pd.read_csv(out / "summary" / "pooled.csv")
    assert set(pooled["method"]) == {"gradient", "gradcam", "random"} and (pooled["n_seeds"] == 2).all()
    assert (pooled["ci_low"] <= pooled["value"]).all() and (pooled["value"] <= pooled["ci_high"]).all()
    # the same folders through `bam evaluate --models A --models B` give the same summary
    ev_out = tmp_path / "ev"
    again = CliRunner().invoke(cli, ["evaluate", "--data", str(out / "data"), "--models", str(out / "seed-3" / "models"),
                                     "--models", str(out / "seed-4" / "models"), "--config", str(ev), "--seed", "3",
                                     "--out", str(ev_out), "--device", "cpu"])
    assert again.exit_code == 0, again.output
    assert (ev_out / "seed-3" / "results.csv").is_file() and (ev_out / "seed-4" / "results.csv").is_file()
    for name in ("repeats.csv", "stability.csv", "pooled.csv", "pooled_comparisons.csv"):
        assert (ev_out / "summary" / name).read_bytes() == (out / "summary" / name).read_bytes(), name


def test_every_repeat_runs_after_one_with_a_method_failed_everywhere(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import bam.pipeline as pipeline

    seen: list[int] = []

    def one(cfg: RunConfig, d: object, stages: object, how: object, echo: object) -> tuple[tuple[str, str], ...]:
        seen.append(d.seed)  # type: ignore[attr-defined]
        return (("plugin:broken", "boom"),) if d.seed in (5, 6) else ()  # type: ignore[attr-defined]

    monkeypatch.setattr(pipeline, "_run_one", one)
    res = pipeline.run_pipeline(RunConfig(seed=5, repeats=3), tmp_path / "out", stages=("evaluate",), echo=lambda s: None)
    assert seen == [5, 6, 7]  # the repeats after the failing one are still built, trained and evaluated
    assert res.failed_everywhere == (("plugin:broken", "boom"),)

"""`bam evaluate` through click on a real tiny build with (untrained) saved checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from bam.cli.main import cli


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny dataset and a models dir with small_resnet checkpoints for obj, scene, scene_only, commonality-3."""
    from bam.data import open_dataset
    from bam.models import ModelCard, create_model, save

    root = tmp_path_factory.mktemp("cli")
    res = CliRunner().invoke(cli, ["-q", "build-data", "--recipe", "tiny", "--out", str(root / "data")])
    assert res.exit_code == 0, res.output
    data = open_dataset(root / "data")
    for role in ("obj", "scene", "scene_only", "commonality-1", "commonality-2", "commonality-3"):
        torch.manual_seed(len(role))
        k = len(data.object_classes) if role == "obj" else len(data.scene_classes)
        model = create_model("small_resnet", num_classes=k, image_size=data.image_size)
        card = ModelCard(arch="small_resnet", role=role, num_classes=k, image_size=data.image_size,
                         dataset_manifest_hash=data.manifest_hash, recipe="tiny")
        save(model, root / "models" / role, card)
    return root / "data", root / "models"


def invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_cli_writes_reports(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    data, models = tiny
    out = tmp_path / "out"
    res = invoke("-q", "evaluate", "--data", str(data), "--models", str(models), "--method", "gradient",
                 "--method", "random", "--config", "ci", "--device", "cpu", "--out", str(out))
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "results.csv")
    assert set(table["method"]) == {"gradient", "random"}
    assert set(table["metric"]) == {"mcs", "idr", "iir", "rmcs_curve", "rmcs"}
    assert sorted(table.loc[table["metric"] == "rmcs_curve", "k"].astype(int).unique()) == [1, 2]
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config"]["name"] == "ci" and prov["device"] == "cpu"
    assert "wrote" in res.output
    # the IIR patch set is cached under the dataset's derived dir
    assert list((data / "derived" / "iir_patch").glob("*/meta.json"))


def test_cli_bad_inputs(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    data, models = tiny
    res = CliRunner().invoke(cli, ["evaluate", "--data", str(data), "--models", str(models), "--method", "nope",
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "unknown method 'nope'" in res.output
    res = CliRunner().invoke(cli, ["evaluate", "--data", str(data), "--models", str(models), "--metric", "xyz",
                                   "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    # explicitly asked metric whose role is missing: error naming the role and how to train it
    only = tmp_path / "only"
    only.mkdir()
    (only / "obj").symlink_to(models / "obj", target_is_directory=True)
    res = CliRunner().invoke(cli, ["evaluate", "--data", str(data), "--models", str(only), "--metric", "mcs",
                                   "--method", "gradient", "--device", "cpu", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    assert "scene" in res.output and "bam train" in res.output and "--role scene" in res.output


def test_cli_manifest_mismatch(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    _data, models = tiny
    other = tmp_path / "other"
    res = CliRunner().invoke(cli, ["-q", "build-data", "--recipe", "tiny", "--seed", "5", "--out", str(other)])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(cli, ["evaluate", "--data", str(other), "--models", str(models), "--method", "gradient",
                                   "--metric", "mcs", "--device", "cpu", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2
    from bam.data import open_dataset

    assert open_dataset(other).manifest_hash in res.output
    assert open_dataset(_data).manifest_hash in res.output and "retrain" in res.output


def test_cli_plugin_method_and_limit(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    data, models = tiny
    out = tmp_path / "out"
    res = invoke("-q", "evaluate", "--data", str(data), "--models", str(models), "--method", "evalfakes:input_plugin",
                 "--metric", "mcs", "--metric", "idr", "--limit", "5", "--config", "ci", "--device", "cpu",
                 "--out", str(out))
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "results.csv")
    assert set(table["method"]) == {"evalfakes:input_plugin"} and set(table["metric"]) == {"mcs", "idr"}
    assert ((table["n_used"] + table["n_excluded"]) == 5).all()


def test_cli_failing_plugin_one_line_exit_1_and_complete_outputs(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    data, models = tiny
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["-q", "evaluate", "--data", str(data), "--models", str(models),
                                   "--method", "evalfakes:raising_plugin", "--method", "gradient", "--metric", "mcs",
                                   "--config", "ci", "--device", "cpu", "--out", str(out)])
    assert res.exit_code == 1, res.output
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "evalfakes:raising_plugin" in errors[0] and "RuntimeError: plug-in exploded" in errors[0]
    assert "Traceback" not in res.output
    table = pd.read_csv(out / "results.csv")
    assert table.loc[table["method"] == "gradient", "value"].notna().all()
    assert json.loads((out / "provenance.json").read_text())["failures"]["evalfakes:raising_plugin"]


@pytest.mark.parametrize("plugin", ["evalfakes:exiting_plugin"])
def test_cli_sys_exit_in_a_plugin_is_a_failed_method(tiny: tuple[Path, Path], tmp_path: Path, plugin: str) -> None:
    data, models = tiny
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["-q", "evaluate", "--data", str(data), "--models", str(models), "--method", plugin,
                                   "--method", "gradient", "--metric", "mcs", "--config", "ci", "--device", "cpu",
                                   "--out", str(out)])
    assert res.exit_code == 1, res.output  # as for any method that failed on every image
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and plugin in errors[0] and "sys.exit(0)" in errors[0], res.stderr
    table = pd.read_csv(out / "results.csv")
    assert table.loc[table["method"] == "gradient", "value"].notna().all()
    assert (out / "outputs.json").is_file() and (out / "records.csv").is_file()


def _plugin_source(gain: float) -> str:
    return ("def attr(model, inputs, target):\n"
            f"    return inputs ** {gain!r}\n")


def test_cli_rerun_after_editing_a_plugin_recomputes(tiny: tuple[Path, Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Edit a plug-in between two runs into the same --out: new records; then a different module of the same
    name found first on sys.path: new records again; an unchanged re-run reads them all from the cache."""
    import importlib
    import sys

    data, models = tiny
    out, first, second = tmp_path / "out", tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    monkeypatch.syspath_prepend(str(first))
    name = "bam_i23_edit_plugin"
    args = ["-q", "evaluate", "--data", str(data), "--models", str(models), "--method", f"{name}:attr",
            "--metric", "mcs", "--limit", "6", "--config", "ci", "--device", "cpu", "--out", str(out)]

    def run(gain: float, where: Path) -> tuple[str, str]:
        (where / f"{name}.py").write_text(_plugin_source(gain))
        sys.modules.pop(name, None)
        importlib.invalidate_caches()
        res = invoke(*args)
        assert res.exit_code == 0, res.output
        prov = json.loads((out / "provenance.json").read_text())
        assert prov["cache"]["records_from_cache"] == 0 and "12 records, 0 from the cache" in res.output
        recs = pd.read_csv(out / "records.csv")
        return recs["g"].round(9).astype(str).str.cat(sep=","), str(prov["methods"][f"{name}:attr"]["code_sha256"])

    g1, h1 = run(1.0, first)
    assert "0 from the cache" not in invoke(*args).output  # unchanged: read back
    g2, h2 = run(3.0, first)  # edited: another map, another g
    assert h2 != h1 and g2 != g1
    monkeypatch.syspath_prepend(str(second))
    g3, h3 = run(2.0, second)  # a different module of the same name, found first on the path
    assert h3 not in (h1, h2) and g3 not in (g1, g2)
    (second / f"{name}.py").unlink()  # gone again: the first module (power 3) is found, and read from the cache
    sys.modules.pop(name, None)
    importlib.invalidate_caches()
    assert f"{6 * 2} records, {6 * 2} from the cache" in invoke(*args).output


def test_cli_tcav_rows_land_in_results_and_report(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    data, models = tiny
    out = tmp_path / "out"
    res = invoke("-q", "evaluate", "--data", str(data), "--models", str(models), "--method", "tcav", "--config", "ci",
                 "--device", "cpu", "--out", str(out))
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "results.csv", keep_default_na=False)
    assert set(table["method"]) == {"tcav"}
    assert set(table["metric"]) == {"tcav_mcs", "tcav_rmcs", "tcav_rmcs_curve"}
    mcs = table[table["metric"] == "tcav_mcs"].iloc[0]
    assert mcs["model_pair"] == "obj|scene" and -1 <= float(mcs["value"]) <= 1 and mcs["ci_low"] != ""
    assert json.loads(mcs["method_params"])["concept_size"] == 10  # the ci config's tcav section
    files = json.loads((out / "outputs.json").read_text())["files"]
    assert {"tcav_records.csv", "tcav_summary.csv", "tcav_cavs.csv"} <= set(files)
    summary = pd.read_csv(out / "tcav_summary.csv")
    assert set(summary["model_role"]) == {"obj", "scene", "commonality-1", "commonality-2", "commonality-3"}
    assert invoke("-q", "report", str(out)).exit_code == 0
    assert "TCAV per model and layer" in (out / "report.html").read_text()


def test_controls_rmcs_at_chance_on_a_tiny_build(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """The RMCS summary's null on a real tiny build: the model-independent controls score exactly 0
    (CI [0, 0]) and the random control's CI contains 0, the curve points within noise of 0 too."""
    data, models = tiny
    out = tmp_path / "out"
    res = invoke("-q", "evaluate", "--data", str(data), "--models", str(models), "--method", "random",
                 "--method", "edge", "--method", "center", "--metric", "rmcs", "--config", "ci", "--device", "cpu",
                 "--out", str(out))
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "results.csv")
    summary = table[table["metric"] == "rmcs"].set_index("method")
    assert set(summary.index) == {"random", "edge", "center"} and (summary["n_used"] > 0).all()
    for m in ("edge", "center"):
        assert summary.loc[m, ["value", "ci_low", "ci_high"]].tolist() == [0.0, 0.0, 0.0]
    lo, value, hi = summary.loc["random", ["ci_low", "value", "ci_high"]]
    assert lo <= 0.0 <= hi and lo <= value <= hi
    curve = table[(table["metric"] == "rmcs_curve") & (table["method"] == "random")]
    assert abs(value) <= 2.0 * curve["value"].abs().max() + 1e-12  # |fall| <= span * |slope|, two points

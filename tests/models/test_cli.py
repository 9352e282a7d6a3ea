"""`bam train` and `bam models list` through click's CliRunner, including every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner, Result

from bam.cli.main import cli
from bam.models import load

FAST = ["--epochs", "1", "--batch-size", "16", "--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump({"arch": "small_resnet", "arch_kwargs": {"widths": [8, 16, 32]}, "lr": 0.05}))
    return path


def _train(*args: str) -> Result:
    return CliRunner().invoke(cli, ["train", *args])


def test_train_then_list(tmp_path: Path, tiny_data_dir: Path, tiny_config: Path) -> None:
    out = tmp_path / "models" / "obj"
    res = _train("--data", str(tiny_data_dir), "--role", "obj", "--out", str(out), "--config", str(tiny_config), *FAST)
    assert res.exit_code == 0, res.output
    assert "obj (small_resnet): val" in res.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["epochs"] == 1 and saved["batch_size"] == 16 and saved["arch_kwargs"]["widths"] == [8, 16, 32]
    model = load(out)
    assert model.card.role == "obj" and model(torch.rand(2, 3, 32, 32)).shape == (2, 3)
    res = CliRunner().invoke(cli, ["models", "list", str(tmp_path / "models")])
    assert res.exit_code == 0, res.output
    header, _rule, row = res.output.strip().splitlines()
    assert header.split() == ["role", "arch", "invertible", "val", "acc", "probes", "dataset", "weights", "path"]
    assert row.split()[:3] == ["obj", "small_resnet", "no"] and row.split()[-2:] == ["ok", str(out)]
    assert "val_scene_only" in row and model.card.dataset_manifest_hash[:12] in row
    # the same command again says the run is finished and where its card is (--resume: the same)
    sha = json.loads((out / "card.json").read_text())["weights_sha256"]
    for extra in ([], ["--resume"]):
        res = _train("--data", str(tiny_data_dir), "--role", "obj", "--out", str(out), "--config", str(tiny_config),
                     *extra, *FAST)
        assert res.exit_code == 0, res.output
        assert "already trained (1 epochs), nothing to do" in res.output and str(out / "card.json") in res.output
        assert json.loads((out / "card.json").read_text())["weights_sha256"] == sha
    # resuming with another learning rate names the setting
    res = _train("--data", str(tiny_data_dir), "--role", "obj", "--out", str(out), "--config", str(tiny_config),
                 "--resume", "--lr", "0.5", *FAST)
    assert res.exit_code == 2 and "setting 'lr' differs (checkpoint 0.05, now 0.5)" in res.output


def test_resume_on_other_dataset_names_the_hash(tmp_path: Path, tiny_data_dir: Path, tiny_config: Path) -> None:
    other = tmp_path / "tiny_seed1"
    res = CliRunner().invoke(cli, ["-q", "build-data", "--recipe", "tiny", "--seed", "1", "--out", str(other)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "m"
    assert _train("--data", str(tiny_data_dir), "--role", "scene", "--out", str(out), "--config", str(tiny_config),
                  *FAST).exit_code == 0
    res = _train("--data", str(other), "--role", "scene", "--out", str(out), "--config", str(tiny_config),
                 "--resume", *FAST)
    assert res.exit_code == 2 and "setting 'dataset_manifest_hash' differs" in res.output


@pytest.mark.parametrize("args,message", [
    (["--role", "objects"], "unknown role 'objects'; accepted: obj, scene, scene_only, commonality-1..commonality-3"),
    (["--role", "commonality-4"], "unknown role 'commonality-4'"),
    (["--role", "obj", "--arch", "vgg"], "Invalid value for '--arch'"),
    (["--role", "obj", "--config", "nope"], "unknown train config 'nope'; accepted: "),
    (["--role", "obj", "--epochs", "0"], "train config epochs=0 is invalid"),
    (["--role", "obj", "--device", "tpu"], "unknown device 'tpu'"),
    (["--role", "obj", "--arch", "small_resnet", "--pretrained"], "has no pretrained weights"),
])
def test_bad_inputs(tmp_path: Path, tiny_data_dir: Path, args: list[str], message: str) -> None:
    res = _train("--data", str(tiny_data_dir), "--out", str(tmp_path / "m"), *args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output


def test_missing_data_and_missing_role_subset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    res = _train("--data", str(tmp_path / "nowhere"), "--role", "obj", "--out", str(tmp_path / "m"), *FAST)
    assert res.exit_code == 2 and "error:" in res.output
    from _fake_data import FakeData

    import bam.data

    monkeypatch.setattr(bam.data, "open_dataset", lambda root: FakeData(instances=6, val=2, omit=("scene_only",)))
    res = _train("--data", str(tmp_path), "--role", "scene_only", "--out", str(tmp_path / "m"), *FAST)
    assert res.exit_code == 2 and "has no train data for role 'scene_only'" in res.output


def test_out_of_memory_names_batch_size(tmp_path: Path, tiny_data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bam.train.trainer as trainer

    def oom(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(trainer, "_fit", oom)
    res = _train("--data", str(tiny_data_dir), "--role", "obj", "--out", str(tmp_path / "m"), *FAST)
    assert res.exit_code == 2
    assert "out of memory" in res.output and "--batch-size 16" in res.output


def test_tampered_checkpoint_via_list_and_load(tmp_path: Path, tiny_data_dir: Path, tiny_config: Path) -> None:
    from bam.errors import BamError

    out = tmp_path / "m"
    assert _train("--data", str(tiny_data_dir), "--role", "scene_only", "--out", str(out), "--config",
                  str(tiny_config), *FAST).exit_code == 0
    card = json.loads((out / "card.json").read_text())
    assert set(card["accuracy"]) == {"val", "train", "val_scene"}
    card["weights_sha256"] = "0" * 64
    (out / "card.json").write_text(json.dumps(card))
    with pytest.raises(BamError, match="checksum mismatch"):
        load(out)


def test_models_list_empty_and_missing(tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["models", "list", str(tmp_path)])
    assert res.exit_code == 0 and "no models under" in res.output
    res = CliRunner().invoke(cli, ["models", "list", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "does not exist" in res.output

"""`bam train --arch X` trains X with its own settings, so the hint that `bam evaluate` prints when
the invertible models are missing (`bam train --data D --role obj --arch iresnet --out M`) works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bam.cli.main import cli

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hint") / "data"
    res = CliRunner().invoke(cli, ["-q", "build-data", "--recipe", "tiny", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def _hint(data: Path, out: Path) -> list[str]:
    """The command `bam evaluate` prints for a missing invertible obj model."""
    return ["train", "--data", str(data), "--role", "obj", "--arch", "iresnet", "--out", str(out)]


def test_arch_hint_uses_the_config_made_for_the_arch(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "iresnet-obj"
    res = CliRunner().invoke(cli, [*_hint(tiny, out), "--epochs", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "synthetic_iresnet.yaml (the config made for it)" in res.output
    card = json.loads((out / "card.json").read_text())
    made = yaml.safe_load((REPO / "configs" / "train" / "synthetic_iresnet.yaml").read_text())
    assert card["arch"] == "iresnet" and card["invertible"] is True
    assert {k: card["arch_kwargs"][k] for k in made["arch_kwargs"]} == made["arch_kwargs"]
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["optimizer"] == made["optimizer"] and saved["epochs"] == 1


def test_arch_without_its_own_config_drops_foreign_arch_kwargs(tiny: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "mine.yaml"
    cfg.write_text(yaml.safe_dump({"arch": "iresnet", "arch_kwargs": {"blocks": [1, 1, 1], "hidden": [8, 8, 8]},
                                   "epochs": 1, "batch_size": 32, "lr": 0.01}))
    out = tmp_path / "m"
    res = CliRunner().invoke(cli, ["train", "--data", str(tiny), "--role", "scene", "--arch", "small_resnet",
                                   "--out", str(out), "--config", str(cfg), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "arch_kwargs are dropped (small_resnet defaults)" in res.output
    assert json.loads((out / "card.json").read_text())["arch"] == "small_resnet"


@pytest.mark.slow
def test_arch_hint_exactly_as_printed(tiny: Path, tmp_path: Path) -> None:
    """The hint verbatim (20 epochs of configs/train/synthetic_iresnet.yaml on the tiny data)."""
    res = CliRunner().invoke(cli, _hint(tiny, tmp_path / "iresnet-obj"))
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1].startswith("obj (iresnet): val")

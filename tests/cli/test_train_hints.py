"""`bam train --arch X` trains X with its own settings, so the hint that `bam evaluate` prints when
the invertible models are missing (`bam train --data D --role obj --arch irevnet --out M/invertible-obj`)
works as printed."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bam.cli.main import cli
from bam.evaluate.api import INVERTIBLE_ARCH, train_hint
from bam.evaluate.plan import Skip

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hint") / "data"
    res = CliRunner().invoke(cli, ["-q", "build-data", "--recipe", "tiny", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


def _hint(data: Path, models: Path) -> list[str]:
    """The command `bam evaluate` prints for a missing invertible obj model, as CLI arguments."""
    text = train_hint(Skip("mcs", "invertible", ("invertible_projection",), ("obj",), False), str(data), str(models))
    cmd = shlex.split(text.split("train with: ", 1)[1])
    assert cmd[0] == "bam", text
    return cmd[1:]


def test_arch_hint_uses_the_config_made_for_the_arch(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "invertible-obj"
    res = CliRunner().invoke(cli, [*_hint(tiny, tmp_path), "--epochs", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert f"synthetic_{INVERTIBLE_ARCH}.yaml (the config made for it)" in res.output
    card = json.loads((out / "card.json").read_text())
    made = yaml.safe_load((REPO / "configs" / "train" / f"synthetic_{INVERTIBLE_ARCH}.yaml").read_text())
    assert card["arch"] == INVERTIBLE_ARCH and card["invertible"] is True
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
    """The hint verbatim (configs/train/synthetic_irevnet.yaml on the tiny data)."""
    res = CliRunner().invoke(cli, _hint(tiny, tmp_path))
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[-1].startswith(f"obj ({INVERTIBLE_ARCH}): val")

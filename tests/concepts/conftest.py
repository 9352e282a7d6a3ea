"""Fixtures for the TCAV tests: the toy model's helpers on sys.path, a tiny build, tiny trained models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real build of the tiny recipe (3 objects x 3 scenes, 32 px, 9 train + 3 val instances)."""
    from click.testing import CliRunner

    from bam.cli.main import cli

    out = tmp_path_factory.mktemp("tcav_data") / "tiny"
    res = CliRunner().invoke(cli, ["-q", "build-data", "--recipe", "tiny", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory, tiny_dir: Path) -> dict[str, Path]:
    """Quickly trained small ResNets for obj, scene and commonality-1..3 on the tiny build."""
    from bam.train import TrainConfig, train_model

    cfg = TrainConfig(arch="small_resnet", arch_kwargs={"widths": [8, 16, 32]}, epochs=2, batch_size=16, lr=0.05,
                      warmup_epochs=0.0, max_shift=2, select="last")
    root = tmp_path_factory.mktemp("tcav_models")
    out = {}
    for role in ("obj", "scene", "commonality-1", "commonality-2", "commonality-3"):
        train_model(cfg, tiny_dir, root / role, role, device="cpu")
        out[role] = root / role
    return out

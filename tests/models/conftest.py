"""Fixtures for model/trainer tests: tiny datasets (a real `bam build-data --recipe tiny` and a fake)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from _fake_data import FakeData


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real dataset built by the CLI from the tiny recipe (3x3 classes, 32 px)."""
    from click.testing import CliRunner

    from bam.cli.main import cli

    out = tmp_path_factory.mktemp("data") / "tiny"
    res = CliRunner().invoke(cli, ["-q", "build-data", "--recipe", "tiny", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="session")
def fake_data() -> FakeData:
    """An in-memory dataset following the data contract, easy enough to learn in a few steps."""
    return FakeData(instances=24, val=6)

"""Shared test setup: deterministic, small, CPU-only, no network."""

from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("BAM_TEST_THREADS", "2")))
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

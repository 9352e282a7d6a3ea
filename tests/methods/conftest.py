"""Fixtures for the method tests: tiny hand-made models built in memory (no files)."""

from __future__ import annotations

import pytest
import torch
from method_nets import ConvNet, LinearNet


@pytest.fixture
def linear_net() -> LinearNet:
    return LinearNet().eval()


@pytest.fixture
def conv_net() -> ConvNet:
    return ConvNet().eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def targets() -> torch.Tensor:
    return torch.tensor([0, 1, 2, 1, 0])

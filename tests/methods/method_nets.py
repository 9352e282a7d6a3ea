"""Tiny hand-made models for the method tests (unique module name: imported by tests and conftest)."""

from __future__ import annotations

import torch
from torch import nn


class LinearNet(nn.Module):
    """logits = W · flatten(x) + b: every gradient method has a closed form on it."""

    def __init__(self, shape: tuple[int, int, int] = (3, 4, 4), classes: int = 3) -> None:
        super().__init__()
        d = shape[0] * shape[1] * shape[2]
        gen = torch.Generator().manual_seed(1)
        self.fc = nn.Linear(d, classes)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(classes, d, generator=gen))
            self.fc.bias.copy_(torch.randn(classes, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


class ConvNet(nn.Module):
    """Small ReLU conv net with BN, max-pool and a residual add; one nn.ReLU per call site."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.conv = nn.Conv2d(6, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.relu1 = nn.ReLU()
        self.relu2 = nn.ReLU()
        self.head = nn.Linear(6, classes)
        self.gradcam_layer = self.relu2
        gen = torch.Generator().manual_seed(2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            self.bn.running_mean.copy_(torch.randn(6, generator=gen) * 0.1)
            self.bn.running_var.copy_(torch.rand(6, generator=gen) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = self.relu2(h + self.relu1(self.bn(self.conv(h))))
        return self.head(h.mean((2, 3)))


class ReusedReluNet(ConvNet):
    """Like ConvNet but the same nn.ReLU module is called twice (as torchvision ResNets do)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = self.relu1(h + self.relu1(self.bn(self.conv(h))))
        return self.head(h.mean((2, 3)))


class FunctionalReluNet(ConvNet):
    """Like ConvNet but one ReLU is functional (invisible to module hooks)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = torch.relu(h + self.relu1(self.bn(self.conv(h))))
        return self.head(h.mean((2, 3)))

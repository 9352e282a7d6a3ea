"""DeepLIFT-safe residual blocks: one ``nn.ReLU`` module per call site, never in-place.

captum's DeepLift replaces the gradient of every ``nn.ReLU`` *module* by the Rescale multiplier
(Shrikumar et al., ICML 2017). torchvision's BasicBlock/Bottleneck call one shared ``self.relu``
twice/three times (and in place); captum then mixes up the saved inputs/outputs of the calls and
silently computes the wrong thing (SPEC §5, deeplift). These blocks hold the same parameter
modules under the same names (``conv1``, ``bn1``, ..., ``downsample``), so torchvision weights load
unchanged, but give every ReLU call its own module (``relu1``, ``relu2``[, ``relu3``]) and add the
residual out of place.
"""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn


class SafeBasicBlock(nn.Module):
    """ResNet basic block (He et al., CVPR 2016): relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut x)."""

    def __init__(self, conv1: nn.Module, bn1: nn.Module, conv2: nn.Module, bn2: nn.Module,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = conv1, bn1, nn.ReLU(inplace=False)
        self.conv2, self.bn2 = conv2, bn2
        self.downsample = downsample
        self.relu2 = nn.ReLU(inplace=False)

    @classmethod
    def build(cls, in_ch: int, out_ch: int, stride: int = 1) -> SafeBasicBlock:
        """A freshly initialised block (3x3 convs, BN, projection shortcut when the shape changes)."""
        down = None
        if stride != 1 or in_ch != out_ch:
            down = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
        return cls(nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out_ch),
                   nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), down)

    @classmethod
    def from_torchvision(cls, block: nn.Module) -> SafeBasicBlock:
        """Take over the parameter modules of a ``torchvision.models.resnet.BasicBlock``."""
        down = cast("nn.Module | None", block.downsample)
        return cls(cast(nn.Module, block.conv1), cast(nn.Module, block.bn1), cast(nn.Module, block.conv2),
                   cast(nn.Module, block.bn2), down)

    def forward(self, x: Tensor) -> Tensor:
        """One residual step."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + identity)


class SafeBottleneck(nn.Module):
    """ResNet bottleneck block (1x1 -> 3x3 -> 1x1, torchvision v1.5 layout: stride on the 3x3)."""

    def __init__(self, conv1: nn.Module, bn1: nn.Module, conv2: nn.Module, bn2: nn.Module,
                 conv3: nn.Module, bn3: nn.Module, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = conv1, bn1, nn.ReLU(inplace=False)
        self.conv2, self.bn2, self.relu2 = conv2, bn2, nn.ReLU(inplace=False)
        self.conv3, self.bn3 = conv3, bn3
        self.downsample = downsample
        self.relu3 = nn.ReLU(inplace=False)

    @classmethod
    def from_torchvision(cls, block: nn.Module) -> SafeBottleneck:
        """Take over the parameter modules of a ``torchvision.models.resnet.Bottleneck``."""
        down = cast("nn.Module | None", block.downsample)
        return cls(cast(nn.Module, block.conv1), cast(nn.Module, block.bn1), cast(nn.Module, block.conv2),
                   cast(nn.Module, block.bn2), cast(nn.Module, block.conv3), cast(nn.Module, block.bn3), down)

    def forward(self, x: Tensor) -> Tensor:
        """One residual step."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu3(out + identity)

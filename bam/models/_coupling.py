"""Building blocks of the i-RevNet classifier: additive couplings and exact channel permutations.

* :class:`AdditiveCoupling` (RevNet: Gomez, Ren, Urtasun & Grosse, NeurIPS 2017; i-RevNet: Jacobsen,
  Smeulders & Oyallon, ICLR 2018): split the channels into halves ``(x1, x2)``, then
  ``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)``. The inverse is two subtractions,
  ``x2 = y2 - G(y1)``, ``x1 = y1 - F(x2)``, whatever ``F`` and ``G`` are, so they are ordinary
  conv -> BN -> ReLU -> conv -> BN branches (eval-mode BN is a fixed function; ``F``/``G`` need
  not be invertible).
* :func:`deinterleave` / :func:`interleave`: the fixed channel permutation ``[0, 2, 4, ..., 1, 3,
  5, ...]`` and its inverse (pure indexing, exact). After a 2x2 squeeze channel ``4c + k`` is band
  ``k`` of channel ``c``, so each half then holds two of the four bands of *every* channel.
* :func:`swap_halves`: ``(a, b) -> (b, a)``, the mixing between consecutive couplings (its own inverse).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def residual_branch(in_channels: int, hidden: int, out_channels: int,
                    kernels: Sequence[int] = (1, 3, 1)) -> nn.Sequential:
    """``conv(k1) -> BN -> ReLU -> ... -> conv(kn) -> BN``: in -> hidden -> ... -> hidden -> out channels.

    ``kernels=(1, 3, 1)`` is a ResNet bottleneck path (He et al. 2016): 1x1 down to ``hidden``, 3x3,
    1x1 back. BatchNorms start at the usual scale 1: zero-initialising the last one (Goyal et al.
    2017, a fresh coupling = the identity) delays learning in these shallow networks (docs/invertible.md).
    Every ReLU is its own out-of-place module (DeepLIFT-safe, SPEC §5).
    """
    layers: list[nn.Module] = []
    widths = [in_channels] + [hidden] * (len(kernels) - 1) + [out_channels]
    for i, k in enumerate(kernels):
        conv = nn.Conv2d(widths[i], widths[i + 1], k, padding=k // 2, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        layers += [conv, nn.BatchNorm2d(widths[i + 1])]
        if i < len(kernels) - 1:
            layers.append(nn.ReLU(inplace=False))
    return nn.Sequential(*layers)


class AdditiveCoupling(nn.Module):
    """``(x1, x2) -> (x1 + F(x2), x2 + G(x1 + F(x2)))`` on the two channel halves; exact inverse."""

    def __init__(self, channels: int, hidden: int, kernels: Sequence[int] = (1, 3, 1)) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"AdditiveCoupling needs an even channel count, got {channels}")
        half = channels // 2
        self.f = residual_branch(half, hidden, half, kernels)
        self.g = residual_branch(half, hidden, half, kernels)

    def forward(self, x: Tensor) -> Tensor:
        """``[y1, y2]`` with ``y1 = x1 + F(x2)``, ``y2 = x2 + G(y1)``."""
        x1, x2 = x.chunk(2, dim=1)
        y1 = x1 + self.f(x2)
        y2 = x2 + self.g(y1)
        return torch.cat([y1, y2], dim=1)

    def inverse(self, y: Tensor) -> Tensor:
        """``[x1, x2]`` with ``x2 = y2 - G(y1)``, ``x1 = y1 - F(x2)`` (same F, G: needs eval-mode BN)."""
        y1, y2 = y.chunk(2, dim=1)
        x2 = y2 - self.g(y1)
        x1 = y1 - self.f(x2)
        return torch.cat([x1, x2], dim=1)


def swap_halves(x: Tensor) -> Tensor:
    """``[a, b] -> [b, a]`` along channels (an involution)."""
    a, b = x.chunk(2, dim=1)
    return torch.cat([b, a], dim=1)


def deinterleave(x: Tensor) -> Tensor:
    """Channels ``[0, 2, 4, ..., 1, 3, 5, ...]``: even channels to the first half, odd to the second."""
    n, c, h, w = x.shape
    return x.reshape(n, c // 2, 2, h, w).transpose(1, 2).reshape(n, c, h, w)


def interleave(x: Tensor) -> Tensor:
    """Inverse of :func:`deinterleave`."""
    n, c, h, w = x.shape
    return x.reshape(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)

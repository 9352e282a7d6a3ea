"""The affine head of the invertible classifiers (SPEC §5.6): eval-mode BatchNorm -> global average
pool -> linear, expanded into ``logits = A @ z.flatten(1) + b`` (Zhuang et al. 2019 need the head
affine in the features ``z``; a ReLU would not be)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def pooled_head(norm: nn.BatchNorm2d, fc: nn.Linear, z: Tensor) -> Tensor:
    """``fc(mean_{h,w} norm(z))``: the head's forward (running statistics in eval mode)."""
    return fc(norm(z).mean(dim=(2, 3)))


def pooled_affine_head(norm: nn.BatchNorm2d, fc: nn.Linear,
                       feature_shape: tuple[int, int, int]) -> tuple[Tensor, Tensor]:
    """``(A [K, C*h*w], b [K])`` with ``pooled_head(norm, fc, z) == A @ z.flatten(1) + b`` in eval mode.

    BatchNorm (eval) is ``z * s + t`` per channel with ``s = gamma / sqrt(var + eps)``,
    ``t = beta - mean * s``; average pooling spreads each channel weight over its h*w positions:
    ``A[k, (c, p)] = W[k, c] * s_c / (h*w)``, ``b = W @ t + b_fc``.
    """
    c, hh, ww = feature_shape
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError("pooled_affine_head needs a BatchNorm with running statistics (track_running_stats)")
    with torch.no_grad():
        s = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        t = norm.bias - norm.running_mean * s
        w = fc.weight * s  # [K, C]
        k = w.shape[0]
        a = (w / (hh * ww)).unsqueeze(-1).expand(-1, c, hh * ww).reshape(k, c * hh * ww)
        b = fc.weight @ t + fc.bias
    return a.contiguous(), b

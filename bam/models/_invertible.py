"""Pieces shared by the invertible classifiers (``irevnet``, ``iresnet``): input and feature-map
checks, the normalise-then-stages forward of ``T``, and the per-stage TCAV bottlenecks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from torch import Tensor, nn

from bam.errors import BamError


def check_pixels(arch: str, x: Tensor, image_size: int) -> None:
    """BamError unless ``x`` is [N, 3, image_size, image_size] (a bijective model cannot resize)."""
    want = (3, image_size, image_size)
    if x.dim() != 4 or tuple(x.shape[1:]) != want:
        raise BamError(f"{arch} input of shape {tuple(x.shape)} is invalid; accepted: [N, {want[0]}, "
                       f"{want[1]}, {want[2]}] RGB pixels in [0, 1]")


def check_features(arch: str, z: Tensor, feature_shape: Sequence[int]) -> None:
    """BamError unless ``z`` is [N, *feature_shape]."""
    if z.dim() != 4 or tuple(z.shape[1:]) != tuple(feature_shape):
        raise BamError(f"{arch} feature map of shape {tuple(z.shape)} is invalid; accepted: "
                       f"[N, {', '.join(map(str, feature_shape))}]")


def forward_stages(x: Tensor, mean: Tensor, std: Tensor, stages: Iterable[nn.Module]) -> Tensor:
    """``z = T(x)``: per-channel normalisation, then every stage in order."""
    h = (x - mean.to(x.dtype)) / std.to(x.dtype)
    for stage in stages:
        h = stage(h)
    return h


def stage_bottlenecks(stages: Iterable[nn.Module]) -> dict[str, nn.Module]:
    """Stage name -> the stage (``block_layer1``, ...): the modules whose outputs TCAV reads."""
    return {f"block_layer{i + 1}": st for i, st in enumerate(stages)}

"""What methods may assume about models (structural protocols, no inheritance needed).

Every bam classifier: ``forward(x) -> logits`` with ``x`` RGB pixels in [0, 1], shape
[N, 3, H, W] (normalisation and any resize happen inside the model), and an optional
``gradcam_layer`` attribute: the module whose output is the last convolutional stage [N, C, h, w].

Invertible classifiers (arch ``iresnet``, SPEC §5.6) also implement :class:`InvertibleClassifier`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class InvertibleClassifier(Protocol):
    """logits = A @ flatten(T(x)) + b with T bijective.

    ``features(x)``: T(x), any shape [N, ...]; ``inverse(z)``: T^{-1}(z) (pixels, same shape as x);
    ``affine_head()``: (A [K, D], b [K]) with D = prod(z.shape[1:]), exact in eval mode.
    """

    def features(self, x: Tensor) -> Tensor: ...

    def inverse(self, z: Tensor) -> Tensor: ...

    def affine_head(self) -> tuple[Tensor, Tensor]: ...


def is_invertible(model: object) -> bool:
    return model is not None and isinstance(model, InvertibleClassifier) and getattr(model, "is_invertible", True)


def gradcam_layer(model: torch.nn.Module) -> torch.nn.Module | None:
    return getattr(model, "gradcam_layer", None)

"""Invertible residual network classifier (i-ResNet; Behrmann et al., "Invertible Residual
Networks", ICML 2019), shaped for exact decision projection (Zhuang et al. 2019; SPEC §5.6).

``T`` (bijective): per-channel input normalisation (affine) -> for each stage: space-to-depth 2x2
squeeze (Haar by default, see :func:`squeeze`) -> ActNorm -> invertible residual blocks
``x + g(x)`` with ``Lip(g) < 1``. No injective
zero padding: the 3 input channels become 12, 48, 192, ... by squeezing alone, so ``T`` is a
bijection of R^(3*H*W). The head is affine: eval-mode BatchNorm -> global average pool -> linear,
so ``logits = A @ flatten(T(x)) + b`` exactly (:meth:`IResNet.affine_head`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from bam.errors import BamError, choices_error
from bam.models._affine_head import pooled_affine_head, pooled_head
from bam.models._invertible import check_features, check_pixels, forward_stages, stage_bottlenecks
from bam.models._iresnet_blocks import ACTIVATIONS, SQUEEZES, ActNorm2d, InvertibleBlock, squeeze, unsqueeze
from bam.models._registry import register_model
from bam.models._wrap import resolve_normalization


class _Stage(nn.Module):
    """One resolution level: squeeze -> ActNorm (optional) -> invertible blocks."""

    def __init__(self, channels: int, hidden: int, hw: int, num_blocks: int, coeff: float, activation: str,
                 actnorm: bool, n_power_iterations: int, squeeze_kind: str) -> None:
        super().__init__()
        self.squeeze_kind = squeeze_kind
        self.norm = ActNorm2d(channels) if actnorm else None
        self.blocks = nn.ModuleList(
            InvertibleBlock(channels, hidden, hw, coeff, activation, n_power_iterations) for _ in range(num_blocks))

    def forward(self, x: Tensor) -> Tensor:
        """Squeeze, normalise, then the residual blocks."""
        h = squeeze(x, self.squeeze_kind)
        if self.norm is not None:
            h = self.norm(h)
        for block in self.blocks:
            h = block(h)
        return h

    def inverse(self, z: Tensor, max_iter: int, tol: float) -> Tensor:
        """Exact inverse of :meth:`forward` up to the fixed-point tolerance of the blocks."""
        h = z
        for block in reversed(self.blocks):
            h = cast(InvertibleBlock, block).inverse(h, max_iter=max_iter, tol=tol)
        if self.norm is not None:
            h = self.norm.inverse(h)
        return unsqueeze(h, self.squeeze_kind)


@register_model("iresnet", description="Invertible ResNet (i-ResNet) with an affine head, for invertible projection")
class IResNet(nn.Module):
    """i-ResNet classifier: ``logits = head(features(x))`` with ``features`` bijective and ``head`` affine.

    ``x``: RGB pixels in [0, 1], [N, 3, H, W] with H = W = ``image_size`` (divisible by
    ``2**len(blocks)``). Implements :class:`bam.models.protocols.InvertibleClassifier`.
    """

    is_invertible = True
    mean: Tensor  # non-persistent buffer [1, 3, 1, 1]
    std: Tensor  # non-persistent buffer [1, 3, 1, 1]

    def __init__(self, num_classes: int, image_size: int, input_size: int | None = None, *,
                 blocks: Sequence[int] = (2, 2, 2), hidden: Sequence[int] = (32, 64, 128), coeff: float = 0.9,
                 activation: str = "elu", actnorm: bool = True, squeeze: str = "haar", normalization: str = "centered",
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 n_power_iterations: int = 1, inverse_max_iter: int = 200, inverse_tol: float = 1e-6) -> None:
        super().__init__()
        blocks, hidden = [int(b) for b in blocks], [int(h) for h in hidden]
        if input_size is not None and int(input_size) != int(image_size):
            raise BamError(f"iresnet input_size {input_size} != image_size {image_size}: resizing is not bijective; "
                           f"accepted: none or {image_size}")
        if not blocks or len(blocks) != len(hidden) or min(blocks) < 1 or min(hidden) < 1:
            raise BamError(f"iresnet blocks {blocks} / hidden {hidden} are invalid; accepted: two lists of the same "
                           "non-zero length with positive entries (one per stage)")
        if not 0.0 < float(coeff) < 1.0:
            raise BamError(f"iresnet coeff {coeff} is invalid; accepted: 0 < coeff < 1 (Lipschitz bound per conv)")
        if activation not in ACTIVATIONS:
            raise choices_error("activation", activation, ACTIVATIONS)
        if squeeze not in SQUEEZES:
            raise choices_error("squeeze", squeeze, SQUEEZES)
        if image_size % (2 ** len(blocks)) != 0:
            raise BamError(f"iresnet image_size {image_size} is not divisible by 2**{len(blocks)} "
                           f"(one 2x2 squeeze per stage); accepted: a multiple of {2 ** len(blocks)}")
        m, s = resolve_normalization(normalization, mean, std)
        self.num_classes, self.image_size, self.input_size = int(num_classes), int(image_size), int(image_size)
        self.normalization = {"name": normalization, "mean": list(m), "std": list(s)}
        self.register_buffer("mean", torch.tensor(m).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(s).view(1, 3, 1, 1), persistent=False)
        self.inverse_max_iter, self.inverse_tol = int(inverse_max_iter), float(inverse_tol)
        #: written into model cards whatever the config said (the default changed from "pixel")
        self.recorded_arch_kwargs = {"squeeze": squeeze}
        channels, hw = 3, int(image_size)
        stages = []
        for nb, hid in zip(blocks, hidden):
            channels, hw = channels * 4, hw // 2
            stages.append(_Stage(channels, hid, hw, nb, coeff, activation, actnorm, n_power_iterations, squeeze))
        self.stages = nn.ModuleList(stages)
        self.feature_shape = (channels, hw, hw)
        self.head_norm = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)

    @property
    def gradcam_layer(self) -> nn.Module:
        """The last invertible block (output: the last conv stage [N, C, h, w], i.e. ``z``)."""
        last = cast(_Stage, self.stages[-1])
        return last.blocks[-1]

    @property
    def bottlenecks(self) -> dict[str, nn.Module]:
        """Stage name -> the module whose output is that stage's output (``block_layer1``, ...; TCAV)."""
        return stage_bottlenecks(self.stages)

    def features(self, x: Tensor) -> Tensor:
        """``z = T(x)``: the bijective feature map [N, C, h, w] (``C*h*w == 3*H*W``)."""
        check_pixels("iresnet", x, self.image_size)
        return forward_stages(x, self.mean, self.std, self.stages)

    def inverse(self, z: Tensor, max_iter: int | None = None, tol: float | None = None) -> Tensor:
        """``x = T^{-1}(z)`` (pixels, [N, 3, H, W]); blocks are inverted by fixed-point iteration until
        the per-image relative update is below ``tol`` (default ``inverse_tol``) or ``max_iter``."""
        check_features("iresnet", z, self.feature_shape)
        it = self.inverse_max_iter if max_iter is None else int(max_iter)
        eps = self.inverse_tol if tol is None else float(tol)
        with torch.no_grad():
            h = z.detach()
            for stage in reversed(self.stages):
                h = cast(_Stage, stage).inverse(h, it, eps)
            return h * self.std.to(h.dtype) + self.mean.to(h.dtype)

    def head(self, z: Tensor) -> Tensor:
        """Affine head: BatchNorm (running statistics in eval mode) -> global average pool -> linear."""
        return pooled_head(self.head_norm, self.fc, z)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for pixels ``x`` in [0, 1]."""
        return self.head(self.features(x))

    def affine_head(self) -> tuple[Tensor, Tensor]:
        """``(A [K, D], b [K])`` with ``head(z) == A @ z.flatten(1) + b`` in eval mode (D = C*h*w).

        BatchNorm (eval) is ``z * s + t`` per channel with ``s = gamma / sqrt(var + eps)``,
        ``t = beta - mean * s``; average pooling spreads each channel weight over its h*w positions.
        """
        return pooled_affine_head(self.head_norm, self.fc, self.feature_shape)

    def lipschitz_bounds(self, n_iter: int = 200) -> list[float]:
        """Per block, an upper bound on ``Lip(g)`` from fresh power iterations (must all be < 1)."""
        stages = [cast(_Stage, st) for st in self.stages]
        return [cast(InvertibleBlock, blk).lipschitz_bound(n_iter) for stage in stages for blk in stage.blocks]

"""i-RevNet classifier (Jacobsen, Smeulders & Oyallon, "i-RevNet: Deep Invertible Networks", ICLR
2018), shaped for exact decision projection (Zhuang et al. 2019; SPEC §5.6). The default invertible
model of bam.

``T`` (bijective by construction): per-channel input normalisation (affine) -> for each stage: 2x2
space-to-depth squeeze (orthonormal Haar by default) -> a fixed channel permutation (even channels to
the first half) -> additive couplings (RevNet, Gomez et al. 2017) ``y1 = x1 + F(x2)``,
``y2 = x2 + G(y1)``, halves swapped between consecutive couplings. No injective zero padding: the
3 input channels become 12, 48, 192, ... by squeezing alone, so every ``z`` has exactly one
pre-image, and the inverse is analytic (subtractions, the transposed squeeze), exact to float
rounding. The head is affine: eval-mode BatchNorm -> global average pool -> linear, so
``logits = A @ flatten(T(x)) + b`` exactly (:meth:`IRevNet.affine_head`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bam.errors import BamError, choices_error
from bam.models._affine_head import pooled_affine_head, pooled_head
from bam.models._coupling import AdditiveCoupling, deinterleave, interleave, swap_halves
from bam.models._invertible import check_features, check_pixels, forward_stages, stage_bottlenecks
from bam.models._iresnet_blocks import SQUEEZES, squeeze, unsqueeze
from bam.models._registry import register_model
from bam.models._wrap import resolve_normalization


class _Stage(nn.Module):
    """One resolution level: squeeze -> even/odd channel permutation -> couplings (halves swapped between)."""

    def __init__(self, channels: int, hidden: int, num_blocks: int, squeeze_kind: str, kernels: Sequence[int]) -> None:
        super().__init__()
        self.squeeze_kind = squeeze_kind
        self.blocks: Sequence[AdditiveCoupling] = nn.ModuleList(  # type: ignore[assignment]
            AdditiveCoupling(channels, hidden, kernels) for _ in range(num_blocks))

    def forward(self, x: Tensor) -> Tensor:
        """The stage's output (its last coupling's output)."""
        h = deinterleave(squeeze(x, self.squeeze_kind))
        for i, block in enumerate(self.blocks):
            h = block(swap_halves(h) if i else h)
        return h

    def inverse(self, z: Tensor) -> Tensor:
        """Exact inverse of :meth:`forward`."""
        h = z
        for i in range(len(self.blocks) - 1, -1, -1):
            h = self.blocks[i].inverse(h)
            if i:
                h = swap_halves(h)
        return unsqueeze(interleave(h), self.squeeze_kind)


@register_model("irevnet", description="i-RevNet (additive couplings, exact inverse) with an affine head; "
                                        "the default invertible model")
class IRevNet(nn.Module):
    """i-RevNet classifier: ``logits = head(features(x))``, ``features`` bijective, ``head`` affine.

    ``x``: RGB pixels in [0, 1], [N, 3, H, W] with H = W = ``image_size`` (divisible by
    ``2**len(blocks)``). ``blocks``: couplings per stage; ``hidden``: width of F and G per stage.
    Implements :class:`bam.models.protocols.InvertibleClassifier`.
    """

    is_invertible = True
    mean: Tensor
    std: Tensor

    def __init__(self, num_classes: int, image_size: int, input_size: int | None = None, *,
                 blocks: Sequence[int] = (1, 1, 1), hidden: Sequence[int] = (16, 32, 64),
                 kernels: Sequence[int] = (1, 3, 1), squeeze: str = "haar", normalization: str = "centered",
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        blocks, hidden, kernels = [int(b) for b in blocks], [int(h) for h in hidden], [int(k) for k in kernels]
        if input_size is not None and int(input_size) != int(image_size):
            raise BamError(f"irevnet input_size {input_size} != image_size {image_size}: resizing is not bijective; "
                           f"accepted: none or {image_size}")
        if not blocks or len(blocks) != len(hidden) or min(blocks) < 0 or sum(blocks) < 1 or min(hidden) < 1:
            raise BamError(f"irevnet blocks {blocks} / hidden {hidden} are invalid; accepted: two lists of the same "
                           "non-zero length, one entry per stage: couplings >= 0 (at least one in all), widths >= 1")
        if not kernels or min(kernels) < 1 or any(k % 2 == 0 for k in kernels):
            raise BamError(f"irevnet kernels {kernels} are invalid; accepted: a non-empty list of odd sizes, "
                           "e.g. [3, 1] (the convolutions of each coupling branch)")
        if squeeze not in SQUEEZES:
            raise choices_error("squeeze", squeeze, SQUEEZES)
        div = 2 ** len(blocks)
        if image_size % div != 0:
            raise BamError(f"irevnet image_size {image_size} is not divisible by {div} (one 2x2 squeeze per stage, "
                           f"{len(blocks)} stages); accepted: a multiple of {div}")
        m, s = resolve_normalization(normalization, mean, std)
        self.num_classes, self.image_size, self.input_size = int(num_classes), int(image_size), int(image_size)
        self.normalization = {"name": normalization, "mean": list(m), "std": list(s)}
        self.register_buffer("mean", torch.tensor(m).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(s).view(1, 3, 1, 1), persistent=False)
        #: written into model cards whatever the config said, so a card never depends on a default
        self.recorded_arch_kwargs = {"blocks": blocks, "hidden": hidden, "kernels": kernels, "squeeze": squeeze,
                                     "normalization": normalization}
        channels, hw = 3, int(image_size)
        stages = []
        for nb, hid in zip(blocks, hidden):
            channels, hw = channels * 4, hw // 2
            stages.append(_Stage(channels, hid, nb, squeeze, kernels))
        self.stages: Sequence[_Stage] = nn.ModuleList(stages)  # type: ignore[assignment]
        self.feature_shape = (channels, hw, hw)
        self.head_norm = nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels, num_classes)

    @property
    def gradcam_layer(self) -> nn.Module:
        """The last stage (output: the last conv stage [N, C, h, w], i.e. ``z``)."""
        return self.stages[-1]

    @property
    def bottlenecks(self) -> dict[str, nn.Module]:
        """Stage name -> the module whose output is that stage's output (``block_layer1``, ...; TCAV)."""
        return stage_bottlenecks(self.stages)

    def features(self, x: Tensor) -> Tensor:
        """``z = T(x)``: the bijective feature map [N, C, h, w] (``C*h*w == 3*H*W``)."""
        check_pixels("irevnet", x, self.image_size)
        return forward_stages(x, self.mean, self.std, self.stages)

    def inverse(self, z: Tensor) -> Tensor:
        """``x = T^{-1}(z)`` (pixels, [N, 3, H, W]), analytic; needs eval mode (BatchNorm in F and G
        must be the fixed functions the forward used)."""
        check_features("irevnet", z, self.feature_shape)
        if self.training:
            raise BamError("irevnet inverse() in training mode is invalid (BatchNorm would use batch statistics, "
                           "so F and G differ from the forward); accepted: eval mode, call model.eval() first")
        h = z
        for stage in reversed(self.stages):
            h = stage.inverse(h)
        return h * self.std.to(h.dtype) + self.mean.to(h.dtype)

    def head(self, z: Tensor) -> Tensor:
        """Affine head: BatchNorm (running statistics in eval mode) -> global average pool -> linear."""
        return pooled_head(self.head_norm, self.fc, z)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for pixels ``x`` in [0, 1]."""
        return self.head(self.features(x))

    def affine_head(self) -> tuple[Tensor, Tensor]:
        """``(A [K, D], b [K])`` with ``head(z) == A @ z.flatten(1) + b`` in eval mode (D = C*h*w)."""
        return pooled_affine_head(self.head_norm, self.fc, self.feature_shape)

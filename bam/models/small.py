"""``small_resnet``: a compact ResNet for the synthetic default (64 px, CPU-trainable in minutes).

Layout (defaults): 3x3 stem conv (stride 2) + BN + ReLU, then one DeepLIFT-safe basic block per
stage with widths (32, 64, 128) and strides (1, 2, 2), global average pooling and a linear head.
At 64 px the last stage is 8x8 (``gradcam_layer``) and the receptive field (~47 px) covers a pasted
object (36-45 px). Every ReLU is its own out-of-place ``nn.ReLU`` module (no functional relu).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from torch import Tensor, nn

from bam.errors import BamError
from bam.models._blocks import SafeBasicBlock
from bam.models._registry import register_model
from bam.models._wrap import InputWrapper


class SmallResNet(nn.Module):
    """Stem + stages of basic blocks + GAP + linear (He et al., CVPR 2016, scaled down)."""

    def __init__(self, num_classes: int, widths: Sequence[int] = (32, 64, 128), depths: Sequence[int] = (1, 1, 1),
                 stem_stride: int = 2, zero_init_residual: bool = True) -> None:
        super().__init__()
        if len(widths) != len(depths) or not widths or min(widths) < 1 or min(depths) < 1:
            raise BamError(f"small_resnet widths {list(widths)} / depths {list(depths)} are invalid; "
                           "accepted: equal-length lists of positive integers")
        if stem_stride not in (1, 2):
            raise BamError(f"small_resnet stem_stride {stem_stride!r} is invalid; accepted: 1, 2")
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, stride=stem_stride, padding=1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=False))
        stages: list[nn.Module] = []
        in_ch = widths[0]
        for i, (w, d) in enumerate(zip(widths, depths)):
            blocks = [SafeBasicBlock.build(in_ch if j == 0 else w, w, stride=(1 if i == 0 or j > 0 else 2))
                      for j in range(d)]
            stages.append(nn.Sequential(*blocks))
            in_ch = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(in_ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each residual branch (Goyal et al., 2017)
            if zero_init_residual and isinstance(m, SafeBasicBlock):
                bn2 = cast(nn.BatchNorm2d, m.bn2)  # SafeBasicBlock.build always makes a BatchNorm2d
                nn.init.zeros_(bn2.weight)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a normalised input."""
        return self.fc(self.flatten(self.pool(self.stages(self.stem(x)))))


@register_model("small_resnet", description="small DeepLIFT-safe ResNet for the synthetic default (CPU)")
def small_resnet(*, num_classes: int, image_size: int, input_size: int | None = None,
                 widths: Sequence[int] = (32, 64, 128), depths: Sequence[int] = (1, 1, 1), stem_stride: int = 2,
                 zero_init_residual: bool = True, normalization: str = "centered",
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> InputWrapper:
    """Small ResNet on [0, 1] pixels; ``gradcam_layer`` = the last stage. ``zero_init_residual``: start
    each block's last BN at zero (Goyal et al. 2017; with one block per stage it delays learning)."""
    net = SmallResNet(num_classes, tuple(widths), tuple(depths), stem_stride, bool(zero_init_residual))
    return InputWrapper(net, net.stages[-1], image_size=image_size, input_size=input_size,
                        normalization=normalization, mean=mean, std=std,
                        bottlenecks=[f"stages.{i}" for i in range(len(net.stages))])

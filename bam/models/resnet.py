"""torchvision ResNet-18/50 (He et al., CVPR 2016) made DeepLIFT-safe by construction.

The torchvision model is built as usual, then every BasicBlock/Bottleneck is replaced by a
:mod:`bam.models._blocks` block that takes over its parameter modules (same state-dict keys) and
the stem's in-place ``relu`` by a fresh out-of-place ``nn.ReLU``. Logits equal the stock model's
for the same weights. ``pretrained=True`` loads torchvision's ImageNet weights from the local
torch hub cache only; nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn

from bam.errors import BamError
from bam.models._blocks import SafeBasicBlock, SafeBottleneck
from bam.models._registry import register_model
from bam.models._wrap import InputWrapper


def make_deeplift_safe(net: tvm.ResNet) -> tvm.ResNet:
    """Replace shared/in-place ReLUs of a torchvision ResNet in place; returns ``net``."""
    net.relu = nn.ReLU(inplace=False)
    for name in ("layer1", "layer2", "layer3", "layer4"):
        layer: nn.Sequential = getattr(net, name)
        for i, block in enumerate(layer):
            if isinstance(block, tvm.resnet.BasicBlock):
                layer[i] = SafeBasicBlock.from_torchvision(block)
            elif isinstance(block, tvm.resnet.Bottleneck):
                layer[i] = SafeBottleneck.from_torchvision(block)
    return net


def _cached_weights(weights: tvm.WeightsEnum, hub_dir: Path | None) -> dict[str, torch.Tensor]:
    """The state dict of ``weights`` from the local torch hub cache (BamError if absent)."""
    base = Path(hub_dir) if hub_dir is not None else Path(torch.hub.get_dir())
    path = base / "checkpoints" / Path(weights.url).name
    if not path.is_file():
        raise BamError(
            f"pretrained weights {path.name} not found in {path.parent}; bam never downloads. Fetch them once "
            f"on a machine with internet (e.g. python -c \"import torchvision; "
            f"torchvision.models.get_weight('{weights}').get_state_dict(progress=True)\") "
            "and copy the file there, or train without --pretrained")
    return torch.load(path, map_location="cpu", weights_only=True)


def _build(ctor: Callable[..., tvm.ResNet], weights: tvm.WeightsEnum, *, num_classes: int, image_size: int,
           pretrained: bool, hub_dir: Path | None, **wrap: Any) -> InputWrapper:
    """The DeepLIFT-safe ResNet (ImageNet weights when ``pretrained``) in an :class:`InputWrapper`;
    ``wrap`` = input_size, normalization, mean, std."""
    net = make_deeplift_safe(ctor(num_classes=num_classes))
    if pretrained:
        if wrap["normalization"] != "imagenet" or wrap["mean"] is not None or wrap["std"] is not None:
            raise BamError(f"normalization {wrap['normalization']!r} with --pretrained; accepted: imagenet "
                           "(ImageNet weights expect ImageNet mean/std)")
        state = _cached_weights(weights, hub_dir)
        if num_classes != state["fc.weight"].shape[0]:
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("fc.") for k in missing):
            raise BamError(f"pretrained weights {weights} do not match the model: missing {missing}, "
                           f"unexpected {unexpected}")
    return InputWrapper(net, net.layer4, image_size=image_size, bottlenecks=[f"layer{i}" for i in range(1, 5)], **wrap)


@register_model("resnet18", supports_pretrained=True,
                description="torchvision ResNet-18, DeepLIFT-safe ReLUs (real data)")
def resnet18(*, num_classes: int, image_size: int, input_size: int | None = None, pretrained: bool = False,
             normalization: str = "imagenet", mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None, hub_dir: Path | None = None) -> InputWrapper:
    """ResNet-18 on [0, 1] pixels; ``gradcam_layer`` = ``layer4``."""
    return _build(tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1, num_classes=num_classes, image_size=image_size,
                  pretrained=pretrained, hub_dir=hub_dir, input_size=input_size, normalization=normalization,
                  mean=mean, std=std)


@register_model("resnet50", supports_pretrained=True,
                description="torchvision ResNet-50, DeepLIFT-safe ReLUs (the paper's model family)")
def resnet50(*, num_classes: int, image_size: int, input_size: int | None = None, pretrained: bool = False,
             normalization: str = "imagenet", mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None, hub_dir: Path | None = None) -> InputWrapper:
    """ResNet-50 on [0, 1] pixels; ``gradcam_layer`` = ``layer4``."""
    return _build(tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V2, num_classes=num_classes, image_size=image_size,
                  pretrained=pretrained, hub_dir=hub_dir, input_size=input_size, normalization=normalization,
                  mean=mean, std=std)

"""Input wrapper: pixels in [0, 1] -> optional bilinear resize -> (x - mean) / std -> network.

Every bam model takes RGB pixels in [0, 1] (SPEC §5: baselines, noise levels and attack radii are then
in pixel units). The normalisation lives inside the model and is recorded in the model card.

Normalisation presets (pixel units, per RGB channel):

* ``imagenet``: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225); required by ``--pretrained``.
* ``paper``: the original BAM TF1 models' mean subtraction without std scaling, i.e.
  ``255 * x - [123.68, 116.78, 103.94]``: mean = [123.68, 116.78, 103.94] / 255, std = 1 / 255.
* ``centered``: mean 0.5, std 0.25 (the synthetic default; inputs roughly in [-2, 2]).
* ``none``: mean 0, std 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bam.errors import BamError, choices_error

NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "paper": ((123.68 / 255, 116.78 / 255, 103.94 / 255), (1 / 255, 1 / 255, 1 / 255)),
    "centered": ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def resolve_normalization(normalization: str | None, mean: Sequence[float] | None = None,
                          std: Sequence[float] | None = None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std (pixel units) from a preset name, optionally overridden by explicit values."""
    name = normalization or "none"
    if name not in NORMALIZATIONS:
        raise choices_error("normalization", name, NORMALIZATIONS)
    preset_mean, preset_std = NORMALIZATIONS[name]
    m = tuple(float(v) for v in (mean if mean is not None else preset_mean))
    s = tuple(float(v) for v in (std if std is not None else preset_std))
    if len(m) != 3 or len(s) != 3:
        raise BamError(f"mean/std {list(m)}/{list(s)} must have 3 values (RGB)")
    if min(s) <= 0:
        raise BamError(f"std {list(s)} must be positive")
    return m, s


class InputWrapper(nn.Module):
    """Resize (bilinear, ``align_corners=False``) + normalise, then run ``net``.

    The state dict of the wrapped net is kept under ``net.`` and mean/std are non-persistent buffers
    (they live in the model card), so ``net`` stays layout-compatible with its source (torchvision).
    ``gradcam_layer`` is the net's last convolutional stage; ``bottlenecks`` names (dotted paths in
    ``net``) its residual stages.
    """

    mean: Tensor  # non-persistent buffer [1, 3, 1, 1]
    std: Tensor  # non-persistent buffer [1, 3, 1, 1]

    def __init__(self, net: nn.Module, gradcam_layer: nn.Module, image_size: int,
                 input_size: int | None = None, normalization: str | None = "none",
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 bottlenecks: Sequence[str] = ()) -> None:
        super().__init__()
        m, s = resolve_normalization(normalization, mean, std)
        self.net = net
        self.image_size = int(image_size)
        self.input_size = int(input_size) if input_size is not None else int(image_size)
        self.normalization = {"name": normalization or "none", "mean": list(m), "std": list(s)}
        self.register_buffer("mean", torch.tensor(m).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(s).view(1, 3, 1, 1), persistent=False)
        # Stored in a list so it is not registered twice in the module tree (it is part of ``net``).
        self._gradcam = [gradcam_layer]
        self._bottleneck_names = tuple(bottlenecks)

    @property
    def gradcam_layer(self) -> nn.Module:
        """The module whose output is the last convolutional stage [N, C, h, w]."""
        return self._gradcam[0]

    @property
    def bottlenecks(self) -> dict[str, nn.Module]:
        """``block_layer1``, ``block_layer2``, ... -> the module of ``net`` whose output is that residual
        stage's output, in order (the original BAM's names; for TCAV). Looked up in the module tree on
        every access, so it follows module replacements and adds nothing to the state dict."""
        return {f"block_layer{i + 1}": self.net.get_submodule(n) for i, n in enumerate(self._bottleneck_names)}

    def preprocess(self, x: Tensor) -> Tensor:
        """Pixels in [0, 1] at any size -> the normalised network input at ``input_size``."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise BamError(f"model input of shape {tuple(x.shape)} is invalid; accepted: [N, 3, H, W] RGB in [0, 1]")
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for pixels ``x`` in [0, 1]."""
        return self.net(self.preprocess(x))

    def extra_repr(self) -> str:
        """Shown by ``print(model)``."""
        return f"image_size={self.image_size}, input_size={self.input_size}, normalization={self.normalization['name']}"

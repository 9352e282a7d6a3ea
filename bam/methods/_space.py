"""Attribution space (SPEC §5.8): apply a method to the pixels or to the network input.

bam models take RGB pixels in [0, 1] and resize + normalise inside (:class:`bam.models._wrap.InputWrapper`).
The original BAM code (Yang & Kim 2019) took every map with respect to the network input instead:
the 128-px image bilinearly resized to 224 px minus the channel means. So:

* ``pixel`` space: methods get the model as it is and the [0, 1] pixels; maps and masks are at
  the image resolution.
* ``model`` space: methods get :class:`ModelSpaceModel` (the wrapped network alone, whose input is
  ``InputWrapper.preprocess(x)``) and that preprocessed tensor. SmoothGrad noise is then i.i.d. at
  the network resolution with sigma relative to the range of the network input, gradient x input
  multiplies by the normalised input, baselines are the preprocessing of a constant pixel image
  (:func:`baseline_image`; black -> ``-mean/std`` per channel, not zeros), and maps stay at the
  network input resolution. The object masks are brought to that resolution (:func:`resize_masks`).

Which space a method runs in is :func:`method_space`: controls never see the model and invertible
methods need the model's own ``inverse`` (in pixels), so both always run in pixel space. Boundary
methods search in pixels at the network resolution (:func:`search_view`), so the [0, 1] box and
the pixel-unit epsilon grid keep their meaning, and attribute in model space.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bam.errors import BamError, choices_error

SPACES = ("pixel", "model")
#: ``bilinear``: the original's mask resize (PIL ``BILINEAR`` on a 0/1 uint8 mask: a separable
#: bilinear pass per axis, antialiased when shrinking, each rounded half up to 0/1);
#: ``nearest``: nearest neighbour with half-pixel centres (torch ``nearest-exact``).
MASK_MODES = ("bilinear", "nearest")


@dataclass(frozen=True)
class AttributionSpace:
    """Where methods are applied (``space``) and how object masks follow them (``mask_mode``)."""

    space: str = "pixel"
    mask_mode: str = "bilinear"

    def __post_init__(self) -> None:
        """Validate both fields (one-line BamError naming the value)."""
        if self.space not in SPACES:
            raise choices_error("attribution space", self.space, SPACES)
        if self.mask_mode not in MASK_MODES:
            raise choices_error("mask_mode", self.mask_mode, MASK_MODES)


@dataclass(frozen=True)
class SpaceView:
    """What a method is called with in one space (see :func:`to_space`)."""

    model: nn.Module
    inputs: Tensor
    masks: Tensor
    space: str
    mask_mode: str


class _PixelView(nn.Module):
    """u (pixels in [0, 1] at the network resolution) -> net((u - mean) / std): no resize."""

    def __init__(self, owner: ModelSpaceModel) -> None:
        super().__init__()
        self._owner = [owner]  # a list: not registered as a submodule (no cycle in the module tree)

    def forward(self, u: Tensor) -> Tensor:
        """Logits for network-resolution pixels ``u``."""
        owner = self._owner[0]
        out: Tensor = owner(owner.from_pixels(u))
        return out


class ModelSpaceModel(nn.Module):
    """The network of an :class:`~bam.models._wrap.InputWrapper`, fed the preprocessed input directly.

    ``forward(z)`` is ``net(z)`` with ``z = preprocess(x)`` ([N, 3, input_size, input_size],
    normalised); ``gradcam_layer`` is the wrapper's. The parameters are the wrapper's own (shared).
    """

    mean: Tensor
    std: Tensor

    def __init__(self, wrapper: nn.Module) -> None:
        super().__init__()
        src = cast(Any, wrapper)
        self.net: nn.Module = src.net
        self.input_size = int(src.input_size)
        self.register_buffer("mean", src.mean.detach().clone().view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", src.std.detach().clone().view(1, -1, 1, 1), persistent=False)
        self._gradcam: list[nn.Module | None] = [getattr(wrapper, "gradcam_layer", None)]
        self._pixels = [_PixelView(self)]
        self.train(wrapper.training)

    @property
    def gradcam_layer(self) -> nn.Module | None:
        """The wrapped network's last convolutional stage."""
        return self._gradcam[0]

    def _check(self, t: Tensor, what: str) -> None:
        """``t`` must be a [N, C, input_size, input_size] batch."""
        if t.dim() != 4 or tuple(t.shape[-2:]) != (self.input_size, self.input_size):
            raise BamError(f"{what} of shape {tuple(t.shape)} is invalid in model space; accepted: "
                           f"[N, {self.mean.shape[1]}, {self.input_size}, {self.input_size}] (the preprocessed input)")

    def forward(self, z: Tensor) -> Tensor:
        """Logits for the preprocessed input ``z``."""
        self._check(z, "model-space input")
        return self.net(z)

    def from_pixels(self, u: Tensor) -> Tensor:
        """Network-resolution pixels in [0, 1] -> the network input (normalisation only)."""
        self._check(u, "pixel image")
        return (u - self.mean.to(u.dtype)) / self.std.to(u.dtype)

    def to_pixels(self, z: Tensor) -> Tensor:
        """The network input -> pixels at the network resolution (inverse of :meth:`from_pixels`)."""
        self._check(z, "model-space input")
        return z * self.std.to(z.dtype) + self.mean.to(z.dtype)

    def pixel_view(self) -> nn.Module:
        """The same network on network-resolution pixels (for searches that need the [0, 1] box)."""
        return self._pixels[0]


def model_space(model: nn.Module) -> ModelSpaceModel:
    """A model-space view of ``model`` (a new one: it shares the model's parameters; whoever keeps it, e.g. the
    evaluation for one unit of work, owns it; its train/eval flag follows the model's)."""
    if isinstance(model, ModelSpaceModel):
        return model
    missing = [a for a in ("preprocess", "net", "mean", "std", "input_size") if not hasattr(model, a)]
    if missing:
        raise BamError(f"model {type(model).__name__} has no {missing[0]} (no input preprocessing to attribute "
                       "after); accepted in space 'model': bam models that resize and normalise inside "
                       "(bam.models.create_model), or space 'pixel'")
    view = ModelSpaceModel(model)
    view.training = model.training  # the flag of the view itself; its modules are the model's
    return view


def resize_masks(masks: Tensor, size: int | tuple[int, int], mode: str = "bilinear") -> Tensor:
    """Binary object masks [N, 1, H, W] at ``size``, as float {0, 1} (SPEC §4.1: g at the model's input).

    ``bilinear`` reproduces PIL's ``Image.resize(BILINEAR)`` of a 0/1 uint8 mask, which the original
    applied to its masks (``single_attr`` in google-research-datasets/bam): width first, then height,
    each a bilinear pass (antialiased when shrinking, like PIL) rounded half up. ``nearest`` is
    nearest neighbour with half-pixel centres.
    """
    if mode not in MASK_MODES:
        raise choices_error("mask_mode", mode, MASK_MODES)
    if masks.dim() == 3:
        masks = masks.unsqueeze(1)
    if masks.dim() != 4 or masks.shape[1] != 1:
        raise BamError(f"masks of shape {tuple(masks.shape)} are invalid; accepted: [N, 1, H, W] or [N, H, W]")
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    m = (masks > 0.5).to(torch.float64 if masks.device.type != "mps" else torch.float32)
    if tuple(m.shape[-2:]) != (h, w):
        if mode == "nearest":
            m = F.interpolate(m, size=(h, w), mode="nearest-exact")
        else:
            for size_hw, shrink in (((m.shape[2], w), w < m.shape[3]), ((h, w), h < m.shape[2])):
                m = F.interpolate(m, size=size_hw, mode="bilinear", align_corners=False, antialias=shrink)
                m = (m >= 0.5 - 1e-6).to(m.dtype)  # round half up; ties are exact halves in PIL's fixed point
    return m.to(torch.float32)


def to_space(model: nn.Module, images: Tensor, masks: Tensor, space: str = "pixel",
             mask_mode: str = "bilinear", view: ModelSpaceModel | None = None) -> SpaceView:
    """What methods are called with in ``space``: (model, inputs, masks at the inputs' resolution).

    ``images``: [N, 3, H, W] pixels in [0, 1]; ``masks``: [N, 1, H, W] (or [N, H, W]) object masks at
    the images' resolution. ``pixel``: everything unchanged (masks binarised). ``model``: the
    :class:`ModelSpaceModel` of ``model``, ``model.preprocess(images)`` and the masks resized to the
    network input with ``mask_mode`` (``view``: the caller's model-space view of ``model`` to use, else a new
    one). A model without ``preprocess`` raises in ``model`` space.
    """
    AttributionSpace(space, mask_mode)
    if space == "pixel":
        size = (int(images.shape[-2]), int(images.shape[-1]))
        return SpaceView(model, images, resize_masks(masks, size, mask_mode), space, mask_mode)
    view = model_space(model) if view is None else view
    with torch.no_grad():
        inputs = cast(Any, model).preprocess(images)
    size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
    return SpaceView(view, inputs.detach(), resize_masks(masks, size, mask_mode), space, mask_mode)


def method_space(name: str, space: str) -> str:
    """The space method ``name`` runs in when ``space`` is asked for.

    Controls (they never call the model) and methods that need an invertible model (their
    explanation is built with the model's own inverse, in pixels; invertible models have no
    resize, so their normalised input differs from the pixels only by a per-channel affine map)
    always run in pixel space; every other method runs in ``space``.
    """
    from bam.methods._call import get_info

    AttributionSpace(space)
    info = get_info(name)
    if not info.uses_model or "invertible" in info.requires:
        return "pixel"
    return space


def baseline_image(model: nn.Module | None, like: Tensor, value: float) -> Tensor:
    """A constant image of pixel value ``value`` in the space of ``model``, shaped like ``like``.

    Pixel space: ``value`` everywhere. Model space: its preprocessing, ``(value - mean) / std`` per
    channel (the original's black baseline was ``0 - channel means``, not zeros of its input).
    """
    base = torch.full_like(like, float(value))
    if isinstance(model, ModelSpaceModel):
        return model.from_pixels(base)
    return base


def search_view(model: nn.Module, inputs: Tensor) -> tuple[nn.Module, Tensor, Callable[[Tensor], Tensor]]:
    """(model, inputs, back) for a boundary search: pixels at the network resolution in model space.

    In model space the search runs on ``to_pixels(inputs)`` (in [0, 1], the resized image) through
    ``net((u - mean) / std)``, so its [0, 1] box and pixel-unit radii keep their meaning; ``back``
    maps its boundary points to the model-space input. Elsewhere it is the identity.
    """
    if isinstance(model, ModelSpaceModel):
        return model.pixel_view(), model.to_pixels(inputs).clamp(0.0, 1.0), model.from_pixels
    return model, inputs, _identity


def _identity(t: Tensor) -> Tensor:
    """``t`` unchanged."""
    return t

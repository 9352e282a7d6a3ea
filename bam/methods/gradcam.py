"""GradCAM and guided GradCAM (Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra, "Grad-CAM: Visual
Explanations from Deep Networks via Gradient-based Localization", ICCV 2017).

GradCAM on ``model.gradcam_layer`` (the last convolutional stage, activations A [N, K, h, w]):
channel weights w_k = spatial mean of d logit[target] / d A_k; map = ReLU(Σ_k w_k A_k), bilinearly
upsampled to the input size (captum's ``LayerGradCam`` upsamples nearest and skips the ReLU unless
asked; bam computes the map itself with one forward hook), divided by its per-image maximum (an
all-zero map stays zero), and broadcast to every input channel so the attribution has the input's
shape. The forward records no graph before the layer and the backward stops at the layer.

Guided GradCAM = guided backpropagation ⊙ GradCAM (two forward+backward passes per image).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bam.errors import BamError
from bam.methods._base import MethodInfo, register_method
from bam.methods._batching import chunks, resolve_micro_batch
from bam.methods.guided import SPRINGENBERG, GuidedBackprop, guided_backprop_grads

SELVARAJU = ("Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra. Grad-CAM: Visual Explanations from Deep Networks "
             "via Gradient-based Localization. ICCV 2017")


class _LayerTap:
    """Forward hook on the GradCAM layer: keeps its output as a fresh leaf that requires grad, and records the
    rest of the forward (the part before the layer runs without a graph). It owns the gradient mode: entered
    (:meth:`__enter__`) it switches recording off; the hook switches it on at the layer; on exit the mode the
    caller had is back, whether the forward finished or raised."""

    def __init__(self, layer: torch.nn.Module) -> None:
        self.acts: list[Tensor] = []
        self._layer = layer
        self._prev = torch.is_grad_enabled()
        self._handle: Any = None

    def __enter__(self) -> _LayerTap:
        self._prev = torch.is_grad_enabled()
        self._handle = self._layer.register_forward_hook(self._hook)
        torch.set_grad_enabled(False)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()
        torch.set_grad_enabled(self._prev)

    def _hook(self, module: torch.nn.Module, args: Any, output: Tensor) -> Tensor:
        leaf = output.detach().requires_grad_(True)
        self.acts.append(leaf)
        torch.set_grad_enabled(True)  # for the rest of this forward only: __exit__ restores the caller's mode
        return leaf


def gradcam_maps(model: torch.nn.Module, inputs: Tensor, target: Tensor, micro_batch: int) -> Tensor:
    """Normalised, bilinearly upsampled GradCAM maps, shape [N, 1, H, W], values in [0, 1].

    One forward per micro-batch: without a graph up to ``model.gradcam_layer``, with one after it,
    and a backward from the target logit down to the layer only.
    """
    layer = model.gradcam_layer
    if not isinstance(layer, torch.nn.Module):
        raise BamError(f"method 'gradcam' needs model.gradcam_layer to be a module; got {type(layer).__name__}")
    out = torch.empty((inputs.shape[0], 1, *inputs.shape[2:]), dtype=inputs.dtype, device=inputs.device)
    for sl in chunks(inputs.shape[0], micro_batch):
        with _LayerTap(layer) as tap:
            logits = model(inputs[sl].detach())
            score = logits.gather(1, target[sl].view(-1, 1)).sum()  # recorded too: the tap's mode holds here
        if len(tap.acts) != 1:
            raise BamError(f"method 'gradcam' needs model.gradcam_layer to run once per forward; "
                           f"{type(layer).__name__} ran {len(tap.acts)} times; accepted: a layer called once")
        acts = tap.acts[0]
        (grads,) = torch.autograd.grad(score, acts)
        weights = grads.mean(dim=tuple(range(2, grads.dim())), keepdim=True)
        m = (weights * acts.detach()).sum(1, keepdim=True).clamp_min_(0)
        m = F.interpolate(m, size=tuple(inputs.shape[2:]), mode="bilinear", align_corners=False)
        peak = m.flatten(1).amax(1).view(-1, 1, 1, 1)
        out[sl] = m / peak.clamp_min(torch.finfo(m.dtype).tiny)
    return out


def _two_passes(params: Mapping[str, Any]) -> int:
    """Guided backprop and GradCAM: two forward+backward passes."""
    return 2


@register_method(MethodInfo(
    name="gradcam", title="GradCAM", paper=SELVARAJU, family="cam", requires=("conv_layer",),
    description="ReLU(sum_k mean(dlogit/dA_k) A_k) on the last conv stage, bilinear upsample, / per-image max.",
))
def gradcam(model: torch.nn.Module, inputs: Tensor, target: Tensor, *, micro_batch: int = 0) -> Tensor:
    """GradCAM map broadcast to the input's channels (one forward+backward per image)."""
    maps = gradcam_maps(model, inputs, target, resolve_micro_batch(model, inputs, micro_batch))
    return maps.expand_as(inputs).contiguous()


class GuidedGradCam(GuidedBackprop):
    """Guided GradCAM bound to one model (``MethodInfo.prepare``): the ReLU audit runs once."""

    def __call__(self, model: torch.nn.Module, inputs: Tensor, target: Tensor, *, micro_batch: int = 0) -> Tensor:
        """Guided backprop ⊙ GradCAM."""
        mb = resolve_micro_batch(model, inputs, micro_batch)
        return guided_backprop_grads(model, inputs, target, mb, self.auditor) * gradcam_maps(model, inputs, target, mb)


@register_method(MethodInfo(
    name="guided_gradcam", title="Guided GradCAM", paper=f"{SELVARAJU}; {SPRINGENBERG}", family="guided",
    requires=("conv_layer",), passes=_two_passes, prepare=GuidedGradCam,
    description="Guided backpropagation times the (upsampled, normalised) GradCAM map.",
))
def guided_gradcam(model: torch.nn.Module, inputs: Tensor, target: Tensor, *, micro_batch: int = 0) -> Tensor:
    """Guided backprop ⊙ GradCAM."""
    return GuidedGradCam(model)(model, inputs, target, micro_batch=micro_batch)

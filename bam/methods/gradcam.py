"""GradCAM and guided GradCAM (Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra, "Grad-CAM: Visual
Explanations from Deep Networks via Gradient-based Localization", ICCV 2017).

GradCAM on ``model.gradcam_layer`` (the last convolutional stage, activations A [N, K, h, w]):
channel weights w_k = spatial mean of d logit[target] / d A_k; map = ReLU(Σ_k w_k A_k), bilinearly
upsampled to the input size (captum's ``LayerGradCam`` upsamples nearest and skips the ReLU unless
asked, so both are explicit here), divided by its per-image maximum (an all-zero map stays zero),
and broadcast to every input channel so the attribution has the input's shape.

Guided GradCAM = guided backpropagation ⊙ GradCAM (two forward+backward passes per image).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bam.methods._base import MethodInfo, register_method
from bam.methods._batching import chunks, resolve_micro_batch
from bam.methods.guided import SPRINGENBERG, guided_backprop_grads

SELVARAJU = ("Selvaraju, Cogswell, Das, Vedantam, Parikh, Batra. Grad-CAM: Visual Explanations from Deep Networks "
             "via Gradient-based Localization. ICCV 2017")


def gradcam_maps(model: torch.nn.Module, inputs: Tensor, target: Tensor, micro_batch: int) -> Tensor:
    """Normalised, bilinearly upsampled GradCAM maps, shape [N, 1, H, W], values in [0, 1]."""
    from captum.attr import LayerGradCam

    cam = LayerGradCam(model, model.gradcam_layer)
    out = torch.empty((inputs.shape[0], 1, *inputs.shape[2:]), dtype=inputs.dtype, device=inputs.device)
    for sl in chunks(inputs.shape[0], micro_batch):
        with torch.enable_grad():
            m = cam.attribute(inputs[sl].detach().requires_grad_(True), target=target[sl], relu_attributions=True,
                              attr_dim_summation=True)
        m = F.interpolate(m.detach(), size=tuple(inputs.shape[2:]), mode="bilinear", align_corners=False)
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


@register_method(MethodInfo(
    name="guided_gradcam", title="Guided GradCAM", paper=f"{SELVARAJU}; {SPRINGENBERG}", family="guided",
    requires=("conv_layer",), passes=_two_passes,
    description="Guided backpropagation times the (upsampled, normalised) GradCAM map.",
))
def guided_gradcam(model: torch.nn.Module, inputs: Tensor, target: Tensor, *, micro_batch: int = 0) -> Tensor:
    """Guided backprop ⊙ GradCAM."""
    mb = resolve_micro_batch(model, inputs, micro_batch)
    return guided_backprop_grads(model, inputs, target, mb) * gradcam_maps(model, inputs, target, mb)

"""Vanilla gradient and gradient x input.

* gradient: the signed gradient of the target logit w.r.t. the input pixels (Simonyan, Vedaldi,
  Zisserman, "Deep Inside Convolutional Networks", ICLR workshop 2014). Signed on purpose: captum's
  ``Saliency`` returns |gradient| unless ``abs=False``.
* grad_x_input: gradient ⊙ input (Shrikumar et al., "Not Just a Black Box", 2016), with the input the
  method is applied to: [0, 1] pixels in pixel space (a black pixel contributes 0), the normalised
  network input in model space (``bam.methods._space``; the original multiplied by its 224-px
  mean-subtracted image, which the ``paper`` configuration reproduces there).
"""

from __future__ import annotations

import torch
from torch import Tensor

from bam.methods._base import MethodInfo, NoParams, register_method
from bam.methods._batching import resolve_micro_batch
from bam.methods._grad import target_logit_grad

SIMONYAN = "Simonyan, Vedaldi, Zisserman. Deep Inside Convolutional Networks. ICLR workshop 2014"
SHRIKUMAR = "Shrikumar, Greenside, Shcherbina, Kundaje. Not Just a Black Box. arXiv 1605.01713, 2016"


@register_method(MethodInfo(
    name="gradient", params=NoParams, title="Vanilla gradient", paper=SIMONYAN, family="gradient",
    description="Signed gradient of the target logit with respect to the input pixels.",
))
def gradient(model: torch.nn.Module, inputs: Tensor, target: Tensor, *, micro_batch: int = 0) -> Tensor:
    """d logit[target] / d x for every image (one forward+backward per image)."""
    grads, _ = target_logit_grad(model, inputs, target, resolve_micro_batch(model, inputs, micro_batch))
    return grads


@register_method(MethodInfo(
    name="grad_x_input", params=NoParams, title="Gradient x input", paper=SHRIKUMAR, family="gradient",
    description="Gradient of the target logit times the input (pixels, or the normalised network input).",
))
def grad_x_input(model: torch.nn.Module, inputs: Tensor, target: Tensor, *, micro_batch: int = 0) -> Tensor:
    """(d logit[target] / d x) ⊙ x for every image (one forward+backward per image)."""
    grads, _ = target_logit_grad(model, inputs, target, resolve_micro_batch(model, inputs, micro_batch))
    return grads * inputs

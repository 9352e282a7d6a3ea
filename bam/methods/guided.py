"""Guided backpropagation (Springenberg, Dosovitskiy, Brox, Riedmiller, "Striving for Simplicity:
The All Convolutional Net", ICLR workshop 2015).

At every ReLU the backward pass keeps only positive gradients *and* only where the forward input
was positive: grad_in = max(grad_out, 0) · [x > 0]. Implemented with forward hooks on the model's
``nn.ReLU`` modules that put a gradient hook on each output which clamps the gradient at zero (the
ReLU's own backward then applies [x > 0]); no activation is copied, except for in-place ReLUs (see
:func:`_guide`). This works for reused and in-place ReLU modules; functional ReLUs cannot be
hooked, so such models are refused with a clear error rather than silently returning a plain
gradient.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from bam.methods._base import MethodInfo, register_method
from bam.methods._batching import resolve_micro_batch
from bam.methods._grad import target_logit_grad
from bam.methods._relu_audit import ReluAuditor

SPRINGENBERG = ("Springenberg, Dosovitskiy, Brox, Riedmiller. Striving for Simplicity: The All Convolutional Net. "
                "ICLR workshop 2015")


class _PositiveGrad(torch.autograd.Function):
    """Identity forward (a copy, so later in-place ops are allowed); backward keeps grad > 0 only."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


def _positive(grad: Tensor) -> Tensor:
    """Tensor hook on a ReLU output: only positive gradients flow back into the ReLU."""
    return grad.clamp(min=0)


def _guide(module: torch.nn.Module, args: Any, output: Tensor) -> Tensor | None:
    """Forward hook: clamp the gradient of the ReLU's output at zero on the way back.

    Out-of-place ReLU: a gradient hook on this call's output (no copy, no extra autograd node; a
    later in-place op on it would already break the ReLU's own backward, loudly). In-place ReLU: the
    output is routed through :class:`_PositiveGrad`, whose copy keeps the model's later in-place ops
    (``h += x`` after ``relu_``) away from the tensor the ReLU saved.
    """
    if getattr(module, "inplace", False):
        return _PositiveGrad.apply(output)
    if output.requires_grad:
        output.register_hook(_positive)
    return None


@contextlib.contextmanager
def guided_relus(model: torch.nn.Module) -> Iterator[None]:
    """Context in which every ``nn.ReLU`` of ``model`` back-propagates by the guided rule."""
    handles = [m.register_forward_hook(_guide) for m in model.modules() if isinstance(m, torch.nn.ReLU)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def guided_backprop_grads(model: torch.nn.Module, inputs: Tensor, target: Tensor, micro_batch: int,
                          auditor: ReluAuditor | None = None) -> Tensor:
    """Guided-backprop gradients of the target logit (checks the model has no functional ReLU, with ``auditor``'s
    audit when given: the state prepared for the model)."""
    (auditor or ReluAuditor()).require(model, inputs, "guided_backprop", once=False)
    with guided_relus(model):
        grads, _ = target_logit_grad(model, inputs, target, micro_batch)
    return grads


class GuidedBackprop:
    """Guided backpropagation bound to one model (``MethodInfo.prepare``): the ReLU audit runs once."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.auditor = ReluAuditor()

    def __call__(self, model: torch.nn.Module, inputs: Tensor, target: Tensor, *, micro_batch: int = 0) -> Tensor:
        """Guided backpropagation of the target logit, one forward+backward per image."""
        mb = resolve_micro_batch(model, inputs, micro_batch)
        return guided_backprop_grads(model, inputs, target, mb, self.auditor)


@register_method(MethodInfo(
    name="guided_backprop", title="Guided backpropagation", paper=SPRINGENBERG, family="guided",
    prepare=GuidedBackprop,
    description="Gradient where each ReLU passes back only positive gradients where its input was positive.",
))
def guided_backprop(model: torch.nn.Module, inputs: Tensor, target: Tensor, *, micro_batch: int = 0) -> Tensor:
    """Guided backpropagation of the target logit, one forward+backward per image."""
    return GuidedBackprop(model)(model, inputs, target, micro_batch=micro_batch)

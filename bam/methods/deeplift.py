"""DeepLIFT, Rescale rule (Shrikumar, Greenside, Kundaje, "Learning Important Features Through
Propagating Activation Differences", ICML 2017), through captum's ``DeepLift``.

Black baseline (a constant image of value ``baseline`` in pixel space, 0 = black). captum
computes multipliers with hooks on ``nn.ReLU`` (and other non-linear) modules, storing each
module's reference activation on the module: a module called twice per forward, or a functional
``F.relu``, makes it silently fall back to plain gradients. So before running, the model is audited
(one forward on one row) and refused with a clear error unless every ReLU is an ``nn.ReLU`` module
used exactly once per forward. Fix the model (one module per call site); never skip the check.

Extras: ``deeplift_delta`` = Σ attributions − (f_c(x) − f_c(x')) (summation-to-delta gap).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from bam.errors import BamError
from bam.methods._base import AttributionResult, MethodInfo, register_method
from bam.methods._batching import chunks, resolve_micro_batch
from bam.methods._relu_audit import require_relu_modules

SHRIKUMAR2017 = ("Shrikumar, Greenside, Kundaje. Learning Important Features Through Propagating Activation "
                 "Differences. ICML 2017")


def _passes(params: Mapping[str, Any]) -> int:
    """The image and its baseline go through the network together: two rows per image."""
    return 2


@register_method(MethodInfo(
    name="deeplift", title="DeepLIFT (Rescale)", paper=SHRIKUMAR2017, family="gradient",
    defaults={"baseline": 0.0}, passes=_passes,
    description="captum DeepLift, Rescale rule, black baseline; refuses models with reused or functional ReLUs.",
))
def deeplift(model: torch.nn.Module, inputs: Tensor, target: Tensor, *, baseline: float = 0.0,
             micro_batch: int = 0) -> AttributionResult:
    """DeepLIFT-Rescale attributions of the target logit against a constant baseline image."""
    from captum.attr import DeepLift

    if isinstance(baseline, bool) or not isinstance(baseline, (int, float)):
        raise BamError(f"baseline={baseline!r} is invalid; accepted: a pixel value (0 = black image)")
    require_relu_modules(model, inputs, "deeplift", once=True)
    inplace = [m for m in model.modules() if isinstance(m, torch.nn.ReLU) and m.inplace]
    for m in inplace:  # captum's hooks need the ReLU input intact
        m.inplace = False
    mb = resolve_micro_batch(model, inputs, micro_batch)
    # captum runs input and baseline in one batch: halve the rows per call to keep 2*mb rows.
    mb = max(1, mb // 2)
    explainer = DeepLift(model)
    attr = torch.empty_like(inputs)
    delta = torch.empty(inputs.shape[0], dtype=inputs.dtype, device=inputs.device)
    try:
        for sl in chunks(inputs.shape[0], mb):
            x = inputs[sl].detach().requires_grad_(True)
            with torch.enable_grad(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Setting forward, backward hooks", category=UserWarning)
                a, d = explainer.attribute(x, baselines=torch.full_like(x, float(baseline)), target=target[sl],
                                           return_convergence_delta=True)
            attr[sl] = a.detach()
            delta[sl] = d.detach().to(delta.dtype)
    finally:
        for m in inplace:
            m.inplace = True
    return AttributionResult(attr, extras={"deeplift_delta": delta})

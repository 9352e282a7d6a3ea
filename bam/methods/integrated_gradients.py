"""Integrated Gradients and IG-SmoothGrad.

* integrated_gradients (Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep Networks",
  ICML 2017): IG = (x − x') ⊙ mean_t ∇f_c(x' + α_t (x − x')), α_t = linspace(0, 1, steps), the
  quadrature of the original BAM code (PAIR ``saliency``): both end points, equal weights 1/steps.
  Not captum's default ``riemann_trapezoid``, whose weights sum to 1 − 1/n. Baseline x' = the image
  of constant pixel value ``baseline`` (0 = black) in the space the method runs in
  (:func:`bam.methods._space.baseline_image`: itself in pixel space, its preprocessing in model space).
* ig_smoothgrad: SmoothGrad over IG, original variant (Smilkov et al. 2017): mean over ``samples``
  noisy copies x + n_s of IG(x + n_s)², baseline unchanged; samples × steps passes per image.

Extras: ``ig_delta`` = Σ IG − (f_c(x) − f_c(x')) (completeness gap; integrated_gradients only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bam.config import Validated, checked, field_of
from bam.methods._base import AttributionResult, MethodInfo, register_method
from bam.methods._batching import resolve_micro_batch
from bam.methods._grad import level_grads, smoothgrad_noise
from bam.methods._space import baseline_image
from bam.methods.smoothgrad import SMILKOV, SmoothGradParams

SUNDARARAJAN = "Sundararajan, Taly, Yan. Axiomatic Attribution for Deep Networks. ICML 2017"


@dataclass(frozen=True)
class IGParams(Validated):
    """Integrated Gradients' parameters (defaults: the original BAM configuration)."""

    steps: int = checked(25, ge=2, note="alphas = linspace(0, 1, steps)")
    #: the baseline image's constant pixel value (0 = black)
    baseline: float = 0.0


@dataclass(frozen=True)
class IGSmoothGradParams(Validated):
    """IG-SmoothGrad's parameters: SmoothGrad's and IG's."""

    samples: int = field_of(SmoothGradParams, "samples")
    steps: int = field_of(IGParams, "steps")
    noise_level: float = field_of(SmoothGradParams, "noise_level")
    baseline: float = field_of(IGParams, "baseline")


def alphas(steps: int, like: Tensor) -> Tensor:
    """The original IG quadrature points: linspace(0, 1, steps), each weighted 1/steps."""
    return torch.linspace(0.0, 1.0, steps, dtype=like.dtype, device=like.device)


def _ig_passes(params: Mapping[str, Any]) -> int:
    """One forward+backward per path point."""
    return int(params["steps"])


def _igsg_passes(params: Mapping[str, Any]) -> int:
    """samples x steps forward+backward passes."""
    return int(params["samples"]) * int(params["steps"])


@register_method(MethodInfo(
    name="integrated_gradients", title="Integrated Gradients", paper=SUNDARARAJAN, family="path",
    params=IGParams, passes=_ig_passes, expands_batch=True,
    description="(x - x') * mean of gradients at alphas = linspace(0, 1, steps); black baseline (pixel value).",
))
def integrated_gradients(model: torch.nn.Module, inputs: Tensor, target: Tensor, *, steps: int = IGParams.steps,
                         baseline: float = IGParams.baseline, micro_batch: int = 0) -> AttributionResult:
    """IG with the original equal-weight quadrature, all images and steps batched."""
    p = IGParams(steps, baseline)
    steps, base = p.steps, p.baseline
    a = alphas(steps, inputs)
    x0 = baseline_image(model, inputs[:1], base)
    diff = inputs - x0
    total = torch.zeros_like(inputs)
    f_end = torch.zeros(inputs.shape[0], dtype=inputs.dtype, device=inputs.device)
    f_start = torch.zeros_like(f_end)

    def rows(level: int, sl: slice) -> Tensor:
        return x0 + a[level] * diff[sl]

    mb = resolve_micro_batch(model, inputs, micro_batch)
    for level, sl, g, logit in level_grads(model, inputs.shape[0], steps, rows, target, mb):
        total[sl] += g
        if level == 0:
            f_start[sl] = logit
        if level == steps - 1:
            f_end[sl] = logit
    attr = diff * total / steps
    delta = attr.flatten(1).sum(1) - (f_end - f_start)
    return AttributionResult(attr, extras={"ig_delta": delta})


@register_method(MethodInfo(
    name="ig_smoothgrad", title="IG-SmoothGrad (squared)", paper=f"{SUNDARARAJAN}; {SMILKOV}", family="path",
    params=IGSmoothGradParams, stochastic=True, passes=_igsg_passes, expands_batch=True,
    description="Mean over noisy copies of IG squared; noise sigma = noise_level * (max x - min x) of the input.",
))
def ig_smoothgrad(model: torch.nn.Module, inputs: Tensor, target: Tensor, *,
                  samples: int = IGSmoothGradParams.samples, steps: int = IGSmoothGradParams.steps,
                  noise_level: float = IGSmoothGradParams.noise_level, baseline: float = IGSmoothGradParams.baseline,
                  seed: int = 0, micro_batch: int = 0) -> Tensor:
    """mean_s IG(x + n_s)², all images, samples and steps batched (level = sample * steps + step)."""
    p = IGSmoothGradParams(samples, steps, noise_level, baseline)
    samples, steps, noise_level, base = p.samples, p.steps, p.noise_level, p.baseline
    a = alphas(steps, inputs)
    noise = smoothgrad_noise(inputs, samples, noise_level, seed)
    x0 = baseline_image(model, inputs[:1], base)
    running = torch.zeros_like(inputs)  # gradient sum of the current sample, per image
    total = torch.zeros_like(inputs)

    def rows(level: int, sl: slice) -> Tensor:
        s, t = divmod(level, steps)
        return x0 + a[t] * (inputs[sl] + noise[s, sl] - x0)

    mb = resolve_micro_batch(model, inputs, micro_batch)
    for level, sl, g, _ in level_grads(model, inputs.shape[0], samples * steps, rows, target, mb):
        s, t = divmod(level, steps)
        running[sl] += g
        if t == steps - 1:
            ig = (inputs[sl] + noise[s, sl] - x0) * running[sl] / steps
            total[sl] += ig * ig
            running[sl] = 0.0
    return total / samples

"""SmoothGrad, original variant (Smilkov, Thorat, Kim, Viégas, Wattenberg, "SmoothGrad: removing
noise by adding noise", arXiv 1706.03825, 2017), as run by BAM through the PAIR ``saliency``
library: the mean of the **squared** gradients over ``samples`` noisy copies of the input.

Noise space: sigma = ``noise_level`` * (max x − min x) per image, computed and added to the input the
method is applied to: [0, 1] pixels in pixel space, the network input in model space
(``bam.methods._space``: i.i.d. at the network resolution, as in the original, which added it to its
224-px mean-subtracted input). In pixel space the noise is resized with the image inside the model,
so at the network input it is smaller and spatially correlated.
All noise is drawn up front from a ``torch.Generator`` seeded with ``seed`` (shape
[samples, N, C, H, W], in that order), so the result does not depend on ``micro_batch``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bam.config import Validated, checked
from bam.methods._base import MethodInfo, register_method
from bam.methods._batching import resolve_micro_batch
from bam.methods._grad import level_grads, smoothgrad_noise

SMILKOV = ("Smilkov, Thorat, Kim, Viégas, Wattenberg. SmoothGrad: removing noise by adding noise. "
           "arXiv 1706.03825, 2017")


@dataclass(frozen=True)
class SmoothGradParams(Validated):
    """SmoothGrad's parameters (defaults: Smilkov et al. 2017)."""

    samples: int = checked(25, ge=1)
    noise_level: float = checked(0.15, ge=0, note="fraction of the pixel range")


def _passes(params: Mapping[str, Any]) -> int:
    """One forward+backward per noisy sample."""
    return int(params["samples"])


@register_method(MethodInfo(
    name="smoothgrad", title="SmoothGrad (squared, original)", paper=SMILKOV, family="gradient",
    params=SmoothGradParams, stochastic=True, passes=_passes, expands_batch=True,
    description="Mean of squared gradients over noisy copies; sigma = noise_level * (max x - min x) of the input.",
))
def smoothgrad(model: torch.nn.Module, inputs: Tensor, target: Tensor, *, samples: int = SmoothGradParams.samples,
               noise_level: float = SmoothGradParams.noise_level, seed: int = 0, micro_batch: int = 0) -> Tensor:
    """mean_s (d logit[target] / d x (x + n_s))², n_s ~ N(0, sigma²), all images batched."""
    p = SmoothGradParams(samples, noise_level)
    samples, noise_level = p.samples, p.noise_level
    noise = smoothgrad_noise(inputs, samples, noise_level, seed)
    mb = resolve_micro_batch(model, inputs, micro_batch)
    total = torch.zeros_like(inputs)

    def rows(level: int, sl: slice) -> Tensor:
        return inputs[sl] + noise[level, sl]

    for _level, sl, g, _ in level_grads(model, inputs.shape[0], samples, rows, target, mb):
        total[sl] += g * g
    return total / samples

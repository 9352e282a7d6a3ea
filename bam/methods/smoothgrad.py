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
from typing import Any

import torch
from torch import Tensor

from bam.errors import BamError
from bam.methods._base import MethodInfo, register_method
from bam.methods._batching import resolve_micro_batch
from bam.methods._grad import level_grads, smoothgrad_noise

SMILKOV = ("Smilkov, Thorat, Kim, Viégas, Wattenberg. SmoothGrad: removing noise by adding noise. "
           "arXiv 1706.03825, 2017")


def check_samples(samples: Any, noise_level: Any) -> tuple[int, float]:
    """Validate ``samples`` (int >= 1) and ``noise_level`` (float >= 0)."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise BamError(f"samples={samples!r} is invalid; accepted: an integer >= 1")
    if isinstance(noise_level, bool) or not isinstance(noise_level, (int, float)) or noise_level < 0:
        raise BamError(f"noise_level={noise_level!r} is invalid; accepted: a number >= 0 (fraction of the pixel range)")
    return samples, float(noise_level)


def _validate(params: Mapping[str, Any]) -> None:
    """Check the parameters before any work."""
    check_samples(params["samples"], params["noise_level"])


def _passes(params: Mapping[str, Any]) -> int:
    """One forward+backward per noisy sample."""
    return int(params["samples"])


@register_method(MethodInfo(
    name="smoothgrad", title="SmoothGrad (squared, original)", paper=SMILKOV, family="gradient",
    defaults={"samples": 25, "noise_level": 0.15}, stochastic=True, passes=_passes, expands_batch=True,
    check=_validate,
    description="Mean of squared gradients over noisy copies; sigma = noise_level * (max x - min x) of the input.",
))
def smoothgrad(model: torch.nn.Module, inputs: Tensor, target: Tensor, *, samples: int = 25,
               noise_level: float = 0.15, seed: int = 0, micro_batch: int = 0) -> Tensor:
    """mean_s (d logit[target] / d x (x + n_s))², n_s ~ N(0, sigma²), all images batched."""
    samples, noise_level = check_samples(samples, noise_level)
    noise = smoothgrad_noise(inputs, samples, noise_level, seed)
    mb = resolve_micro_batch(model, inputs, micro_batch)
    total = torch.zeros_like(inputs)

    def rows(level: int, sl: slice) -> Tensor:
        return inputs[sl] + noise[level, sl]

    for _level, sl, g, _ in level_grads(model, inputs.shape[0], samples, rows, target, mb):
        total[sl] += g * g
    return total / samples

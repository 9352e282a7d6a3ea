"""Control "methods" that ignore the model: every BAM report carries them so that scores read as
margins over chance (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018, use the same
edge-detector and random baselines).

* random: a seeded uniform U(0, 1) map per image (drawn up front in batch order from a
  ``torch.Generator`` seeded with ``seed``).
* edge: Sobel gradient magnitude of the grey-level input (mean over channels, replicate padding).
* center: an isotropic Gaussian centred on the image, standard deviation ``sigma`` × image side.

Each map is H×W and repeated on every input channel, so attributions have the input's shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from bam.config import Validated, checked
from bam.methods._base import MethodInfo, NoParams, register_method
from bam.methods._grad import noise_generator

ADEBAYO = "Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim. Sanity Checks for Saliency Maps. NeurIPS 2018"


def _no_pass(params: Mapping[str, Any]) -> int:
    """Controls never call the model."""
    return 0


def _broadcast(maps: Tensor, inputs: Tensor) -> Tensor:
    """[N, 1, H, W] -> the input's shape (same map on every channel)."""
    return maps.expand_as(inputs).contiguous()


@register_method(MethodInfo(
    name="random", params=NoParams, title="Random map (control)", paper=ADEBAYO, family="control", stochastic=True,
    passes=_no_pass, uses_model=False, description="Seeded uniform noise map, same on every channel.",
))
def random_map(model: torch.nn.Module | None, inputs: Tensor, target: Tensor, *, seed: int = 0,
               micro_batch: int = 0) -> Tensor:
    """Uniform U(0, 1) map per image from a generator seeded with ``seed``."""
    gen = noise_generator(inputs.device, seed)
    maps = torch.rand((inputs.shape[0], 1, *inputs.shape[2:]), generator=gen, device=inputs.device,
                      dtype=inputs.dtype)
    return _broadcast(maps, inputs)


def sobel_magnitude(inputs: Tensor) -> Tensor:
    """Sobel gradient magnitude of the channel-mean image, [N, 1, H, W] (replicate padding)."""
    grey = inputs.mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=inputs.dtype,
                      device=inputs.device)
    kernels = torch.stack([kx, kx.t()]).unsqueeze(1)  # [2, 1, 3, 3]: d/dx, d/dy
    g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    return g.pow(2).sum(1, keepdim=True).sqrt()


@register_method(MethodInfo(
    name="edge", params=NoParams, title="Sobel edge map (control)", paper=ADEBAYO, family="control", passes=_no_pass,
    uses_model=False, description="Sobel gradient magnitude of the grey-level input, same on every channel.",
))
def edge(model: torch.nn.Module | None, inputs: Tensor, target: Tensor, *, micro_batch: int = 0) -> Tensor:
    """Sobel edge magnitude of each image."""
    return _broadcast(sobel_magnitude(inputs), inputs)


def centred_gaussian(height: int, width: int, sigma: float, like: Tensor) -> Tensor:
    """exp(-r² / 2s²) centred on the image, s = ``sigma`` × max(height, width); shape [H, W]."""
    s = sigma * max(height, width)
    ys = torch.arange(height, dtype=like.dtype, device=like.device) - (height - 1) / 2
    xs = torch.arange(width, dtype=like.dtype, device=like.device) - (width - 1) / 2
    r2 = ys.view(-1, 1) ** 2 + xs.view(1, -1) ** 2
    return torch.exp(-r2 / (2 * s * s))


@dataclass(frozen=True)
class CenterParams(Validated):
    """The centred Gaussian's width."""

    sigma: float = checked(0.25, gt=0, note="fraction of the image side")


@register_method(MethodInfo(
    name="center", title="Centred Gaussian (control)", paper=ADEBAYO, family="control",
    params=CenterParams, passes=_no_pass, uses_model=False,
    description="Gaussian centred on the image, std = sigma * image side, same for every image and channel.",
))
def center(model: torch.nn.Module | None, inputs: Tensor, target: Tensor, *, sigma: float = CenterParams.sigma,
           micro_batch: int = 0) -> Tensor:
    """The same centred Gaussian for every image."""
    g = centred_gaussian(inputs.shape[2], inputs.shape[3], CenterParams(sigma).sigma, inputs)
    return g.expand_as(inputs).contiguous()

"""From an attribution map to one number per image: g(f, x) (SPEC §4.1, Yang & Kim 2019, §3).

1. M(p) = sum_c max(E(c, p), 0): the positive part, summed over channels (no absolute value).
2. M~ = clip((M - min M) / (P99(M) - min M), 0, 1) per map (P99 = 99th percentile, linear
   interpolation as ``numpy.percentile``).
3. g = mean of M~ over the object mask.

A map whose P99 equals its minimum (a constant map, or one that is flat on more than 99% of its
pixels) has no defined normalisation: its g is NaN, and the evaluation counts it as
``constant_map``; an empty mask gives NaN too (counted as ``empty_mask``). Scores never average a
NaN silently: the metric functions exclude such images and report how many.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bam.errors import BamError

#: The percentile that plays the role of the maximum in the normalisation (SPEC §4.1).
PERCENTILE = 99.0


def positive_map(attributions: Tensor) -> Tensor:
    """Step 1: M = sum over channels of the positive part, [N, C, H, W] -> [N, H, W]."""
    if attributions.dim() != 4:
        raise BamError(f"attributions must be [N, C, H, W], got shape {tuple(attributions.shape)}")
    return attributions.clamp(min=0).sum(dim=1)


def percentile_rows(flat: Tensor, q: float) -> Tensor:
    """The ``q``-th percentile of each row of ``flat`` [N, P] (linear interpolation, like numpy)."""
    n = flat.shape[1]
    srt = flat.sort(dim=1).values
    pos = (q / 100.0) * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    frac = pos - lo
    return srt[:, lo] + (srt[:, hi] - srt[:, lo]) * frac


def normalise_maps(maps: Tensor) -> tuple[Tensor, Tensor]:
    """Step 2: per-map min/P99 normalisation with clipping, [N, H, W] -> ([N, H, W], constant[N]).

    Rows flagged ``constant`` (P99 == min, or non-finite) are returned as NaN.
    """
    flat = maps.flatten(1)
    mn = flat.min(dim=1).values
    p99 = percentile_rows(flat, PERCENTILE)
    den = p99 - mn
    constant = ~(den > 0) | ~torch.isfinite(den)
    safe = torch.where(constant, torch.ones_like(den), den)
    out = ((flat - mn[:, None]) / safe[:, None]).clamp(0.0, 1.0)
    out[constant] = float("nan")
    return out.view_as(maps), constant


def object_attribution(attributions: Tensor, masks: Tensor) -> Tensor:
    """g(f, x) of SPEC §4.1 for a batch: mean normalised positive attribution inside the object mask.

    ``attributions``: [N, C, H, W] (same shape as the model input); ``masks``: [N, 1, H, W] or
    [N, H, W] of {0, 1} at the same resolution. Returns a float Tensor[N] in [0, 1]; NaN for a
    constant map (P99 == min), a non-finite map, or an empty mask. Computed in float64.
    """
    if attributions.dim() != 4:
        raise BamError(f"attributions must be [N, C, H, W], got shape {tuple(attributions.shape)}")
    if masks.dim() == 4:
        if masks.shape[1] != 1:
            raise BamError(f"masks must be [N, 1, H, W] or [N, H, W], got shape {tuple(masks.shape)}")
        masks = masks[:, 0]
    if masks.dim() != 3 or masks.shape[0] != attributions.shape[0] or masks.shape[1:] != attributions.shape[2:]:
        raise BamError(f"masks shape {tuple(masks.shape)} does not match attributions {tuple(attributions.shape)}; "
                       "accepted: [N, 1, H, W] or [N, H, W] with the attributions' N, H, W")
    dtype = torch.float32 if attributions.device.type == "mps" else torch.float64
    attr = attributions.detach().to(dtype)
    m = (masks.detach().to(device=attr.device, dtype=dtype) > 0.5).to(dtype)
    norm, _constant = normalise_maps(positive_map(attr))
    area = m.flatten(1).sum(dim=1)
    total = (norm * m).flatten(1).sum(dim=1)
    g = total / area
    g[area == 0] = float("nan")
    return g

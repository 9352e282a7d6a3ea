"""Boundary attributions: BIG and BG (Wang, Fredrikson & Datta, ICML 2022; SPEC §5 table, §5.5).

Both explain the class c predicted at x through the closest point x' across the nearest decision
boundary (found by :mod:`bam.methods._boundary_search`):

* ``boundary_ig`` (BIG): integrated gradients of the logit of c from the baseline x' to x, with
  the quadrature of the ``integrated_gradients`` method (alphas = linspace(0, 1, steps), gradients
  averaged, times (x - x'));
* ``boundary_gradient`` (BG): the gradient of the logit of c at x'.

Units: the epsilon grid is in L2 norm of RGB pixels in [0, 1] (bam models normalise inside). The
reference grid (36/255, 64/255, 0.3, 0.5, 0.7, 0.9, 1.1) was in ImageNet-normalised input units
((x - mean) / std); an L2 radius r there is r·sigma in pixel units for sigma ~= 0.226 (the mean
of the ImageNet stds 0.229, 0.224, 0.225), so the defaults are the reference grid times 0.226.
In model space (``bam.methods._space``) the search runs on the pixels at the network resolution
(the resized image, box [0, 1]; :func:`~bam.methods._space.search_view`), so the same grid is in
pixel units at that resolution (for an ImageNet-normalised model: the reference grid in its own
units, at the reference's 224 px); x' is mapped to the network input and BIG/BG are taken there.
``boundary_distance`` is then in pixel units at the network resolution.

Search procedures (SPEC §5.5): the defaults (the ``paper`` configuration) are the reference
procedure of Wang et al. -- L2 PGD over the epsilon grid, then Carlini–Wagner on every image, keep
the closer point, no radius skipping -- plus bam's bisection onto the boundary. ``FAST_SEARCH``
(``start: deepfool``) is bam's fast search: a batched multi-class DeepFool start, the grid and CW
only where it failed, and a boundary-projection polish; about 15 gradient evaluations per image
instead of ~800 (docs/boundary.md has the measurements).

Records per image (``AttributionResult.extras``): ``success``, ``boundary_distance`` (||x - x'||_2,
NaN on failure), ``eps_used`` (NaN unless PGD found x'), ``found_by`` (0 none, 1 PGD, 2 CW,
3 DeepFool), ``boundary_estimate`` (first-order DeepFool distance estimate; NaN unless DeepFool or
radius skipping ran), ``gradient_evals`` and ``forward_evals`` of the search. Failed images have
``valid = False``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from bam.errors import BamError
from bam.methods._base import AttributionResult, MethodInfo, register_method
from bam.methods._batching import auto_micro_batch, chunks
from bam.methods._boundary_search import SearchConfig, SearchResult, boundary_search, check_epsilons
from bam.methods._grad import target_logit_grad
from bam.methods._space import search_view

#: The reference epsilon grid (Wang et al. 2022 code), in ImageNet-normalised input units.
REFERENCE_EPSILONS = (36 / 255, 64 / 255, 0.3, 0.5, 0.7, 0.9, 1.1)
#: Normalised-unit L2 radius -> pixel-unit L2 radius (mean ImageNet std).
NORMALIZED_TO_PIXEL = 0.226
#: Default grid in pixel-space L2 units (inputs in [0, 1]).
PIXEL_EPSILONS = tuple(round(e * NORMALIZED_TO_PIXEL, 5) for e in REFERENCE_EPSILONS)

_PAPER = "Wang, Fredrikson & Datta, Robust Models Are More Interpretable Because Attributions Look Normal, ICML 2022"

#: The ``paper`` configuration: the reference procedure of Wang et al. (PGD over the whole grid,
#: then CW on every image, keep the closer point; no radius skipping, no DeepFool, no polish),
#: plus bam's bisection onto the boundary.
SEARCH_DEFAULTS: dict[str, Any] = {
    "epsilons": PIXEL_EPSILONS,
    "attack_steps": 40,
    "step_scale": 2.5,
    "loss": "margin",
    "early_exit": True,
    "skip_factor": 0.0,
    "estimate_classes": 9,
    "cw": "all",
    "cw_steps": 100,
    "cw_search_steps": 5,
    "cw_lr": 0.01,
    "bisection_steps": 10,
    "start": "grid",
    "deepfool_steps": 10,
    "overshoot": 0.02,
    "refine_steps": 0,
}

#: bam's fast search (a named option, e.g. for configs/eval/default.yaml): DeepFool start, the grid
#: search only where DeepFool failed (with radius skipping), CW only where both failed, and boundary
#: projections to polish every point. Override the defaults with these to select it.
FAST_SEARCH: dict[str, Any] = {"start": "deepfool", "estimate_classes": 3, "skip_factor": 0.8, "cw": "failed",
                               "refine_steps": 8}


def search_config(params: Mapping[str, Any]) -> SearchConfig:
    """Build the search configuration from method parameters (validated, one-line errors)."""
    for name in ("step_scale", "skip_factor", "cw_lr", "overshoot"):
        if isinstance(params[name], bool) or not isinstance(params[name], (int, float)):
            raise BamError(f"bad {name} {params[name]!r}; accepted: a number")
    return SearchConfig(
        epsilons=check_epsilons(params["epsilons"]), steps=params["attack_steps"],
        step_scale=float(params["step_scale"]), loss=params["loss"], early_exit=bool(params["early_exit"]),
        skip_factor=float(params["skip_factor"]), estimate_classes=params["estimate_classes"],
        cw=params["cw"], cw_steps=params["cw_steps"], cw_search_steps=params["cw_search_steps"],
        cw_lr=float(params["cw_lr"]), bisection_steps=params["bisection_steps"], start=params["start"],
        deepfool_steps=params["deepfool_steps"], overshoot=float(params["overshoot"]),
        refine_steps=params["refine_steps"])


def _passes(with_ig: bool) -> Callable[[Mapping[str, Any]], int]:
    """passes(params): worst-case search passes plus ``ig_steps`` (BIG) or one gradient (BG) per image."""

    def passes(params: Mapping[str, Any]) -> int:
        """Worst-case forward+backward passes per image for resolved ``params``."""
        attribution = int(params.get("ig_steps", 25)) if with_ig else 1
        return search_config({**SEARCH_DEFAULTS, **params}).worst_case_passes() + attribution

    return passes


def _records(res: SearchResult) -> dict[str, Tensor]:
    """Per-image extras of a search, as float tensors [N]."""
    return {
        "success": res.success.float(),
        "boundary_distance": res.distance.float(),
        "eps_used": res.eps_used.float(),
        "boundary_estimate": res.estimate.float(),
        "found_by": res.found_by.float(),
        "gradient_evals": res.gradient_evals.float(),
        "forward_evals": res.forward_evals.float(),
    }


def _search(model: torch.nn.Module, inputs: Tensor, params: Mapping[str, Any], micro_batch: int,
            seed: int) -> tuple[SearchResult, int]:
    """Run the boundary search for a batch; returns the result and the resolved micro-batch."""
    cfg = search_config(params)
    mb = int(micro_batch) if micro_batch and int(micro_batch) > 0 else auto_micro_batch(model, inputs)
    search_model, search_inputs, back = search_view(model, inputs)  # model space: pixels at network size
    res = boundary_search(search_model, search_inputs, cfg, micro_batch=mb, seed=int(seed))
    return replace(res, boundary=back(res.boundary)), mb


def _check_ig_steps(steps: Any) -> None:
    """IG needs at least the two end points of the path."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise BamError(f"bad ig_steps {steps!r}; accepted: an integer >= 2")


def _validate(params: Mapping[str, Any], with_ig: bool) -> None:
    """Check the search (and BIG's path) parameters before any work."""
    search_config(params)
    if with_ig:
        _check_ig_steps(params["ig_steps"])


def path_integrated_gradients(model: torch.nn.Module, inputs: Tensor, baselines: Tensor, target: Tensor,
                              steps: int, micro_batch: int) -> Tensor:
    """IG from per-image ``baselines`` to ``inputs`` (Sundararajan et al., ICML 2017).

    Quadrature of the ``integrated_gradients`` method: alphas = linspace(0, 1, steps), the
    gradients averaged, times (x - baseline). The [steps x N] path points are built a micro-batch
    at a time (alpha-major order) and each image sums its gradients in alpha order, so the result
    does not depend on ``micro_batch``.
    """
    _check_ig_steps(steps)
    n = inputs.shape[0]
    alphas = torch.linspace(0.0, 1.0, steps, device=inputs.device, dtype=inputs.dtype)
    diff = inputs - baselines
    total = torch.zeros_like(inputs)
    for sl in chunks(steps * n, micro_batch):
        rows = torch.arange(sl.start, sl.stop, device=inputs.device)
        a_idx, i_idx = rows // n, rows % n
        shape = (-1,) + (1,) * (inputs.dim() - 1)
        points = baselines[i_idx] + alphas[a_idx].view(shape) * diff[i_idx]
        grads, _ = target_logit_grad(model, points, target[i_idx])
        # add segment by segment (one alpha each) so every image accumulates in alpha order
        start = sl.start
        while start < sl.stop:
            a = start // n
            stop = min(sl.stop, (a + 1) * n)
            total[start - a * n: stop - a * n] += grads[start - sl.start: stop - sl.start]
            start = stop
    return total / steps * diff


@register_method(MethodInfo(
    name="boundary_ig", title="Boundary integrated gradients (BIG)", paper=_PAPER, family="boundary",
    defaults={**SEARCH_DEFAULTS, "ig_steps": 25}, stochastic=True, passes=_passes(True), expands_batch=True,
    check=lambda p: _validate(p, with_ig=True),
    description="IG from the closest boundary point x' to x; default search = the reference (L2 PGD over the "
                "reference grid x 0.226 in pixel L2 units, then CW on every image, bisection); start=deepfool "
                "for the fast search."))
def boundary_ig(model: torch.nn.Module, inputs: Tensor, target: Tensor, *, micro_batch: int = 0, seed: int = 0,
                **params: Any) -> AttributionResult:
    """BIG: integrated gradients of the target logit from the boundary point x' to x."""
    _check_ig_steps(params["ig_steps"])
    res, mb = _search(model, inputs, params, micro_batch, seed)
    attr = torch.zeros_like(inputs)
    idx = res.success.nonzero().squeeze(1)
    if idx.numel():
        attr[idx] = path_integrated_gradients(model, inputs[idx].detach(), res.boundary[idx], target[idx],
                                              params["ig_steps"], mb)
    return AttributionResult(attr, extras=_records(res), valid=res.success.clone())


@register_method(MethodInfo(
    name="boundary_gradient", title="Boundary gradient (BG)", paper=_PAPER, family="boundary",
    defaults=dict(SEARCH_DEFAULTS), stochastic=True, passes=_passes(False), expands_batch=True,
    check=lambda p: _validate(p, with_ig=False),
    description="Gradient of the target logit at the closest boundary point x' (same search as boundary_ig)."))
def boundary_gradient(model: torch.nn.Module, inputs: Tensor, target: Tensor, *, micro_batch: int = 0,
                      seed: int = 0, **params: Any) -> AttributionResult:
    """BG: the gradient of the target logit at the boundary point x'."""
    res, mb = _search(model, inputs, params, micro_batch, seed)
    attr = torch.zeros_like(inputs)
    idx = res.success.nonzero().squeeze(1)
    if idx.numel():
        attr[idx], _ = target_logit_grad(model, res.boundary[idx], target[idx], micro_batch=mb)
    return AttributionResult(attr, extras=_records(res), valid=res.success.clone())

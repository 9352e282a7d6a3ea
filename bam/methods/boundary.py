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
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
from torch import Tensor

from bam.config import Validated, field_of
from bam.methods._base import AttributionResult, MethodInfo, register_method
from bam.methods._batching import resolve_micro_batch
from bam.methods._boundary_search import SearchConfig, SearchResult, boundary_search
from bam.methods._grad import level_grads, target_logit_grad
from bam.methods._space import search_view
from bam.methods.integrated_gradients import IGParams, alphas

#: The reference epsilon grid (Wang et al. 2022 code), in ImageNet-normalised input units.
REFERENCE_EPSILONS = (36 / 255, 64 / 255, 0.3, 0.5, 0.7, 0.9, 1.1)
#: Normalised-unit L2 radius -> pixel-unit L2 radius (mean ImageNet std).
NORMALIZED_TO_PIXEL = 0.226
#: Default grid in pixel-space L2 units (inputs in [0, 1]).
PIXEL_EPSILONS = tuple(round(e * NORMALIZED_TO_PIXEL, 5) for e in REFERENCE_EPSILONS)

_PAPER = "Wang, Fredrikson & Datta, Robust Models Are More Interpretable Because Attributions Look Normal, ICML 2022"

@dataclass(frozen=True)
class BoundaryGradientParams(Validated):
    """The boundary search's parameters; the defaults are the ``paper`` configuration: the reference
    procedure of Wang et al. (PGD over the whole grid, then CW on every image, keep the closer point;
    no radius skipping, no DeepFool, no polish), plus bam's bisection onto the boundary. What each
    accepts is declared once, in :class:`SearchConfig` (built, hence checked, on construction)."""

    epsilons: tuple[float, ...] = PIXEL_EPSILONS
    attack_steps: int = 40
    step_scale: float = 2.5
    loss: str = "margin"
    early_exit: bool = True
    skip_factor: float = 0.0
    estimate_classes: int = 9
    cw: str = "all"
    cw_steps: int = 100
    cw_search_steps: int = 5
    cw_lr: float = 0.01
    bisection_steps: int = 10
    start: str = "grid"
    deepfool_steps: int = 10
    overshoot: float = 0.02
    refine_steps: int = 0

    def __post_init__(self) -> None:
        """Check the types, then the values (by building the search configuration)."""
        super().__post_init__()
        search_config(self)


@dataclass(frozen=True)
class BoundaryIGParams(BoundaryGradientParams):
    """BIG's parameters: the search's, and the IG quadrature of ``integrated_gradients``."""

    ig_steps: int = field_of(IGParams, "steps")


#: bam's fast search (a named option, e.g. for configs/eval/default.yaml): DeepFool start, the grid
#: search only where DeepFool failed (with radius skipping), CW only where both failed, and boundary
#: projections to polish every point. Override the defaults with these to select it.
FAST_SEARCH: dict[str, Any] = {"start": "deepfool", "estimate_classes": 3, "skip_factor": 0.8, "cw": "failed",
                               "refine_steps": 8}


def search_config(params: BoundaryGradientParams) -> SearchConfig:
    """The search configuration of the methods' parameters (the search's fields, ``cw_c0`` at its default)."""
    return SearchConfig(**{f.name: getattr(params, f.name) for f in fields(BoundaryGradientParams)})


def _passes(with_ig: bool) -> Callable[[Mapping[str, Any]], int]:
    """passes(params): worst-case search passes plus ``ig_steps`` (BIG) or one gradient (BG) per image."""

    cls = BoundaryIGParams if with_ig else BoundaryGradientParams

    def passes(params: Mapping[str, Any]) -> int:
        """Worst-case forward+backward passes per image for resolved ``params``."""
        p = cls(**{f.name: params[f.name] for f in fields(cls) if f.name in params})
        attribution = p.ig_steps if isinstance(p, BoundaryIGParams) else 1
        return search_config(p).worst_case_passes() + attribution

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


def _search(model: torch.nn.Module, inputs: Tensor, params: BoundaryGradientParams, micro_batch: int,
            seed: int) -> tuple[SearchResult, int]:
    """Run the boundary search for a batch; returns the result and the resolved micro-batch."""
    cfg = search_config(params)
    mb = resolve_micro_batch(model, inputs, micro_batch)
    search_model, search_inputs, back = search_view(model, inputs)  # model space: pixels at network size
    res = boundary_search(search_model, search_inputs, cfg, micro_batch=mb, seed=int(seed))
    return replace(res, boundary=back(res.boundary)), mb


def path_integrated_gradients(model: torch.nn.Module, inputs: Tensor, baselines: Tensor, target: Tensor,
                              steps: int, micro_batch: int) -> Tensor:
    """IG from per-image ``baselines`` to ``inputs`` (Sundararajan et al., ICML 2017).

    Quadrature of the ``integrated_gradients`` method (:func:`~bam.methods.integrated_gradients.alphas`):
    alphas = linspace(0, 1, steps), the gradients averaged, times (x - baseline). The path points
    are pushed through the model by :func:`~bam.methods._grad.level_grads` (alpha-major, each image
    summing its gradients in alpha order), so the result does not depend on ``micro_batch``.
    """
    steps = IGParams(steps=steps).steps
    a = alphas(steps, inputs)
    diff = inputs - baselines
    total = torch.zeros_like(inputs)

    def rows(level: int, sl: slice) -> Tensor:
        return baselines[sl] + a[level] * diff[sl]

    for _level, sl, g, _ in level_grads(model, inputs.shape[0], steps, rows, target, micro_batch):
        total[sl] += g
    return total / steps * diff


@register_method(MethodInfo(
    name="boundary_ig", title="Boundary integrated gradients (BIG)", paper=_PAPER, family="boundary",
    params=BoundaryIGParams, stochastic=True, passes=_passes(True), expands_batch=True,
    description="IG from the closest boundary point x' to x; default search = the reference (L2 PGD over the "
                "reference grid x 0.226 in pixel L2 units, then CW on every image, bisection); start=deepfool "
                "for the fast search."))
def boundary_ig(model: torch.nn.Module, inputs: Tensor, target: Tensor, *, micro_batch: int = 0, seed: int = 0,
                **params: Any) -> AttributionResult:
    """BIG: integrated gradients of the target logit from the boundary point x' to x."""
    p = BoundaryIGParams(**params)
    res, mb = _search(model, inputs, p, micro_batch, seed)
    attr = torch.zeros_like(inputs)
    idx = res.success.nonzero().squeeze(1)
    if idx.numel():
        attr[idx] = path_integrated_gradients(model, inputs[idx].detach(), res.boundary[idx], target[idx],
                                              p.ig_steps, mb)
    return AttributionResult(attr, extras=_records(res), valid=res.success.clone())


@register_method(MethodInfo(
    name="boundary_gradient", title="Boundary gradient (BG)", paper=_PAPER, family="boundary",
    params=BoundaryGradientParams, stochastic=True, passes=_passes(False), expands_batch=True,
    description="Gradient of the target logit at the closest boundary point x' (same search as boundary_ig)."))
def boundary_gradient(model: torch.nn.Module, inputs: Tensor, target: Tensor, *, micro_batch: int = 0,
                      seed: int = 0, **params: Any) -> AttributionResult:
    """BG: the gradient of the target logit at the boundary point x'."""
    res, mb = _search(model, inputs, BoundaryGradientParams(**params), micro_batch, seed)
    attr = torch.zeros_like(inputs)
    idx = res.success.nonzero().squeeze(1)
    if idx.numel():
        attr[idx], _ = target_logit_grad(model, res.boundary[idx], target[idx], micro_batch=mb)
    return AttributionResult(attr, extras=_records(res), valid=res.success.clone())

"""Explanations from exact decision-boundary projection in invertible networks (SPEC §5.6).

Zhuang, Wang, Dvornek, Tatikonda & Duncan, "Decision explanation and feature importance for
invertible networks" (ICCV workshops 2019). The model is ``logits = A @ flatten(T(x)) + b`` with
``T`` bijective (:class:`bam.models.protocols.InvertibleClassifier`, e.g. arch ``irevnet``). The
decision boundary between classes c and j is the hyperplane ``(a_c - a_j)·z + (b_c - b_j) = 0`` in
feature space, so the closest boundary point is found in closed form and mapped back to pixels:

* margins ``m_j = (a_c - a_j)·z + (b_c - b_j)``; nearest boundary ``j* = argmin_{j != c} |m_j| /
  ||a_c - a_j||``; ``z_p = z - m_j* (a_c - a_j*) / ||a_c - a_j*||^2``; ``x_p = T^{-1}(z_p)``.
* ``invertible_projection``: ``E = x - x_p``.
* ``invertible_taylor``: ``E = ∇g(x_p) ⊙ (x - x_p)`` with ``g = f_c - f_j*``: the first-order
  Taylor expansion of g around the boundary point (where ``g(x_p) = 0``), so ``sum(E) ≈ g(x)``.

Any number of classes (the original code handled two). With c the predicted class every ``m_j >= 0``
and ``z_p`` ties c and j* at the top of the logits (no third class overtakes: for any k,
``f_c - f_k`` at ``z_p`` is at least ``||a_c - a_k|| (d_k - d_j*) >= 0``). When the target is not
the predicted class, the projection still goes to the nearest hyperplane on which the target ties
another class (``|m_j|``): that point ties c and j* but need not be on the classifier's decision
boundary (a third class may score higher there).

Records per image (``AttributionResult.extras``): ``boundary_class`` (j*), ``projection_distance``
(``||x - x_p||_2`` in pixels: the distance to the pre-image of the *feature-space* projection, which
is not the nearest input-space boundary point that BIG/BG record as ``boundary_distance``; the two
are not comparable), ``feature_distance`` (``|m_j*| / ||a_c - a_j*||`` in feature space), ``margin``
(``m_j*``), ``logit_gap_after`` (``|f_c(x_p) - f_j*(x_p)|`` through the real forward, ~0 when the
inverse is accurate), ``reconstruction_error`` (``||x - T^{-1}(T(x))|| / ||x||``, NaN when not
checked); ``invertible_taylor`` adds ``linearization_error`` (``|g(x) - g(x_p) - sum(E)| / |g(x)|``).
An image is invalid when no boundary exists (all other classes share the head row of c), its
reconstruction error exceeds ``max_reconstruction_error``, or the projected point does not tie c
and j*: ``logit_gap_after > tie_tol * max_k |f_k(x)|`` (default 1e-4 of the logit scale; float32
rounding of a trained model's projection is ~1e-6 of it, see docs/invertible.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from bam.config import Validated, checked
from bam.errors import BamError
from bam.methods._base import AttributionResult, MethodInfo, register_method
from bam.methods._batching import chunks, resolve_micro_batch

ZHUANG = ("Zhuang, Wang, Dvornek, Tatikonda & Duncan, Decision explanation and feature importance for invertible "
          "networks, ICCV Workshops 2019")

@dataclass(frozen=True)
class InvertibleParams(Validated):
    """The parameters of both methods: whether to check T^{-1}(T(x)) = x, and the tolerances."""

    check_reconstruction: bool = True
    max_reconstruction_error: float = checked(1e-3, gt=0)
    tie_tol: float = checked(1e-4, gt=0, note="largest logit gap at x_p, relative to max |logit| at x")


def _passes(extra: int) -> Any:
    """passes(params): features + inverse (+ a second inverse for the check) + check forward + ``extra``.

    A fixed-point inverse counts as one pass here although it runs g several times per block."""

    def passes(params: Mapping[str, Any]) -> int:
        return 3 + int(bool(params.get("check_reconstruction", True))) + extra

    return passes


def _check(model: torch.nn.Module | None, inputs: Tensor, target: Tensor) -> None:
    """BamError unless ``model`` is invertible and ``target`` holds valid class indices."""
    from bam.models.protocols import is_invertible

    if not is_invertible(model):
        raise BamError(f"invertible methods need an invertible model (features/inverse/affine_head, e.g. arch "
                       f"irevnet or iresnet); {type(model).__name__} is not invertible")
    if target.shape != (inputs.shape[0],):
        raise BamError(f"target of shape {tuple(target.shape)} is invalid; accepted: one class per image "
                       f"({inputs.shape[0]})")


def _project(model: Any, x: Tensor, target: Tensor, check_reconstruction: bool) -> dict[str, Tensor]:
    """Closed-form projection of ``T(x)`` onto the nearest c/j* hyperplane, mapped back by ``T^{-1}``."""
    with torch.no_grad():
        z = model.features(x)
        zf = z.flatten(1)
        a, b = model.affine_head()
        a, b = a.to(zf), b.to(zf)
        if a.dim() != 2 or a.shape[1] != zf.shape[1] or b.shape != (a.shape[0],):
            raise BamError(f"affine_head() shapes {tuple(a.shape)}, {tuple(b.shape)} do not match features "
                           f"of dimension {zf.shape[1]}; accepted: A [K, {zf.shape[1]}], b [K]")
        k = a.shape[0]
        bad = target[(target < 0) | (target >= k)]
        if bad.numel():
            raise BamError(f"target class {int(bad[0])} is out of range; accepted: 0..{k - 1}")
        logits = zf @ a.T + b  # [N, K]
        pair_norm = (a.unsqueeze(1) - a.unsqueeze(0)).norm(dim=-1)  # [K, K]: ||a_c - a_j||
        margin = logits.gather(1, target.view(-1, 1)) - logits  # [N, K]: m_j
        dn = pair_norm[target]  # [N, K]
        dist = margin.abs() / dn.clamp_min(torch.finfo(dn.dtype).tiny)
        dist = torch.where(dn > 0, dist, torch.full_like(dist, float("inf")))
        dist.scatter_(1, target.view(-1, 1), float("inf"))
        j = dist.argmin(1)
        has_boundary = torch.isfinite(dist.gather(1, j.view(-1, 1)).squeeze(1))
        mj = margin.gather(1, j.view(-1, 1))  # [N, 1]
        d = a[target] - a[j]  # [N, D]
        step = mj / (d * d).sum(1, keepdim=True).clamp_min(torch.finfo(d.dtype).tiny)
        step = torch.where(has_boundary.view(-1, 1), step, torch.zeros_like(step))
        zp = (zf - step * d).view_as(z)
        if check_reconstruction:
            both = model.inverse(torch.cat([zp, z]))
            xp, xr = both[: x.shape[0]], both[x.shape[0]:]
            rec = (x - xr).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-12)
        else:
            xp = model.inverse(zp)
            rec = torch.full((x.shape[0],), float("nan"), dtype=x.dtype, device=x.device)
    return {"x_p": xp.detach(), "j": j, "margin": mj.squeeze(1), "has_boundary": has_boundary,
            "feature_distance": dist.gather(1, j.view(-1, 1)).squeeze(1), "reconstruction_error": rec,
            "logit_scale": logits.abs().amax(1)}


def _run(model: Any, inputs: Tensor, target: Tensor, cfg: InvertibleParams, taylor: bool,
         micro_batch: int) -> AttributionResult:
    """Shared body of both methods, micro-batched over images (rows are independent)."""
    _check(model, inputs, target)
    n = inputs.shape[0]
    attr = torch.empty_like(inputs)
    names = ["boundary_class", "projection_distance", "feature_distance", "margin", "logit_gap_after",
             "reconstruction_error"] + (["linearization_error"] if taylor else [])
    extras = {k: torch.empty(n, dtype=torch.float32, device=inputs.device) for k in names}
    valid = torch.empty(n, dtype=torch.bool, device=inputs.device)
    for sl in chunks(n, resolve_micro_batch(model, inputs, micro_batch)):
        x, c = inputs[sl].detach(), target[sl]
        p = _project(model, x, c, cfg.check_reconstruction)
        xp, j = p["x_p"], p["j"]
        with torch.set_grad_enabled(taylor):
            xq = xp.clone().requires_grad_(taylor)
            out = model(xq)
            g = out.gather(1, c.view(-1, 1)).squeeze(1) - out.gather(1, j.view(-1, 1)).squeeze(1)
            if taylor:
                (grad,) = torch.autograd.grad(g.sum(), xq)
        diff = x - xp
        if taylor:
            e = grad * diff
            g0 = p["margin"]
            lin = (g0 - g.detach() - e.flatten(1).sum(1)).abs() / g0.abs().clamp_min(1e-12)
            extras["linearization_error"][sl] = lin.float()
        else:
            e = diff
        attr[sl] = e.detach()
        extras["boundary_class"][sl] = j.float()
        extras["projection_distance"][sl] = diff.flatten(1).norm(dim=1).float()
        extras["feature_distance"][sl] = p["feature_distance"].float()
        extras["margin"][sl] = p["margin"].float()
        extras["logit_gap_after"][sl] = g.detach().abs().float()
        extras["reconstruction_error"][sl] = p["reconstruction_error"].float()
        ok = p["has_boundary"] & (g.detach().abs() <= float(cfg.tie_tol) * p["logit_scale"])
        if cfg.check_reconstruction:
            ok &= p["reconstruction_error"] <= float(cfg.max_reconstruction_error)
        valid[sl] = ok
    return AttributionResult(attr, extras=extras, valid=valid)


@register_method(MethodInfo(
    name="invertible_projection", title="Invertible projection", paper=ZHUANG, family="invertible",
    params=InvertibleParams, requires=("invertible",), passes=_passes(0),
    description="x - x_p, with x_p the exact projection onto the nearest decision boundary, through T^{-1}.",
))
def invertible_projection(model: torch.nn.Module, inputs: Tensor, target: Tensor, *,
                          check_reconstruction: bool = InvertibleParams.check_reconstruction,
                          max_reconstruction_error: float = InvertibleParams.max_reconstruction_error,
                          tie_tol: float = InvertibleParams.tie_tol, micro_batch: int = 0) -> AttributionResult:
    """``E = x - T^{-1}(z_p)``, ``z_p`` the closest point of ``T(x)`` on the nearest c/j* boundary
    (Zhuang et al. 2019, any number of classes)."""
    cfg = InvertibleParams(check_reconstruction, max_reconstruction_error, tie_tol)
    return _run(model, inputs, target, cfg, False, micro_batch)


@register_method(MethodInfo(
    name="invertible_taylor", title="Invertible Taylor", paper=ZHUANG, family="invertible",
    params=InvertibleParams, requires=("invertible",), passes=_passes(1),
    description="grad(f_c - f_j*)(x_p) * (x - x_p): the local linear model at the boundary point x_p.",
))
def invertible_taylor(model: torch.nn.Module, inputs: Tensor, target: Tensor, *,
                      check_reconstruction: bool = InvertibleParams.check_reconstruction,
                      max_reconstruction_error: float = InvertibleParams.max_reconstruction_error,
                      tie_tol: float = InvertibleParams.tie_tol, micro_batch: int = 0) -> AttributionResult:
    """``E = ∇(f_c - f_j*)(x_p) ⊙ (x - x_p)`` (Zhuang et al. 2019, feature importance)."""
    cfg = InvertibleParams(check_reconstruction, max_reconstruction_error, tie_tol)
    return _run(model, inputs, target, cfg, True, micro_batch)

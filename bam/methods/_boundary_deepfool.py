"""DeepFool start and boundary-projection polish of the boundary search (SPEC §5.5).

* :func:`linear_step`: one multi-class DeepFool step (Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool:
  a simple and accurate method to fool deep neural networks", CVPR 2016). The margins
  f_j = z_j - z_c to the ``k`` strongest rivals j of the class c are linearised at the current
  point; the closest linearised boundary l = argmin_j |f_j| / ||grad f_j|| gives the step
  (|f_l| + 1e-4) / ||grad f_l||^2 · grad f_l and the first-order distance estimate |f_l| / ||grad f_l||
  (the estimate that radius skipping uses).
* :func:`deepfool`: iterate that step, accumulating the perturbation r and evaluating
  x + (1 + overshoot)·r (clipped to [0, 1]), until the class changes or ``deepfool_steps`` run out.
  On a linear model the first step lands on the exact boundary (times 1 + overshoot).
* :func:`project_polish` (a bam extension): at a point b just across the boundary, linearise the
  margin m = max_{j != c} z_j - z_c and project x onto that tangent plane; turn the direction
  b - x part of the way towards that projection (the boundary curves, so the full projection
  overshoots), find the boundary along the new direction by bisection, and keep the point only
  where it is closer to x. At the minimum-distance point x' - x is normal to the boundary, where
  the projection changes nothing.

Costs are counted per row: ``k`` forward+backward passes per DeepFool step (one forward shared by
``k`` backward passes), one per projection step, and forward-only passes for the class checks
and bisections. All rows are independent, so results do not depend on ``micro_batch``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bam.methods._boundary_attacks import Net, attack_loss, batch_shape, bisect
from bam.methods._boundary_config import REFINE_BISECTION, REFINE_CANDIDATES, REFINE_LOW, SearchConfig


@dataclass(frozen=True)
class Attempt:
    """Outcome of an attack on a batch of rows: points, success and per-row pass counts."""

    point: Tensor
    found: Tensor
    gradient_evals: Tensor
    forward_evals: Tensor


def rival_classes(logits: Tensor, label: Tensor, k: int) -> Tensor:
    """The ``k`` highest-scoring classes other than ``label`` per row, [N, k] (DeepFool's candidates)."""
    return logits.scatter(1, label.view(-1, 1), float("-inf")).topk(k, dim=1).indices


def linear_step(net: Net, x: Tensor, label: Tensor, rivals: Tensor) -> tuple[Tensor, Tensor]:
    """(DeepFool step, first-order distance) per row: the closest linearised boundary over ``rivals``.

    One forward and ``rivals.shape[1]`` backward passes per row. A zero gradient gives a zero step
    and distance +inf (0 where the margin is already 0).
    """
    shape = batch_shape(x)
    step = torch.zeros_like(x)
    dist = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
    k = rivals.shape[1]
    for sl in net.slices(x.shape[0]):
        with torch.enable_grad():
            xs = x[sl].detach().requires_grad_(True)
            z = net.model(xs)
            zc = z.gather(1, label[sl].view(-1, 1)).squeeze(1)
            for r in range(k):
                f = z.gather(1, rivals[sl, r:r + 1]).squeeze(1) - zc
                (g,) = torch.autograd.grad(f.sum(), xs, retain_graph=r < k - 1)
                fa = f.detach().abs()
                g2 = g.flatten(1).pow(2).sum(1)
                gn = g2.sqrt()
                d = torch.where(gn > 0, fa / gn.clamp_min(1e-30),
                                torch.where(fa > 0, torch.full_like(fa, float("inf")), torch.zeros_like(fa)))
                better = d < dist[sl]
                cand = ((fa + 1e-4) / g2.clamp_min(1e-30)).view(shape) * g
                step[sl] = torch.where(better.view(shape), cand, step[sl])
                dist[sl] = torch.where(better, d, dist[sl])
    return step, dist


def deepfool(net: Net, x: Tensor, label: Tensor, rivals: Tensor, cfg: SearchConfig) -> tuple[Attempt, Tensor]:
    """Batched multi-class DeepFool from x; returns the attempt and the first step's distance estimate.

    ``found`` rows have a misclassified ``point`` (x + (1 + overshoot)·r, clipped to [0, 1]); rows that
    are still classified as ``label`` after ``deepfool_steps`` steps have ``found = False``.
    """
    n = x.shape[0]
    k = rivals.shape[1]
    dev = x.device
    grad_evals = torch.zeros(n, dtype=torch.long, device=dev)
    fwd_evals = torch.zeros_like(grad_evals)
    estimate = torch.full((n,), float("nan"), device=dev, dtype=x.dtype)
    found = torch.zeros(n, dtype=torch.bool, device=dev)
    total = torch.zeros_like(x)
    point = x.clone()
    for it in range(cfg.deepfool_steps):
        idx = (~found).nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        step, dist = linear_step(net, point[idx], label[idx], rivals[idx])
        if it == 0:
            estimate[idx] = dist
        total[idx] += step
        point[idx] = (x[idx] + (1 + cfg.overshoot) * total[idx]).clamp(0.0, 1.0)
        grad_evals[idx] += k
        fwd_evals[idx] += 1
        found[idx] = net.crossed(point[idx], label[idx])
    point = torch.where(found.view(batch_shape(x)), point, x)
    return Attempt(point, found, grad_evals, fwd_evals), estimate


def _margin_grad(net: Net, x: Tensor, label: Tensor) -> tuple[Tensor, Tensor]:
    """(margin max_{j != c} z_j - z_c, its gradient) per row: one forward+backward each."""
    margin = torch.empty(x.shape[0], device=x.device, dtype=x.dtype)
    grad = torch.empty_like(x)
    for sl in net.slices(x.shape[0]):
        with torch.enable_grad():
            xs = x[sl].detach().requires_grad_(True)
            m = attack_loss(net.model(xs), label[sl], "margin")
            (grad[sl],) = torch.autograd.grad(m.sum(), xs)
        margin[sl] = m.detach()
    return margin, grad


def project_polish(net: Net, x: Tensor, point: Tensor, label: Tensor, cfg: SearchConfig) -> Attempt:
    """``refine_steps`` boundary projections from the misclassified ``point``s; never moves a point farther.

    At the current point b (v = b - x), the margin's gradient g gives the projection p of x onto the
    tangent plane of the boundary at b. The new direction is v + lam·(p - v) (lam starts at 1/2 and is
    halved where the boundary along it is farther than ||v||); the point at distance ||v|| along it
    is checked, and where it is misclassified a bisection on [REFINE_LOW, 1] of that segment lands on
    the boundary. Per step and row: one forward+backward, up to ``REFINE_CANDIDATES`` forward checks
    and ``REFINE_BISECTION`` bisection forwards. A row stops once a step gains less than 0.1 %.
    """
    shape = batch_shape(x)
    n = x.shape[0]
    grad_evals = torch.zeros(n, dtype=torch.long, device=x.device)
    fwd_evals = torch.zeros_like(grad_evals)
    best = point.clone()
    best_d = (best - x).flatten(1).norm(dim=1)
    lam = torch.full((n,), 0.5, device=x.device, dtype=x.dtype)
    active = torch.ones(n, dtype=torch.bool, device=x.device)
    for _ in range(cfg.refine_steps):
        rows = active.nonzero().squeeze(1)
        if rows.numel() == 0:
            break
        xr, lab = x[rows], label[rows]
        margin, g = _margin_grad(net, best[rows], lab)
        grad_evals[rows] += 1
        v = best[rows] - xr
        vn = best_d[rows]
        g2 = g.flatten(1).pow(2).sum(1)
        t = ((g * v).flatten(1).sum(1) - margin) / g2.clamp_min(1e-30)
        proj = t.view(shape) * g  # x + proj: x projected onto the tangent plane of the boundary at b
        pending = (g2 > 0) & (t > 0)
        end = torch.empty_like(v)
        accepted = torch.zeros_like(pending)
        for c in range(REFINE_CANDIDATES):
            idx = (pending & ~accepted).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            step = lam[rows[idx]] * 0.5 ** c
            d = v[idx] + step.view(shape) * (proj[idx] - v[idx])
            e = (xr[idx] + (vn[idx] / d.flatten(1).norm(dim=1).clamp_min(1e-30)).view(shape) * d).clamp(0.0, 1.0)
            fwd_evals[rows[idx]] += 1
            crossed = net.crossed(e, lab[idx])
            end[idx[crossed]] = e[crossed]
            accepted[idx[crossed]] = True
            lam[rows[idx[crossed]]] = step[crossed]
        idx = accepted.nonzero().squeeze(1)
        gained = torch.zeros_like(accepted)
        if idx.numel():
            cand = bisect(net, xr[idx], end[idx], lab[idx], REFINE_BISECTION, REFINE_LOW)
            fwd_evals[rows[idx]] += REFINE_BISECTION
            d = (cand - xr[idx]).flatten(1).norm(dim=1)
            closer = d < vn[idx]
            take = rows[idx[closer]]
            best[take] = cand[closer]
            best_d[take] = d[closer]
            gained[idx] = d < vn[idx] * (1 - 1e-3)
        active[rows[~gained]] = False
    return Attempt(best, torch.ones(n, dtype=torch.bool, device=x.device), grad_evals, fwd_evals)

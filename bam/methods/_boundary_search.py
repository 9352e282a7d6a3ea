"""Batched search for the closest decision-boundary point (SPEC §5.5), used by BIG and BG.

Wang, Fredrikson & Datta, "Robust Models Are More Interpretable Because Attributions Look
Normal", ICML 2022, explain x by the closest point x' across the nearest decision boundary.
Their reference searches with untargeted L2 PGD over an ascending epsilon grid, then
Carlini–Wagner L2, keeping the closest misclassified point. This module does the same search,
batched on the model's device, without the reference's flaws:

* proper L2 PGD steps (direction g/||g||_2, step 2.5·eps/steps, projection onto the eps-ball
  and onto [0, 1]); a random start inside the ball; margin or cross-entropy loss on logits;
* per-image early exit: an image leaves the batch after the first epsilon at which PGD found a
  misclassified point (the fixed-grid reference behaviour is ``early_exit=False``);
* optional level skipping: a first-order (DeepFool, Moosavi-Dezfooli et al., CVPR 2016) estimate
  d^ = min_j (z_c - z_j) / ||grad(z_c - z_j)|| over the strongest competitors j lets an image skip
  the epsilons below ``skip_factor``·d^ (never the last one). On a linear model d^ is the exact
  distance, so the skipped radii cannot succeed and the result is unchanged; only the cost drops;
* an explicit success mask; images that fail every attack stay failed (never replaced by a
  non-adversarial point);
* optional batched Carlini–Wagner L2 (Carlini & Wagner, S&P 2017: Adam on tanh-space w,
  binary search over the constant c) for failed images, or for all images to shrink distance;
* optional bisection on the segment x -> x_adv so that x' lands on the boundary;
* the label check is ``prediction != class predicted at x``.

All radii are L2 norms in the model's input space, i.e. RGB pixels in [0, 1].
Every per-image computation is independent of the others (eval-mode models, per-row losses
summed, elementwise optimisers), and all random numbers are drawn up front per epsilon for the
whole batch in a fixed order, so results do not depend on ``micro_batch``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bam.errors import BamError
from bam.methods._batching import chunks

LOSSES = ("margin", "ce")
CW_MODES = ("off", "failed", "all")


@dataclass(frozen=True)
class SearchConfig:
    """Parameters of :func:`boundary_search` (radii in pixel-space L2 units)."""

    epsilons: tuple[float, ...]
    steps: int = 40
    step_scale: float = 2.5
    loss: str = "margin"
    early_exit: bool = True
    skip_factor: float = 0.8
    estimate_classes: int = 9
    cw: str = "failed"
    cw_steps: int = 100
    cw_search_steps: int = 5
    cw_lr: float = 0.01
    cw_c0: float = 1.0
    bisection_steps: int = 10

    def __post_init__(self) -> None:
        """Normalise the grid to floats and validate every field (one-line BamError)."""
        eps = tuple(float(e) for e in self.epsilons)
        object.__setattr__(self, "epsilons", eps)
        if not eps or any(not e > 0 for e in eps) or any(b <= a for a, b in itertools.pairwise(eps)):
            raise BamError(f"bad epsilons {list(eps)}; accepted: a non-empty, strictly ascending list of positive "
                           "L2 radii in pixel units")
        for name, low in (("steps", 1), ("cw_steps", 1), ("cw_search_steps", 1), ("bisection_steps", 0),
                          ("estimate_classes", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise BamError(f"bad {name} {value!r}; accepted: an integer >= {low}")
        for name in ("step_scale", "cw_lr", "cw_c0"):
            if not float(getattr(self, name)) > 0:
                raise BamError(f"bad {name} {getattr(self, name)!r}; accepted: a positive number")
        if not float(self.skip_factor) >= 0:
            raise BamError(f"bad skip_factor {self.skip_factor!r}; accepted: a number >= 0 (0 disables skipping)")
        if self.loss not in LOSSES:
            raise BamError(f"bad loss {self.loss!r}; accepted: {', '.join(LOSSES)}")
        if self.cw not in CW_MODES:
            raise BamError(f"bad cw {self.cw!r}; accepted: {', '.join(CW_MODES)}")

    def worst_case_passes(self) -> int:
        """Worst-case model passes per image (forward+backward or forward only, each counted as one)."""
        pgd = len(self.epsilons) * (self.steps + 1)
        cw = 0 if self.cw == "off" else self.cw_search_steps * self.cw_steps
        return 1 + self._skips() * self.estimate_classes + pgd + cw + self.bisection_steps

    def _skips(self) -> bool:
        """Whether the first-order estimate is computed (skipping on and more than one epsilon)."""
        return self.skip_factor > 0 and len(self.epsilons) > 1


@dataclass(frozen=True)
class SearchResult:
    """Per-image outcome of :func:`boundary_search` (all tensors have leading size N).

    ``boundary``: x' (equal to x where the search failed); ``success``: bool; ``distance``:
    ||x - x'||_2 (NaN on failure); ``eps_used``: the PGD radius that succeeded (NaN if PGD failed);
    ``found_by``: 0 failed, 1 PGD, 2 Carlini–Wagner; ``gradient_evals``: forward+backward passes;
    ``forward_evals``: forward-only passes; ``predicted``: the class predicted at x.
    """

    boundary: Tensor
    success: Tensor
    distance: Tensor
    eps_used: Tensor
    estimate: Tensor
    first_level: Tensor
    found_by: Tensor
    gradient_evals: Tensor
    forward_evals: Tensor
    predicted: Tensor


def _logits(model: torch.nn.Module, x: Tensor, micro_batch: int) -> Tensor:
    """Logits for a batch without gradients, micro-batched."""
    outs = []
    with torch.no_grad():
        for sl in chunks(x.shape[0], micro_batch):
            outs.append(model(x[sl]))
    return torch.cat(outs) if outs else x.new_zeros((0, 0))


def _attack_loss(logits: Tensor, label: Tensor, kind: str) -> Tensor:
    """Per-row loss to *ascend*: max_{j != c} z_j - z_c (margin) or cross-entropy on logits."""
    if kind == "ce":
        return F.cross_entropy(logits, label, reduction="none")
    true = logits.gather(1, label.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, label.view(-1, 1), float("-inf")).amax(1)
    return other - true


def _row_norm(t: Tensor) -> Tensor:
    """L2 norm of every row of a batch, shaped [N, 1, 1, 1] for broadcasting."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def _first_order_distance(model: torch.nn.Module, x: Tensor, label: Tensor, competitors: int,
                          micro_batch: int) -> tuple[Tensor, int]:
    """DeepFool's linearised distance min_j (z_c - z_j) / ||grad(z_c - z_j)|| over the top competitors.

    One forward and ``k = min(competitors, K - 1)`` backward passes per row; returns (estimate, k).
    A zero gradient gives +inf (no finite linear estimate), a zero margin gives 0.
    """
    est = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
    k = 0
    for sl in chunks(x.shape[0], micro_batch):
        with torch.enable_grad():
            xs = x[sl].detach().requires_grad_(True)
            z = model(xs)
            k = min(competitors, z.shape[1] - 1)
            lab = label[sl].view(-1, 1)
            rivals = z.detach().scatter(1, lab, float("-inf")).topk(k, dim=1).indices
            zc = z.gather(1, lab).squeeze(1)
            for r in range(k):
                margin = zc - z.gather(1, rivals[:, r:r + 1]).squeeze(1)
                (g,) = torch.autograd.grad(margin.sum(), xs, retain_graph=r < k - 1)
                gnorm = g.flatten(1).norm(dim=1)
                m = margin.detach()
                d = torch.where(gnorm > 0, m / gnorm.clamp_min(1e-30),
                                torch.where(m > 0, torch.full_like(m, float("inf")), torch.zeros_like(m)))
                est[sl] = torch.minimum(est[sl], d)
    return est, k


def _pgd_level(model: torch.nn.Module, x: Tensor, label: Tensor, start: Tensor, eps: float,
               cfg: SearchConfig, micro_batch: int) -> tuple[Tensor, Tensor]:
    """L2 PGD at radius ``eps`` from ``start`` for every row (Madry et al., ICLR 2018).

    Returns (candidate, found): the final iterate if it is misclassified, else the last
    misclassified iterate; ``found`` marks rows where some iterate was misclassified.
    Costs ``steps`` forward+backward passes and one extra forward per row.
    """
    alpha = cfg.step_scale * eps / cfg.steps
    adv = start.clone()
    cand = x.clone()
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for t in range(cfg.steps + 1):
        need_grad = t < cfg.steps
        grad = torch.zeros_like(adv) if need_grad else None
        is_adv = torch.zeros_like(found)
        for sl in chunks(adv.shape[0], micro_batch):
            with torch.enable_grad() if need_grad else torch.no_grad():
                xa = adv[sl].detach().requires_grad_(need_grad)
                logits = model(xa)
                if need_grad:
                    (g,) = torch.autograd.grad(_attack_loss(logits, label[sl], cfg.loss).sum(), xa)
                    grad[sl] = g  # type: ignore[index]
            is_adv[sl] = logits.detach().argmax(1) != label[sl]
        cand = torch.where(is_adv.view(-1, 1, 1, 1), adv, cand)
        found |= is_adv
        if not need_grad:
            break
        adv = adv + alpha * grad / _row_norm(grad).clamp_min(1e-12)  # type: ignore[operator]
        delta = adv - x
        delta = delta * (eps / _row_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        adv = (x + delta).clamp(0.0, 1.0)
    return cand, found


def _carlini_wagner(model: torch.nn.Module, x: Tensor, label: Tensor, cfg: SearchConfig,
                    micro_batch: int) -> tuple[Tensor, Tensor]:
    """Batched Carlini–Wagner L2 (S&P 2017), kappa = 0; returns (closest adversarial, found).

    x' = (tanh(w) + 1) / 2; per image minimise ||x' - x||^2 + c·max(z_c - max_{j!=c} z_j, 0) with
    Adam, binary search over c (x10 until the first success, then bisect). Costs
    ``cw_search_steps * cw_steps`` forward+backward passes per row.
    """
    n = x.shape[0]
    shape = (-1,) + (1,) * (x.dim() - 1)
    w0 = torch.atanh((2 * x - 1).clamp(-1 + 1e-6, 1 - 1e-6))
    c = torch.full((n,), float(cfg.cw_c0), device=x.device, dtype=x.dtype)
    lo = torch.zeros_like(c)
    hi = torch.full_like(c, float("inf"))
    best = x.clone()
    best_d = torch.full_like(c, float("inf"))
    for _ in range(cfg.cw_search_steps):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=cfg.cw_lr)
        succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
        for _step in range(cfg.cw_steps):
            opt.zero_grad(set_to_none=False)
            w.grad = torch.zeros_like(w)
            for sl in chunks(n, micro_batch):
                with torch.enable_grad():
                    ws = w[sl].detach().requires_grad_(True)
                    xa = (torch.tanh(ws) + 1) / 2
                    logits = model(xa)
                    dist = (xa - x[sl]).flatten(1).pow(2).sum(1)
                    margin = -_attack_loss(logits, label[sl], "margin")
                    loss = (dist + c[sl] * margin.clamp_min(0)).sum()
                    (g,) = torch.autograd.grad(loss, ws)
                w.grad[sl] = g
                with torch.no_grad():
                    adv = logits.argmax(1) != label[sl]
                    d = dist.sqrt()
                    better = adv & (d < best_d[sl])
                    best[sl] = torch.where(better.view(shape), xa.detach(), best[sl])
                    best_d[sl] = torch.where(better, d, best_d[sl])
                    succeeded[sl] |= adv
            opt.step()
        hi = torch.where(succeeded, torch.minimum(hi, c), hi)
        lo = torch.where(succeeded, lo, torch.maximum(lo, c))
        c = torch.where(torch.isfinite(hi), (lo + hi) / 2, c * 10)
    return best, torch.isfinite(best_d)


def _bisect(model: torch.nn.Module, x: Tensor, adv: Tensor, label: Tensor, steps: int,
            micro_batch: int) -> Tensor:
    """Bisection on the segment x -> adv; returns the misclassified end of the final bracket."""
    shape = (-1,) + (1,) * (x.dim() - 1)
    lo = torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
    hi = torch.ones_like(lo)
    direction = adv - x
    for _ in range(steps):
        mid = (lo + hi) / 2
        pred = _logits(model, x + mid.view(shape) * direction, micro_batch).argmax(1)
        crossed = pred != label
        hi = torch.where(crossed, mid, hi)
        lo = torch.where(crossed, lo, mid)
    return x + hi.view(shape) * direction


def _random_start(gen: torch.Generator, x: Tensor, eps: float) -> Tensor:
    """Uniform random direction, radius eps·U(0,1), clipped to [0, 1]; drawn for the whole batch."""
    noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    radius = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype) * eps
    shape = (-1,) + (1,) * (x.dim() - 1)
    noise = noise / _row_norm(noise).clamp_min(1e-12) * radius.view(shape)
    return (x + noise).clamp(0.0, 1.0)


def boundary_search(model: torch.nn.Module, inputs: Tensor, cfg: SearchConfig, *, micro_batch: int,
                    seed: int = 0, progress: bool = False) -> SearchResult:
    """Find per image the closest misclassified point x' near the nearest decision boundary.

    ``inputs``: [N, C, H, W] pixels in [0, 1] on the model's device; the model is in eval mode.
    Returns a :class:`SearchResult`; rows with ``success == False`` must not be attributed.
    """
    from tqdm.auto import tqdm

    x = inputs.detach()
    n = x.shape[0]
    dev = x.device
    shape = (-1,) + (1,) * (x.dim() - 1)
    if n == 0:
        empty = x.new_zeros(0)
        return SearchResult(boundary=x.clone(), success=empty.bool(), distance=empty, eps_used=empty, estimate=empty,
                            first_level=empty.long(), found_by=empty.long(), gradient_evals=empty.long(),
                            forward_evals=empty.long(), predicted=empty.long())
    logits = _logits(model, x, micro_batch)
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise BamError(f"boundary search needs a classifier with >= 2 logits per image; the model returned shape "
                       f"{tuple(logits.shape)}")
    label = logits.argmax(1)
    grad_evals = torch.zeros(n, dtype=torch.long, device=dev)
    fwd_evals = torch.ones(n, dtype=torch.long, device=dev)
    best = x.clone()
    best_d = torch.full((n,), float("inf"), device=dev, dtype=x.dtype)
    eps_used = torch.full((n,), float("nan"), device=dev, dtype=x.dtype)
    found_by = torch.zeros(n, dtype=torch.long, device=dev)
    active = torch.ones(n, dtype=torch.bool, device=dev)
    estimate = torch.full((n,), float("nan"), device=dev, dtype=x.dtype)
    first_level = torch.zeros(n, dtype=torch.long, device=dev)
    if cfg._skips():
        estimate, k = _first_order_distance(model, x, label, cfg.estimate_classes, micro_batch)
        grad_evals += k
        grid = torch.tensor(cfg.epsilons, device=dev, dtype=x.dtype)
        below = grid.view(1, -1) < cfg.skip_factor * estimate.view(-1, 1)
        first_level = below.sum(1).clamp(max=len(cfg.epsilons) - 1)
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    for level, eps in enumerate(tqdm(cfg.epsilons, desc="boundary search", disable=not progress, leave=False)):
        start = _random_start(gen, x, eps)  # whole batch, fixed order: independent of exits
        idx = (active & (first_level <= level)).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        cand, found = _pgd_level(model, x[idx], label[idx], start[idx], eps, cfg, micro_batch)
        grad_evals[idx] += cfg.steps
        fwd_evals[idx] += 1
        d = (cand - x[idx]).flatten(1).norm(dim=1)
        better = found & (d < best_d[idx])
        take = idx[better]
        best[take] = cand[better]
        best_d[take] = d[better]
        eps_used[take] = eps
        found_by[take] = 1
        if cfg.early_exit:
            active[idx[found]] = False
    if cfg.cw != "off":
        cw_rows = (found_by == 0) if cfg.cw == "failed" else torch.ones_like(active)
        idx = cw_rows.nonzero().squeeze(1)
        if idx.numel():
            cand, found = _carlini_wagner(model, x[idx], label[idx], cfg, micro_batch)
            grad_evals[idx] += cfg.cw_search_steps * cfg.cw_steps
            d = (cand - x[idx]).flatten(1).norm(dim=1)
            if cfg.bisection_steps and cfg.cw == "all":
                # compare on the boundary: bisect both candidates before keeping the closer one
                pgd_rows = found_by[idx] == 1
                if pgd_rows.any():
                    sub = idx[pgd_rows]
                    best[sub] = _bisect(model, x[sub], best[sub], label[sub], cfg.bisection_steps, micro_batch)
                    best_d[sub] = (best[sub] - x[sub]).flatten(1).norm(dim=1)
                    fwd_evals[sub] += cfg.bisection_steps
                if found.any():
                    fi = found.nonzero().squeeze(1)
                    cand[fi] = _bisect(model, x[idx[fi]], cand[fi], label[idx[fi]], cfg.bisection_steps, micro_batch)
                    fwd_evals[idx[fi]] += cfg.bisection_steps
                    d = (cand - x[idx]).flatten(1).norm(dim=1)
            better = found & (d < best_d[idx])
            take = idx[better]
            best[take] = cand[better]
            best_d[take] = d[better]
            eps_used[take] = float("nan")
            found_by[take] = 2
    success = found_by > 0
    if cfg.bisection_steps and cfg.cw != "all":
        idx = success.nonzero().squeeze(1)
        if idx.numel():
            best[idx] = _bisect(model, x[idx], best[idx], label[idx], cfg.bisection_steps, micro_batch)
            fwd_evals[idx] += cfg.bisection_steps
    best = torch.where(success.view(shape), best, x)
    distance = (best - x).flatten(1).norm(dim=1)
    distance = torch.where(success, distance, torch.full_like(distance, float("nan")))
    return SearchResult(boundary=best, success=success, distance=distance, eps_used=eps_used, estimate=estimate,
                        first_level=first_level, found_by=found_by,
                        gradient_evals=grad_evals, forward_evals=fwd_evals, predicted=label)


def check_epsilons(value: Sequence[float] | float) -> tuple[float, ...]:
    """Normalise an epsilon grid given as a number or a list (from YAML or flags) to a tuple."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (float(value),)
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise BamError(f"bad epsilons {value!r}; accepted: a number or a list of positive numbers") from None

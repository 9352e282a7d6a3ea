"""Batched search for the closest decision-boundary point (SPEC §5.5), used by BIG and BG.

Wang, Fredrikson & Datta, "Robust Models Are More Interpretable Because Attributions Look
Normal", ICML 2022, explain x by the closest point x' across the nearest decision boundary.
Their reference searches with untargeted L2 PGD over an ascending epsilon grid, then
Carlini–Wagner L2 on every image, keeping the closer misclassified point. This module runs that
search batched on the model's device, without the reference's flaws, and a faster one:

* stage 1, DeepFool (``start="deepfool"``; :mod:`bam.methods._boundary_deepfool`): a batched
  multi-class DeepFool (Moosavi-Dezfooli et al., CVPR 2016) crosses the boundary in a few
  linearised steps; its point is bisected onto the boundary;
* stage 2, PGD over the grid (for every image with ``start="grid"``, else only where DeepFool
  failed): proper L2 PGD steps (direction g/||g||_2, step 2.5·eps/steps, projection onto the
  eps-ball and onto [0, 1]), a random start inside the ball, margin or cross-entropy loss on
  logits; per-image early exit at the first successful epsilon (``early_exit=False``: every
  epsilon, closest point); optional radius skipping below ``skip_factor`` times the first-order
  (DeepFool) distance estimate -- a heuristic, exact only for linear models;
* stage 3, Carlini–Wagner L2 (``cw``): where everything before failed, or on every image (keep
  the closer point, the reference behaviour);
* every stage's point is bisected on the segment x -> x_adv (``bisection_steps``, a bam
  extension) before points are compared; then ``refine_steps`` boundary projections (a bam
  extension) polish the winner where that shortens the distance.

An explicit success mask: images that fail every attack stay failed (never replaced by a
non-adversarial point). The label check is ``prediction != class predicted at x``. All radii are
L2 norms in the model's input space (RGB pixels in [0, 1]). Every per-image computation is
independent of the others and all random numbers are drawn up front per epsilon for the whole
batch in a fixed order, so results do not depend on ``micro_batch``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bam._progress import progress_bar
from bam.errors import BamError
from bam.methods._boundary_attacks import Net, batch_shape, bisect, carlini_wagner, pgd_level, random_start
from bam.methods._boundary_config import CW_MODES, LOSSES, STARTS, SearchConfig
from bam.methods._boundary_deepfool import deepfool, linear_step, project_polish, rival_classes

__all__ = ["CW_MODES", "FOUND_BY", "LOSSES", "STARTS", "SearchConfig", "SearchResult", "boundary_search"]

#: Codes of the ``found_by`` record.
FOUND_BY = {"failed": 0, "pgd": 1, "cw": 2, "deepfool": 3}


@dataclass(frozen=True)
class SearchResult:
    """Per-image outcome of :func:`boundary_search` (all tensors have leading size N).

    ``boundary``: x' (equal to x where the search failed); ``success``: bool; ``distance``:
    ||x - x'||_2 (NaN on failure); ``eps_used``: the PGD radius that succeeded (NaN unless PGD
    found x'); ``estimate``: the first-order distance estimate (NaN when not computed);
    ``found_by``: :data:`FOUND_BY` code; ``gradient_evals``: forward+backward passes;
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


@dataclass(frozen=True)
class _Run:
    """What every stage of one search shares: the model, the config, the seed, the progress flag."""

    net: Net
    cfg: SearchConfig
    seed: int
    progress: bool


class _State:
    """Best point per image so far, with its origin and the pass counters (mutable, internal)."""

    def __init__(self, run: _Run, x: Tensor, label: Tensor) -> None:
        n, dev = x.shape[0], x.device
        self.run, self.x, self.label = run, x, label
        self.best = x.clone()
        self.best_d = torch.full((n,), float("inf"), device=dev, dtype=x.dtype)
        self.eps_used = torch.full((n,), float("nan"), device=dev, dtype=x.dtype)
        self.found_by = torch.zeros(n, dtype=torch.long, device=dev)
        self.grad_evals = torch.zeros(n, dtype=torch.long, device=dev)
        self.fwd_evals = torch.ones(n, dtype=torch.long, device=dev)  # the prediction at x

    def offer(self, idx: Tensor, cand: Tensor, found: Tensor, code: int) -> Tensor:
        """Bisect the found rows of ``cand`` (rows ``idx`` of the batch) onto the boundary, then keep
        them where they are closer than the best so far; returns the mask of rows taken."""
        steps = self.run.cfg.bisection_steps
        if steps and bool(found.any()):
            fi = found.nonzero().squeeze(1)
            cand = cand.clone()
            cand[fi] = bisect(self.run.net, self.x[idx[fi]], cand[fi], self.label[idx[fi]], steps)
            self.fwd_evals[idx[fi]] += steps
        d = (cand - self.x[idx]).flatten(1).norm(dim=1)
        better = found & (d < self.best_d[idx])
        take = idx[better]
        self.best[take] = cand[better]
        self.best_d[take] = d[better]
        self.found_by[take] = code
        return better


def _pgd_grid(state: _State, rows: Tensor, first_level: Tensor) -> None:
    """Stage 2: PGD over the epsilon grid on ``rows`` (bool [N]) with early exit; offer the winners."""
    x, label, cfg, net = state.x, state.label, state.run.cfg, state.run.net
    pgd_best = x.clone()
    pgd_d = torch.full((x.shape[0],), float("inf"), device=x.device, dtype=x.dtype)
    pgd_eps = torch.full_like(pgd_d, float("nan"))
    active = rows.clone()
    gen = torch.Generator(device=x.device).manual_seed(int(state.run.seed))
    for level, eps in enumerate(progress_bar(cfg.epsilons, desc="boundary search", enabled=state.run.progress,
                                             leave=False)):
        start = random_start(gen, x, eps)  # whole batch, fixed order: independent of exits
        idx = (active & (first_level <= level)).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        cand, found = pgd_level(net, x[idx], label[idx], start[idx], eps, cfg)
        state.grad_evals[idx] += cfg.attack_steps
        state.fwd_evals[idx] += 1
        d = (cand - x[idx]).flatten(1).norm(dim=1)
        better = found & (d < pgd_d[idx])
        take = idx[better]
        pgd_best[take] = cand[better]
        pgd_d[take] = d[better]
        pgd_eps[take] = eps
        if cfg.early_exit:
            active[idx[found]] = False
    idx = rows.nonzero().squeeze(1)
    taken = state.offer(idx, pgd_best[idx], torch.isfinite(pgd_d[idx]), FOUND_BY["pgd"])
    state.eps_used[idx[taken]] = pgd_eps[idx[taken]]


def boundary_search(model: torch.nn.Module, inputs: Tensor, cfg: SearchConfig, *, micro_batch: int,
                    seed: int = 0, progress: bool = False) -> SearchResult:
    """Find per image the closest misclassified point x' near the nearest decision boundary.

    ``inputs``: [N, C, H, W] pixels in [0, 1] on the model's device; the model is in eval mode.
    Returns a :class:`SearchResult`; rows with ``success == False`` must not be attributed.
    """
    x = inputs.detach()
    n = x.shape[0]
    dev = x.device
    if n == 0:
        empty = x.new_zeros(0)
        return SearchResult(boundary=x.clone(), success=empty.bool(), distance=empty, eps_used=empty, estimate=empty,
                            first_level=empty.long(), found_by=empty.long(), gradient_evals=empty.long(),
                            forward_evals=empty.long(), predicted=empty.long())
    net = Net(model, micro_batch)
    logits = net.logits(x)
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise BamError(f"boundary search needs a classifier with >= 2 logits per image; the model returned shape "
                       f"{tuple(logits.shape)}")
    label = logits.argmax(1)
    rivals = rival_classes(logits, label, min(cfg.estimate_classes, logits.shape[1] - 1))
    state = _State(_Run(net, cfg, int(seed), progress), x, label)
    estimate = torch.full((n,), float("nan"), device=dev, dtype=x.dtype)
    grid_rows = torch.ones(n, dtype=torch.bool, device=dev)
    if cfg.start == "deepfool":
        df, estimate = deepfool(net, x, label, rivals, cfg)
        state.grad_evals += df.gradient_evals
        state.fwd_evals += df.forward_evals
        state.offer(torch.arange(n, device=dev), df.point, df.found, FOUND_BY["deepfool"])
        grid_rows = ~df.found
    elif cfg.skips():
        _, estimate = linear_step(net, x, label, rivals)
        state.grad_evals += rivals.shape[1]
    first_level = torch.zeros(n, dtype=torch.long, device=dev)
    if cfg.skips():
        grid = torch.tensor(cfg.epsilons, device=dev, dtype=x.dtype)
        below = grid.view(1, -1) < cfg.skip_factor * estimate.nan_to_num(0.0).view(-1, 1)
        first_level = below.sum(1).clamp(max=len(cfg.epsilons) - 1)
    if bool(grid_rows.any()):
        _pgd_grid(state, grid_rows, first_level)
    if cfg.cw != "off":
        idx = ((state.found_by == 0) if cfg.cw == "failed" else torch.ones_like(grid_rows)).nonzero().squeeze(1)
        if idx.numel():
            cand, found = carlini_wagner(net, x[idx], label[idx], cfg)
            state.grad_evals[idx] += cfg.cw_search_steps * cfg.cw_steps
            taken = state.offer(idx, cand, found, FOUND_BY["cw"])
            state.eps_used[idx[taken]] = float("nan")
    success = state.found_by > 0
    if cfg.refine_steps and bool(success.any()):
        idx = success.nonzero().squeeze(1)
        polished = project_polish(net, x[idx], state.best[idx], label[idx], cfg)
        state.grad_evals[idx] += polished.gradient_evals
        state.fwd_evals[idx] += polished.forward_evals
        state.best[idx] = polished.point
    best = torch.where(success.view(batch_shape(x)), state.best, x)
    distance = (best - x).flatten(1).norm(dim=1)
    distance = torch.where(success, distance, torch.full_like(distance, float("nan")))
    return SearchResult(boundary=best, success=success, distance=distance, eps_used=state.eps_used,
                        estimate=estimate, first_level=first_level, found_by=state.found_by,
                        gradient_evals=state.grad_evals, forward_evals=state.fwd_evals, predicted=label)

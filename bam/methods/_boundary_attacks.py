"""Batched attack primitives of the boundary search (SPEC §5.5): PGD, Carlini–Wagner, bisection.

Every function works on a batch of rows that are independent of each other (eval-mode models,
per-row losses summed, elementwise optimisers), micro-batched by ``micro_batch`` rows per pass.
Radii are L2 norms in the model's input space (RGB pixels in [0, 1]).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bam.methods._batching import chunks
from bam.methods._boundary_config import SearchConfig


@dataclass(frozen=True)
class Net:
    """A model (eval mode) and the rows per forward/backward (micro-batch) to run it with."""

    model: torch.nn.Module
    micro_batch: int

    def slices(self, n: int) -> Iterator[slice]:
        """Micro-batches covering ``range(n)``."""
        return chunks(n, self.micro_batch)

    def logits(self, x: Tensor) -> Tensor:
        """Logits for a batch without gradients, micro-batched."""
        outs = []
        with torch.no_grad():
            for sl in self.slices(x.shape[0]):
                outs.append(self.model(x[sl]))
        return torch.cat(outs) if outs else x.new_zeros((0, 0))

    def crossed(self, x: Tensor, label: Tensor) -> Tensor:
        """Whether each row of ``x`` is classified other than ``label`` (one forward per row)."""
        return self.logits(x).argmax(1) != label


def batch_shape(x: Tensor) -> tuple[int, ...]:
    """Shape ``(-1, 1, ..., 1)`` that broadcasts a per-row value over the rows of ``x``."""
    return (-1,) + (1,) * (x.dim() - 1)


def attack_loss(logits: Tensor, label: Tensor, kind: str) -> Tensor:
    """Per-row loss to *ascend*: max_{j != c} z_j - z_c (margin) or cross-entropy on logits."""
    if kind == "ce":
        return F.cross_entropy(logits, label, reduction="none")
    true = logits.gather(1, label.view(-1, 1)).squeeze(1)
    other = logits.scatter(1, label.view(-1, 1), float("-inf")).amax(1)
    return other - true


def row_norm(t: Tensor) -> Tensor:
    """L2 norm of every row of a batch, shaped [N, 1, 1, 1] for broadcasting."""
    return t.flatten(1).norm(dim=1).view(batch_shape(t))


def pgd_level(net: Net, x: Tensor, label: Tensor, start: Tensor, eps: float,
              cfg: SearchConfig) -> tuple[Tensor, Tensor]:
    """L2 PGD at radius ``eps`` from ``start`` for every row (Madry et al., ICLR 2018).

    Step ``cfg.step_scale * eps / cfg.attack_steps`` along g/||g||_2, then projection onto the eps-ball and [0, 1].
    Returns (candidate, found): the final iterate if it is misclassified, else the last
    misclassified iterate; ``found`` marks rows where some iterate was misclassified.
    Costs ``steps`` forward+backward passes and one extra forward per row.
    """
    steps = cfg.attack_steps
    alpha = cfg.step_scale * eps / steps
    adv = start.clone()
    cand = x.clone()
    found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for t in range(steps + 1):
        need_grad = t < steps
        grad = torch.zeros_like(adv)
        is_adv = torch.zeros_like(found)
        for sl in net.slices(adv.shape[0]):
            with torch.enable_grad() if need_grad else torch.no_grad():
                xa = adv[sl].detach().requires_grad_(need_grad)
                logits = net.model(xa)
                if need_grad:
                    (g,) = torch.autograd.grad(attack_loss(logits, label[sl], cfg.loss).sum(), xa)
                    grad[sl] = g
            is_adv[sl] = logits.detach().argmax(1) != label[sl]
        cand = torch.where(is_adv.view(batch_shape(x)), adv, cand)
        found |= is_adv
        if not need_grad:
            break
        adv = adv + alpha * grad / row_norm(grad).clamp_min(1e-12)
        delta = adv - x
        delta = delta * (eps / row_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        adv = (x + delta).clamp(0.0, 1.0)
    return cand, found


def carlini_wagner(net: Net, x: Tensor, label: Tensor, cfg: SearchConfig) -> tuple[Tensor, Tensor]:
    """Batched Carlini–Wagner L2 (S&P 2017), kappa = 0; returns (closest adversarial, found).

    x' = (tanh(w) + 1) / 2; per image minimise ||x' - x||^2 + c·max(z_c - max_{j!=c} z_j, 0) with
    Adam (``cw_lr``, initial c = ``cw_c0``), binary search over c (x10 until the first success, then
    bisect). Costs ``cw_search_steps * cw_steps`` forward+backward passes per row.
    """
    n = x.shape[0]
    shape = batch_shape(x)
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
            for sl in net.slices(n):
                with torch.enable_grad():
                    ws = w[sl].detach().requires_grad_(True)
                    xa = (torch.tanh(ws) + 1) / 2
                    logits = net.model(xa)
                    dist = (xa - x[sl]).flatten(1).pow(2).sum(1)
                    margin = -attack_loss(logits, label[sl], "margin")
                    total = (dist + c[sl] * margin.clamp_min(0)).sum()
                    (g,) = torch.autograd.grad(total, ws)
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


def bisect(net: Net, x: Tensor, adv: Tensor, label: Tensor, steps: int, low: float = 0.0) -> Tensor:
    """Bisection on the fraction [low, 1] of the segment x -> adv (adv misclassified); returns the
    misclassified end of the final bracket (``steps`` forwards per row)."""
    shape = batch_shape(x)
    lo = torch.full((x.shape[0],), float(low), device=x.device, dtype=x.dtype)
    hi = torch.ones_like(lo)
    direction = adv - x
    for _ in range(steps):
        mid = (lo + hi) / 2
        crossed = net.crossed(x + mid.view(shape) * direction, label)
        hi = torch.where(crossed, mid, hi)
        lo = torch.where(crossed, lo, mid)
    return x + hi.view(shape) * direction


def random_start(gen: torch.Generator, x: Tensor, eps: float) -> Tensor:
    """Uniform random direction, radius eps·U(0,1), clipped to [0, 1]; drawn for the whole batch."""
    noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
    radius = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype) * eps
    noise = noise / row_norm(noise).clamp_min(1e-12) * radius.view(batch_shape(x))
    return (x + noise).clamp(0.0, 1.0)

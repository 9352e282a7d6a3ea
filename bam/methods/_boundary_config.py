"""Parameters of the boundary search (SPEC §5.5): one frozen, validated dataclass.

Two procedures share these fields:

* the reference (Wang, Fredrikson & Datta, ICML 2022): ``start="grid"``, ``skip_factor=0``,
  ``cw="all"``, ``refine_steps=0`` -- L2 PGD over the whole epsilon grid (early exit at the first
  successful radius), then Carlini–Wagner on every image, keep the closer point;
* the DeepFool start (bam's fast search): ``start="deepfool"`` -- a batched multi-class DeepFool
  (Moosavi-Dezfooli, Fawzi & Frossard, CVPR 2016) gets across the boundary in a few linearised
  steps; the grid search and CW run only where it failed (``cw="failed"``), and ``refine_steps``
  boundary projections polish every point.

Bisection onto the boundary (``bisection_steps``) and the projection polish are bam extensions;
radius skipping (``skip_factor``) is a heuristic, exact only for linear models.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from bam.config import Validated, checked, one_of
from bam.errors import BamError

LOSSES = ("margin", "ce")
CW_MODES = ("off", "failed", "all")
STARTS = ("grid", "deepfool")
#: Forward-only direction checks per projection step (the row's step, then half of it).
REFINE_CANDIDATES = 2
#: A projection step bisects the fraction [REFINE_LOW, 1] of its segment in REFINE_BISECTION forwards
#: (precision 0.25 / 2**8 ~ 0.1 % of the distance; the boundary is rarely below 0.75 of it, and a
#: point found there is still misclassified and closer).
REFINE_LOW = 0.75
REFINE_BISECTION = 8


@dataclass(frozen=True)
class SearchConfig(Validated):
    """Parameters of :func:`bam.methods._boundary_search.boundary_search` (radii in pixel L2 units);
    what each field accepts is declared here, once (the boundary methods' parameters are checked by
    building this)."""

    epsilons: tuple[float, ...]
    attack_steps: int = checked(40, ge=1)
    step_scale: float = checked(2.5, gt=0)
    loss: str = one_of("margin", LOSSES)
    early_exit: bool = True
    skip_factor: float = checked(0.8, ge=0, note="0 disables skipping")
    estimate_classes: int = checked(9, ge=1)
    cw: str = one_of("failed", CW_MODES)
    cw_steps: int = checked(100, ge=1)
    cw_search_steps: int = checked(5, ge=1)
    cw_lr: float = checked(0.01, gt=0)
    cw_c0: float = checked(1.0, gt=0)
    bisection_steps: int = checked(10, ge=0)
    start: str = one_of("grid", STARTS)
    deepfool_steps: int = checked(10, ge=1)
    overshoot: float = checked(0.02, ge=0, lt=1)
    refine_steps: int = checked(0, ge=0)

    def __post_init__(self) -> None:
        """Check every field, then the grid (non-empty, strictly ascending, positive)."""
        super().__post_init__()
        eps = self.epsilons
        if not eps or any(not e > 0 for e in eps) or any(b <= a for a, b in itertools.pairwise(eps)):
            raise BamError(f"epsilons={list(eps)} is invalid; accepted: a non-empty, strictly ascending list of "
                           "positive L2 radii in pixel units")

    def worst_case_passes(self) -> int:
        """Worst-case model passes per image (forward+backward or forward only, each counted as one)."""
        k = self.estimate_classes
        deepfool = self.deepfool_steps * (k + 1) if self.start == "deepfool" else 0
        estimate = k if self.skips() and self.start == "grid" else 0
        pgd = len(self.epsilons) * (self.attack_steps + 1)
        cw = 0 if self.cw == "off" else self.cw_search_steps * self.cw_steps
        bisections = self.bisection_steps * (1 + (self.cw == "all"))  # the winner, and CW's rival point
        refine = self.refine_steps * (1 + REFINE_CANDIDATES + REFINE_BISECTION)
        return 1 + deepfool + estimate + pgd + cw + bisections + refine

    def skips(self) -> bool:
        """Whether radius skipping is on (it needs the first-order estimate and more than one epsilon)."""
        return self.skip_factor > 0 and len(self.epsilons) > 1

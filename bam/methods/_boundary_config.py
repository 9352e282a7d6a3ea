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
from collections.abc import Sequence
from dataclasses import dataclass

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
class SearchConfig:
    """Parameters of :func:`bam.methods._boundary_search.boundary_search` (radii in pixel L2 units)."""

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
    start: str = "grid"
    deepfool_steps: int = 10
    overshoot: float = 0.02
    refine_steps: int = 0

    def __post_init__(self) -> None:
        """Normalise the grid to floats and validate every field (one-line BamError)."""
        eps = tuple(float(e) for e in self.epsilons)
        object.__setattr__(self, "epsilons", eps)
        if not eps or any(not e > 0 for e in eps) or any(b <= a for a, b in itertools.pairwise(eps)):
            raise BamError(f"bad epsilons {list(eps)}; accepted: a non-empty, strictly ascending list of positive "
                           "L2 radii in pixel units")
        for name, low in (("steps", 1), ("cw_steps", 1), ("cw_search_steps", 1), ("bisection_steps", 0),
                          ("estimate_classes", 1), ("deepfool_steps", 1), ("refine_steps", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise BamError(f"bad {name} {value!r}; accepted: an integer >= {low}")
        for name in ("step_scale", "cw_lr", "cw_c0"):
            if not float(getattr(self, name)) > 0:
                raise BamError(f"bad {name} {getattr(self, name)!r}; accepted: a positive number")
        if not float(self.skip_factor) >= 0:
            raise BamError(f"bad skip_factor {self.skip_factor!r}; accepted: a number >= 0 (0 disables skipping)")
        if not 0 <= float(self.overshoot) < 1:
            raise BamError(f"bad overshoot {self.overshoot!r}; accepted: a number in [0, 1)")
        for name, value, accepted in (("loss", self.loss, LOSSES), ("cw", self.cw, CW_MODES),
                                      ("start", self.start, STARTS)):
            if value not in accepted:
                raise BamError(f"bad {name} {value!r}; accepted: {', '.join(accepted)}")

    def worst_case_passes(self) -> int:
        """Worst-case model passes per image (forward+backward or forward only, each counted as one)."""
        k = self.estimate_classes
        deepfool = self.deepfool_steps * (k + 1) if self.start == "deepfool" else 0
        estimate = k if self.skips() and self.start == "grid" else 0
        pgd = len(self.epsilons) * (self.steps + 1)
        cw = 0 if self.cw == "off" else self.cw_search_steps * self.cw_steps
        bisections = self.bisection_steps * (1 + (self.cw == "all"))  # the winner, and CW's rival point
        refine = self.refine_steps * (1 + REFINE_CANDIDATES + REFINE_BISECTION)
        return 1 + deepfool + estimate + pgd + cw + bisections + refine

    def skips(self) -> bool:
        """Whether radius skipping is on (it needs the first-order estimate and more than one epsilon)."""
        return self.skip_factor > 0 and len(self.epsilons) > 1


def check_epsilons(value: Sequence[float] | float) -> tuple[float, ...]:
    """Normalise an epsilon grid given as a number or a list (from YAML or flags) to a tuple."""
    if isinstance(value, bool):
        raise BamError(f"bad epsilons {value!r}; accepted: a number or a list of positive numbers")
    if isinstance(value, (int, float)):
        return (float(value),)
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise BamError(f"bad epsilons {value!r}; accepted: a number or a list of positive numbers") from None

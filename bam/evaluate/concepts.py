"""Concept methods in an evaluation (TCAV, bam.concepts): run once per plan, scored by their metrics."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from bam.evaluate.execute import ExecContext
from bam.evaluate.plan import ConceptPlan, EvalPlan


@dataclass(frozen=True)
class ConceptRun:
    """What one concept method produced: its per-image records, summary, diagnostics and cost."""

    plan: ConceptPlan
    records: pd.DataFrame
    summary: pd.DataFrame
    cavs: pd.DataFrame
    sets: Mapping[str, Any]
    counts: Mapping[str, int]
    seconds: float


def execute_concepts(plan: EvalPlan, cache_root: Path, ctx: ExecContext) -> tuple[ConceptRun, ...]:
    """Run every concept plan (CAVs cached under ``cache_root/<method>``)."""
    from bam.concepts import get_concept_method

    out = []
    for cp in plan.concepts:
        fn = get_concept_method(cp.method)
        t0 = time.perf_counter()
        res = fn({role: (e.model, e.sha256) for role, e in cp.models.items()}, plan.data, dict(cp.params),
                 cache_root / cp.method, device=ctx.device, progress=ctx.progress)
        out.append(ConceptRun(plan=cp, records=res.records, summary=res.summary, cavs=res.cavs,
                              sets=res.sets.describe(), counts=dict(res.counts), seconds=time.perf_counter() - t0))
    return tuple(out)

"""Evaluation: plan -> execute -> summarise, the BAM metrics as results.csv, records and provenance (SPEC §4, §6).

>>> from bam.evaluate import evaluate_dir, EvalConfig
>>> res = evaluate_dir("runs/data", "runs/models", EvalConfig(), "runs/eval")
>>> res.results                                   # one row per method x metric, with bootstrap CIs

Stages, each a pure function of frozen values: :func:`plan` (what runs: methods, metrics, units,
skips), :func:`execute` (per-image records, cached and sharded), :func:`summarise` (every metric as
``fn(records, **params)``), then the output set is written as a unit (:mod:`bam.outputs`).
"""

from __future__ import annotations

from bam.evaluate._bootstrap import bootstrap_ci
from bam.evaluate._cache import RecordCache
from bam.evaluate.api import EvalResult, evaluate, evaluate_dir, train_hint
from bam.evaluate.config import EvalConfig, PatchConfig
from bam.evaluate.execute import ExecContext, Execution, execute, gather
from bam.evaluate.iir_patch import PatchSet, build_patch_set, optimise_patch
from bam.evaluate.plan import EvalPlan, MethodPlan, MetricPlan, ModelEntry, Skip, Unit, plan
from bam.evaluate.summarise import Summary, summarise, wide_table

__all__ = [
    "EvalConfig", "EvalPlan", "EvalResult", "ExecContext", "Execution", "MethodPlan", "MetricPlan",
    "ModelEntry", "PatchConfig", "PatchSet", "RecordCache", "Skip", "Summary",
    "Unit", "bootstrap_ci", "build_patch_set",
    "evaluate", "evaluate_dir", "execute", "gather", "optimise_patch", "plan", "summarise", "train_hint",
    "wide_table",
]

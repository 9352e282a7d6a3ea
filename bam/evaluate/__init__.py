"""Evaluation: per-image records (cached), the BAM metrics, results.csv and provenance (SPEC §4, §6).

>>> from bam.evaluate import evaluate, EvalConfig, ModelEntry
>>> evaluate(data, [ModelEntry(model, card, path), ...], EvalConfig(), "runs/eval", seed=0)
"""

from __future__ import annotations

from bam.evaluate._bootstrap import bootstrap_ci
from bam.evaluate._cache import RecordCache
from bam.evaluate._plan import ModelEntry
from bam.evaluate.config import EvalConfig, PatchConfig
from bam.evaluate.iir_patch import PatchSet, build_patch_set, optimise_patch
from bam.evaluate.results import COST_COLUMNS, RECORD_COLUMNS, RESULTS_COLUMNS, SCHEMA_VERSION, evaluate
from bam.evaluate.runner import DistInfo

__all__ = [
    "COST_COLUMNS",
    "RECORD_COLUMNS",
    "RESULTS_COLUMNS",
    "SCHEMA_VERSION",
    "DistInfo",
    "EvalConfig",
    "ModelEntry",
    "PatchConfig",
    "PatchSet",
    "RecordCache",
    "bootstrap_ci",
    "build_patch_set",
    "evaluate",
    "optimise_patch",
]

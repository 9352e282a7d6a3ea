"""Reports of an evaluation: the HTML report and the CI regression gate (SPEC §6).

>>> from bam.report import GateRules, build_report, compare_results
>>> build_report("runs/eval")                       # runs/eval/report.html + runs/eval/figures/*.png
>>> cmp = compare_results("baselines/ci_results.csv", "runs/ci/eval/results.csv", GateRules(tolerance=0.05))
>>> cmp.failed, cmp.frame                           # bool, the diff table (interval-based decision)
"""

from __future__ import annotations

from typing import Any

from bam.report.compare import Comparison, GateRules, compare_frames, compare_results, format_table, summary_line
from bam.schema import RESULTS_COLUMNS, SCHEMA_VERSION, read_records, read_results

_LAZY = {"ReportOutput", "build_report", "control_methods"}


def __getattr__(name: str) -> Any:
    """Import the HTML part (matplotlib) only when it is used: ``bam compare`` stays light."""
    if name in _LAZY:
        from bam.report import html

        return getattr(html, name)
    raise AttributeError(f"module 'bam.report' has no attribute {name!r}")

__all__ = [
    "RESULTS_COLUMNS",
    "SCHEMA_VERSION",
    "Comparison",
    "GateRules",
    "ReportOutput",
    "build_report",
    "compare_frames",
    "compare_results",
    "control_methods",
    "format_table",
    "read_records",
    "read_results",
    "summary_line",
]

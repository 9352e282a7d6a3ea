"""The gate's one-line messages after the table: changed definitions, rows only in NEW, a stale
baseline and the command that regenerates it, and one line per failing row (docs/ci.md)."""

from __future__ import annotations

import json
import math
from typing import Any

from bam.report.compare import Comparison, fmt_value, parse_params
from bam.schema import SCHEMA_VERSION


def _names(items: list[str], limit: int = 4) -> str:
    """A short, sorted list of names ("a, b, c and 5 more")."""
    items = sorted(set(items))
    head = ", ".join(items[:limit])
    return head + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _split(definition: str) -> tuple[str, Any]:
    """A definition text (see :func:`_definition`) as (version prefix or "", decoded params)."""
    version, _, rest = definition.partition(" ") if definition.startswith("v") else ("", "", definition)
    return version, parse_params(rest)


def definition_change(old: str, new: str) -> str:
    """``old -> new`` restricted to what differs: the version, and the parameters whose values differ."""
    (v_old, p_old), (v_new, p_new) = _split(old), _split(new)
    if isinstance(p_old, dict) and isinstance(p_new, dict):
        keys = sorted(k for k in {*p_old, *p_new} if p_old.get(k, _split) != p_new.get(k, _split))
        p_old, p_new = ({k: p[k] for k in keys if k in p} for p in (p_old, p_new))
    sides = []
    for version, params, other in ((v_old, p_old, v_new), (v_new, p_new, v_old)):
        text = params if isinstance(params, str) else json.dumps(params, sort_keys=True)
        sides.append(_short((f"{version} " if version != other else "") + text, 200))
    return f"{sides[0]} -> {sides[1]}"


def changed_lines(cmp: Comparison) -> list[str]:
    """One line per method whose definition changed: the old and the new definition (what differs)."""
    frame = cmp.frame[cmp.frame["status"] == "CHANGED"]
    seen = frame.drop_duplicates(["method", "baseline_definition", "new_definition"])
    return [f"CHANGED {r.method}: {definition_change(r.baseline_definition, r.new_definition)} "
            "(not gated: the baseline measured another definition)" for r in seen.itertuples(index=False)]


def new_line(cmp: Comparison) -> str | None:
    """One line summarising the rows only in NEW (None when there are none)."""
    frame = cmp.frame[cmp.frame["status"] == "NEW"]
    if frame.empty:
        return None
    return (f"NEW: {len(frame)} rows not in the baseline (methods {_names(list(frame['method']))}; "
            f"metrics {_names(list(frame['metric']))})")


def stale_line(cmp: Comparison, regenerate: str) -> str | None:
    """The one line saying that the baseline is out of date and which command regenerates it.

    Out of date: an older schema than this bam writes, a method set that differs (methods only in
    one file), a row only in NEW, or a changed method definition. None when the baseline is current.
    """
    frame = cmp.frame
    reasons = []
    if cmp.baseline_schema < SCHEMA_VERSION:
        reasons.append(f"schema {cmp.baseline_schema}, this bam writes {SCHEMA_VERSION}")
    base_methods = set(frame.loc[frame["status"] != "NEW", "method"])
    new_methods = set(frame.loc[frame["status"] != "MISSING", "method"])
    if new_methods - base_methods:
        reasons.append(f"methods not in it: {_names(list(new_methods - base_methods))}")
    if base_methods - new_methods:
        reasons.append(f"methods no longer run: {_names(list(base_methods - new_methods))}")
    new_rows = frame[(frame["status"] == "NEW") & frame["method"].isin(base_methods)]
    if len(new_rows):
        reasons.append(f"{len(new_rows)} new rows of its methods")
    changed = frame.loc[frame["status"] == "CHANGED", "method"]
    if len(changed):
        reasons.append(f"definition changed: {_names(list(changed))}")
    if not reasons:
        return None
    return f"baseline out of date ({'; '.join(reasons)}): regenerate it with: {regenerate}"


def failure_lines(cmp: Comparison) -> list[str]:
    """One line per failing row, naming the method and the metric (what a CI log should show last)."""
    out = []
    for r in cmp.frame[cmp.frame["fails"]].itertuples(index=False):
        metric = f"{r.metric}[k={r.k}]" if r.k != "" else r.metric
        if r.status == "MISSING":
            out.append(f"MISSING: {r.method} {metric} on {r.model_pair}: in the baseline, not in the new results")
            continue
        why = "could not be computed" if math.isnan(r.new) else \
            f"{fmt_value(r.baseline)} -> {fmt_value(r.new)} (delta {r.delta:+.4f}, beyond {fmt_value(r.threshold)}" + \
            (f", p_adj {r.p_adjusted:.2g})" if math.isfinite(r.p_adjusted) else ")")
        out.append(f"REGRESSION: {r.method} {metric} on {r.model_pair}: {why}")
    return out

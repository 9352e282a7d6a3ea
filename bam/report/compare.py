"""Compare two ``results.csv`` files: the regression gate that CI runs (SPEC §6).

Rows are joined on (dataset, model_pair, method, metric, k). The gate decides on evidence, not
digits: for a metric whose direction is ``higher``, a row regresses when the new value falls below
the baseline value by more than the tolerance (or, with ``use_ci``, below the baseline's CI low by
more than the tolerance) *and* the drop is resolved by the interval test (a z-test of new - baseline
with the standard errors of the two bootstrap CIs, Holm-adjusted over the rows); ``tolerance_only``
drops the interval test. ``lower`` is symmetric. Rows with direction ``none`` and RMCS curve points
(``k`` set) are informational and never fail. A row whose method definition changed (its
``method_params``, or its ``method_version`` when both files have one) is CHANGED: it compares two
different methods, so it never fails. A baseline row absent from the new file fails unless
``allow_missing``. Cost columns (images/s, passes per image, peak memory) are ignored: they depend
on the machine.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bam.errors import BamError
from bam.outputs import check_output_set
from bam.schema import KEY_COLUMNS, SCHEMA_VERSION, read_results
from bam.stats import holm, normal_p

#: Slack for float round-off: a change of exactly the tolerance is not a regression.
_EPS = 1e-9

#: Row statuses, in the order a reader cares about them.
STATUSES: tuple[str, ...] = ("REGRESSION", "MISSING", "CHANGED", "IMPROVED", "NOISE", "NEW", "INFO", "OK")

#: Columns of the diff table (``compare.frame``) and of ``--out diff.csv``.
DIFF_COLUMNS: tuple[str, ...] = (
    "dataset", "model_pair", "method", "metric", "k", "direction", "baseline", "baseline_ci_low",
    "baseline_ci_high", "new", "new_ci_low", "new_ci_high", "delta", "p_value", "p_adjusted", "real", "threshold",
    "status", "fails", "baseline_definition", "new_definition",
)
#: z of a two-sided 95 % interval: the CI half-width / Z is a row's standard error.
_Z95 = 1.959963984540054
#: The column that versions a method's computation (results schema 3 on); compared when both files have it.
VERSION_COLUMN = "method_version"


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare_results`: one diff row per key, and whether the gate fails.

    ``baseline_schema`` is the baseline file's schema version; ``tolerance_only`` says whether the
    interval test was off.
    """

    frame: pd.DataFrame
    tolerance: float
    use_ci: bool
    allow_missing: bool
    notes: tuple[str, ...] = ()
    tolerance_only: bool = False
    baseline_schema: int = SCHEMA_VERSION

    @property
    def failed(self) -> bool:
        """True when any row is a failing regression or a failing missing row."""
        return bool(self.frame["fails"].any()) if len(self.frame) else False

    def counts(self) -> dict[str, int]:
        """Number of rows per status (every status present, zeros included)."""
        vc = self.frame["status"].value_counts() if len(self.frame) else pd.Series(dtype=int)
        return {s: int(vc.get(s, 0)) for s in STATUSES}


@dataclass(frozen=True)
class _Baseline:
    """A baseline row: its direction, value and CI."""

    direction: str
    value: float
    lo: float
    hi: float

    def bound(self, worse: bool, use_ci: bool) -> float:
        """The reference for a change: the value, or (``use_ci``) the CI bound on the ``worse`` side."""
        side = self.lo if (self.direction == "higher") == worse else self.hi
        return side if use_ci and math.isfinite(side) else self.value


def _threshold(b: _Baseline, tol: float, use_ci: bool) -> float:
    """The value beyond which the new value is a regression (NaN when none applies)."""
    if b.direction == "higher":
        return b.bound(True, use_ci) - tol
    if b.direction == "lower":
        return b.bound(True, use_ci) + tol
    return math.nan


def _status(b: _Baseline, new: float, tol: float, use_ci: bool) -> tuple[str, float]:
    """Classify one joined row by the tolerance alone; returns (status, regression threshold)."""
    thr = _threshold(b, tol, use_ci)
    if b.direction == "none":
        return "INFO", thr
    if math.isnan(b.value) and math.isnan(new):
        return "OK", thr
    if math.isnan(new):  # the metric could not be computed any more
        return "REGRESSION", thr
    if math.isnan(b.value):
        return "IMPROVED", thr
    sign = 1.0 if b.direction == "higher" else -1.0
    if sign * (new - thr) < -_EPS:
        return "REGRESSION", thr
    better = b.bound(False, use_ci) + sign * tol
    return ("IMPROVED" if sign * (new - better) > _EPS else "OK"), thr


@dataclass(frozen=True)
class GateRules:
    """When a row fails the gate: a change beyond ``tolerance`` (absolute; measured from the
    baseline's CI bound with ``use_ci``) that the interval test resolves (``tolerance_only``: the
    tolerance alone decides); missing rows allowed with ``allow_missing``."""

    tolerance: float = 0.05
    use_ci: bool = False
    allow_missing: bool = False
    tolerance_only: bool = False


def parse_params(cell: Any) -> Any:
    """A ``method_params`` cell as a comparable value (decoded JSON; other text stripped)."""
    text = "" if cell is None or (isinstance(cell, float) and math.isnan(cell)) else str(cell).strip()
    try:
        return json.loads(text) if text else {}
    except json.JSONDecodeError:
        return text


def _version(row: dict[str, Any], side: str) -> str:
    """A row's ``method_version`` cell as text ("" when absent or empty)."""
    cell = row.get(f"{VERSION_COLUMN}_{side}")
    if cell is None or (isinstance(cell, float) and math.isnan(cell)):
        return ""
    text = str(cell).strip()
    return text[:-2] if text.endswith(".0") else text


def _definition(row: dict[str, Any], side: str, versioned: bool) -> str:
    """A method's definition as text: ``method_params`` JSON, prefixed by ``v<method_version>`` when
    ``versioned`` and both sides of the row have a version (an older file without one compares by
    its parameters alone)."""
    params = parse_params(row[f"method_params_{side}"])
    text = json.dumps(params, sort_keys=True) if not isinstance(params, str) else params
    both = versioned and _version(row, "b") != "" and _version(row, "n") != ""
    return f"v{_version(row, side)} {text}" if both else text


def _joined(baseline: pd.DataFrame, new: pd.DataFrame) -> tuple[pd.DataFrame, bool]:
    """Outer join of the two frames on the key; True when both carry a method version."""
    versioned = VERSION_COLUMN in baseline.columns and VERSION_COLUMN in new.columns
    cols = [*KEY_COLUMNS, "direction", "value", "ci_low", "ci_high", "method_params",
            *([VERSION_COLUMN] if versioned else [])]
    left = baseline[cols].rename(columns={"ci_low": "ci_low_b", "ci_high": "ci_high_b"})
    right = new[cols].rename(columns={"ci_low": "ci_low_n", "ci_high": "ci_high_n"})
    merged = left.merge(right, on=list(KEY_COLUMNS), how="outer", suffixes=("_b", "_n"), indicator=True, sort=False)
    return merged, versioned


def _num(d: dict[str, Any], col: str, present: bool) -> float:
    return float(d[col]) if present else math.nan


def _row(d: dict[str, Any], rules: GateRules, versioned: bool) -> dict[str, Any]:
    """One diff row (before the Holm adjustment) from one joined record."""
    side = str(d["_merge"])
    has_b, has_n = side != "right_only", side != "left_only"
    direction = d["direction_b"] if has_b else d["direction_n"]
    if str(d["k"]).strip() != "":  # a curve point has no better side (SPEC §4.7): informational
        direction = "none"
    base, val = _num(d, "value_b", has_b), _num(d, "value_n", has_n)
    lo, hi = _num(d, "ci_low_b", has_b), _num(d, "ci_high_b", has_b)
    nlo, nhi = _num(d, "ci_low_n", has_n), _num(d, "ci_high_n", has_n)
    b = _Baseline(direction, base, lo, hi)
    old_def = _definition(d, "b", versioned) if has_b else ""
    new_def = _definition(d, "n", versioned) if has_n else ""
    if not has_n:
        status, thr = "MISSING", _threshold(b, rules.tolerance, rules.use_ci)
        fails = direction != "none" and not rules.allow_missing
    elif not has_b:
        status, thr, fails = "NEW", math.nan, False
    elif old_def != new_def:  # another method under the same name: nothing to gate against
        status, thr, fails = "CHANGED", math.nan, False
    else:
        status, thr = _status(b, val, rules.tolerance, rules.use_ci)
        fails = status == "REGRESSION"
    se = math.sqrt(((hi - lo) / (2 * _Z95)) ** 2 + ((nhi - nlo) / (2 * _Z95)) ** 2)
    p = normal_p(val - base, se) if has_b and has_n and direction != "none" else math.nan
    return {**{k: d[k] for k in KEY_COLUMNS}, "direction": direction, "baseline": base, "baseline_ci_low": lo,
            "baseline_ci_high": hi, "new": val, "new_ci_low": nlo, "new_ci_high": nhi, "delta": val - base,
            "p_value": p, "p_adjusted": math.nan, "real": False, "threshold": thr, "status": status,
            "fails": bool(fails), "baseline_definition": old_def, "new_definition": new_def}


def compare_frames(baseline: pd.DataFrame, new: pd.DataFrame, rules: GateRules | None = None) -> Comparison:
    """Join two validated results frames (see :func:`bam.schema.read_results`) and classify rows.

    Statuses: OK (within tolerance), REGRESSION (worse beyond tolerance and resolved, or the new
    value is NaN), IMPROVED (better beyond tolerance and resolved), NOISE (beyond the tolerance but
    not resolved by the interval test: never failing), CHANGED (the method's
    definition differs: ``method_params``, or ``method_version`` when both frames have the column),
    NEW (only in ``new``), MISSING (only in ``baseline``), INFO (direction ``none``: reported, never
    failing). Every joined row also says whether the change is *real*: a two-sided z-test of
    new - baseline with the standard errors read from the two 95 % bootstrap CIs (independent
    runs), Holm-adjusted over the rows, real at p < 0.05. A change beyond the tolerance needs to be
    real to count, unless the new value is NaN, a CI is missing (no evidence of noise: the
    tolerance decides) or ``tolerance_only`` is set.
    """
    rules = rules or GateRules()
    tolerance = rules.tolerance
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise BamError(f"tolerance {tolerance!r} is invalid; accepted: a finite number >= 0")
    merged, versioned = _joined(baseline, new)
    rows = [_row(d, rules, versioned) for d in merged.to_dict("records")]
    for row, adj in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_adjusted"] = adj
        row["real"] = bool(math.isfinite(adj) and adj < 0.05)
        tested = math.isfinite(row["new"]) and math.isfinite(row["p_value"])
        if not rules.tolerance_only and row["status"] in ("REGRESSION", "IMPROVED") and tested and not row["real"]:
            row["status"], row["fails"] = "NOISE", False  # beyond the tolerance, within the two intervals' noise
    frame = pd.DataFrame(rows, columns=list(DIFF_COLUMNS))
    if len(frame):
        frame["_kn"] = [int(k) if k != "" else -1 for k in frame["k"]]
        frame = frame.sort_values(["dataset", "metric", "model_pair", "method", "_kn"], kind="stable")
        frame = frame.drop(columns="_kn").reset_index(drop=True)
    notes = []
    for ds in sorted(set(baseline["dataset"]) & set(new["dataset"])):
        hb = set(baseline.loc[baseline["dataset"] == ds, "manifest_hash"])
        hn = set(new.loc[new["dataset"] == ds, "manifest_hash"])
        if hb != hn:
            notes.append(f"note: dataset {ds!r} has a different manifest hash in the two files "
                         f"({', '.join(sorted(hb))[:16]}... vs {', '.join(sorted(hn))[:16]}...): the data changed")
    schema = int(baseline["schema_version"].iloc[0]) if len(baseline) else SCHEMA_VERSION
    return Comparison(frame=frame, tolerance=float(tolerance), use_ci=rules.use_ci, allow_missing=rules.allow_missing,
                      notes=tuple(notes), tolerance_only=rules.tolerance_only, baseline_schema=schema)


def read_checked(path: str | os.PathLike[str], role: str) -> pd.DataFrame:
    """A results.csv, refused when its folder holds an interrupted or mixed output set, or when it has no rows."""
    path = Path(path)
    if path.is_dir():
        raise BamError(f"{role} {path} is a directory; expected a results.csv file")
    if path.parent.is_dir():
        check_output_set(path.parent)
    frame = read_results(path)
    if frame.empty:
        raise BamError(f"{role} {path} has a header but no rows; expected a results.csv written by bam evaluate")
    return frame


def compare_results(baseline: str | os.PathLike[str], new: str | os.PathLike[str],
                    rules: GateRules | None = None) -> Comparison:
    """Read two results.csv files (schema 1 or 2) and compare them; see :func:`compare_frames`.

    An empty file (header only) is an error: an empty baseline would pass every gate.
    """
    return compare_frames(read_checked(baseline, "baseline"), read_checked(new, "new results file"), rules)


def fmt_value(x: float) -> str:
    """A value with 4 decimals; NaN/None as an empty cell."""
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.4f}".lstrip("+")


def format_table(cmp: Comparison, only_changes: bool = False) -> str:
    """A fixed-width text table of the baseline's rows: method, metric (k), model pair, baseline, new,
    delta, status (``*`` beside a real delta). Rows only in NEW are left out: :func:`new_line`
    counts them."""
    frame = cmp.frame[cmp.frame["status"] != "NEW"]
    if only_changes:
        frame = frame[~frame["status"].isin(["OK", "INFO"])]
    header = ("method", "metric", "model_pair", "baseline", "new", "delta", "status")
    lines = []
    for r in frame.itertuples(index=False):
        metric = f"{r.metric}[k={r.k}]" if r.k != "" else r.metric
        delta = "" if np.isnan(r.delta) else f"{r.delta:+.4f}" + ("*" if r.real else "")
        status = r.status + (" (allowed)" if r.status == "MISSING" and not r.fails else "")
        lines.append((r.method, metric, r.model_pair, fmt_value(r.baseline), fmt_value(r.new), delta, status))
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    for line in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    return "\n".join(out)


def summary_line(cmp: Comparison) -> str:
    """One line: PASS/FAIL and the count per status."""
    c = cmp.counts()
    mode = f"tolerance {cmp.tolerance:g}" + (", vs baseline CI" if cmp.use_ci else "")
    mode += ", tolerance only" if cmp.tolerance_only else ", resolved by the interval test"
    parts = ", ".join(f"{v} {k.lower()}" for k, v in c.items() if v)
    verdict = "FAIL" if cmp.failed else "PASS"
    return f"{verdict}: {len(cmp.frame)} rows ({parts or 'none'}); {mode}"

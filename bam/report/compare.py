"""Compare two ``results.csv`` files: the regression gate that CI runs (SPEC §6).

Rows are joined on (dataset, model_pair, method, metric, k). For a metric whose direction is
``higher``, a row regresses when the new value falls below the baseline value by more than the
tolerance (or, with ``use_ci``, below the baseline's CI low by more than the tolerance);
``lower`` is symmetric. Rows with direction ``none`` and RMCS curve points (metric
``rmcs_curve``, whatever their direction cell says) are informational and never fail. A baseline
row absent from the new file fails unless ``allow_missing``. Cost columns (images/s, passes per
image, peak memory) are ignored: they depend on the machine.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bam.errors import BamError
from bam.outputs import check_output_set
from bam.schema import KEY_COLUMNS, read_results
from bam.stats import holm, normal_p

#: Slack for float round-off: a change of exactly the tolerance is not a regression.
_EPS = 1e-9

#: Row statuses, in the order a reader cares about them.
STATUSES: tuple[str, ...] = ("REGRESSION", "MISSING", "IMPROVED", "NEW", "INFO", "OK")

#: Columns of the diff table (``compare.frame``) and of ``--out diff.csv``.
DIFF_COLUMNS: tuple[str, ...] = (
    "dataset", "model_pair", "method", "metric", "k", "direction", "baseline", "baseline_ci_low",
    "baseline_ci_high", "new", "new_ci_low", "new_ci_high", "delta", "p_value", "p_adjusted", "real", "threshold",
    "status", "fails",
)
#: z of a two-sided 95 % interval: the CI half-width / Z is a row's standard error.
_Z95 = 1.959963984540054


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare_results`: one diff row per key, and whether the gate fails."""

    frame: pd.DataFrame
    tolerance: float
    use_ci: bool
    allow_missing: bool
    notes: tuple[str, ...] = ()

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
    """Classify one joined row; returns (status, regression threshold)."""
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
    """When a row fails the gate: ``tolerance`` (absolute), measured from the baseline's CI bound
    (``use_ci``), missing rows allowed (``allow_missing``), only statistically real drops (``require_real``)."""

    tolerance: float = 0.05
    use_ci: bool = False
    allow_missing: bool = False
    require_real: bool = False


def compare_frames(baseline: pd.DataFrame, new: pd.DataFrame, rules: GateRules | None = None) -> Comparison:
    """Join two validated results frames (see :func:`bam.schema.read_results`) and classify rows.

    Statuses: OK (within tolerance), REGRESSION (worse beyond tolerance, or the new value is NaN),
    IMPROVED (better beyond tolerance), NEW (only in ``new``), MISSING (only in ``baseline``),
    INFO (direction ``none``: reported, never failing). Every joined row also says whether the
    change is *real*: a two-sided z-test of new - baseline with the standard errors read from the
    two 95 % bootstrap CIs (independent runs), Holm-adjusted over the rows, real at p < 0.05. With
    ``require_real`` a drop beyond the tolerance fails only when it is real.
    """
    rules = rules or GateRules()
    tolerance, use_ci, allow_missing, require_real = rules.tolerance, rules.use_ci, rules.allow_missing, \
        rules.require_real
    if not (isinstance(tolerance, (int, float)) and math.isfinite(tolerance) and tolerance >= 0):
        raise BamError(f"tolerance {tolerance!r} is invalid; accepted: a finite number >= 0")
    keys = list(KEY_COLUMNS)
    left = baseline[[*keys, "direction", "value", "ci_low", "ci_high", "manifest_hash"]]
    right = new[[*keys, "direction", "value", "ci_low", "ci_high", "manifest_hash"]].rename(
        columns={"ci_low": "new_ci_low", "ci_high": "new_ci_high"})
    merged = left.merge(right, on=keys, how="outer", suffixes=("_b", "_n"), indicator=True, sort=False)
    rows = []
    for d in merged.to_dict("records"):
        side = str(d["_merge"])
        direction = d["direction_b"] if side != "right_only" else d["direction_n"]
        if str(d["k"]).strip() != "":  # a curve point has no better side (SPEC §4.7): informational
            direction = "none"
        base = float(d["value_b"]) if side != "right_only" else math.nan
        val = float(d["value_n"]) if side != "left_only" else math.nan
        lo = float(d["ci_low"]) if side != "right_only" else math.nan
        hi = float(d["ci_high"]) if side != "right_only" else math.nan
        if side == "left_only":
            status, thr = "MISSING", _threshold(_Baseline(direction, base, lo, hi), tolerance, use_ci)
            fails = direction != "none" and not allow_missing
        elif side == "right_only":
            status, thr, fails = "NEW", math.nan, False
        else:
            status, thr = _status(_Baseline(direction, base, lo, hi), val, tolerance, use_ci)
            fails = status == "REGRESSION"
        nlo = float(d["new_ci_low"]) if side != "left_only" else math.nan
        nhi = float(d["new_ci_high"]) if side != "left_only" else math.nan
        se = math.sqrt(((hi - lo) / (2 * _Z95)) ** 2 + ((nhi - nlo) / (2 * _Z95)) ** 2)
        p = normal_p(val - base, se) if side == "both" and direction != "none" else math.nan
        rows.append({**{k: d[k] for k in keys}, "direction": direction, "baseline": base, "baseline_ci_low": lo,
                     "baseline_ci_high": hi, "new": val, "new_ci_low": nlo, "new_ci_high": nhi,
                     "delta": val - base, "p_value": p, "p_adjusted": math.nan, "real": False, "threshold": thr,
                     "status": status, "fails": bool(fails)})
    for row, adj in zip(rows, holm([r["p_value"] for r in rows])):
        row["p_adjusted"] = adj
        row["real"] = bool(math.isfinite(adj) and adj < 0.05)
        if require_real and row["status"] == "REGRESSION" and math.isfinite(row["new"]) and not row["real"]:
            row["fails"] = False
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
    return Comparison(frame=frame, tolerance=float(tolerance), use_ci=use_ci, allow_missing=allow_missing,
                      notes=tuple(notes))


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


def _fmt(x: float) -> str:
    """A value with 4 decimals; NaN/None as an empty cell."""
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:+.4f}".lstrip("+")


def format_table(cmp: Comparison, only_changes: bool = False) -> str:
    """A fixed-width text table: method, metric (k), model pair, baseline, new, delta, status."""
    frame = cmp.frame
    if only_changes:
        frame = frame[~frame["status"].isin(["OK", "INFO"])]
    header = ("method", "metric", "model_pair", "baseline", "new", "delta", "status")
    lines = []
    for r in frame.itertuples(index=False):
        metric = f"{r.metric}[k={r.k}]" if r.k != "" else r.metric
        delta = "" if np.isnan(r.delta) else f"{r.delta:+.4f}"
        status = r.status + ("" if r.fails or r.status in ("OK", "INFO", "NEW", "IMPROVED") else " (allowed)")
        lines.append((r.method, metric, r.model_pair, _fmt(r.baseline), _fmt(r.new), delta, status))
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
    parts = ", ".join(f"{v} {k.lower()}" for k, v in c.items() if v)
    verdict = "FAIL" if cmp.failed else "PASS"
    return f"{verdict}: {len(cmp.frame)} rows ({parts or 'none'}); {mode}"

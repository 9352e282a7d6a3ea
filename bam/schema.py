"""The results and records schema: columns, types and parsing, for evaluate, report and compare.

``results.csv`` (schema :data:`SCHEMA_VERSION`) has one row per (dataset, model pair, method,
metric[, k]); ``records.csv`` one row per (method, model role, input, subset, image). Both are flat
keyed records (SPEC §6). Every problem with a file is a one-line :class:`~bam.errors.BamError`
naming the file and what is expected, so a truncated or foreign CSV fails cleanly.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bam.errors import BamError

SCHEMA_VERSION = 3
#: Schema versions :func:`read_results` reads (version 1 lacks the columns of :data:`V2_DEFAULTS`, versions 1
#: and 2 those of :data:`V3_DEFAULTS`).
READABLE_VERSIONS: tuple[int, ...] = (1, 2, 3)

#: results.csv columns, in order.
RESULTS_COLUMNS: tuple[str, ...] = (
    "schema_version", "dataset", "manifest_hash", "model_pair", "model_hashes", "method", "method_params",
    "method_version", "metric", "metric_params", "k", "space", "value", "ci_low", "ci_high", "n_used", "n_excluded",
    "excluded_reasons", "direction", "chance", "tier", "images_per_s", "passes_per_image", "peak_memory_mb", "seed",
)
#: Columns added in schema 2 and the value a schema-1 file is read with.
V2_DEFAULTS: dict[str, str] = {"metric_params": "{}", "space": "pixel", "tier": ""}
#: Columns added in schema 3 and the value an older file is read with ("": the method version is unknown).
V3_DEFAULTS: dict[str, str] = {"method_version": ""}
#: Attribution spaces (SPEC §5.8): ``pixel`` = [0, 1] image pixels, ``model`` = the network input.
SPACES: tuple[str, ...] = ("pixel", "model")

#: comparisons.csv columns: one row per (metric, model kind, pair of methods).
COMPARISON_COLUMNS: tuple[str, ...] = (
    "schema_version", "dataset", "manifest_hash", "model_kind", "metric", "method_a", "method_b", "n_common",
    "delta", "ci_low", "ci_high", "p_value", "p_adjusted", "resolved", "correction", "confidence",
)
#: results.csv columns parsed as floats (empty -> NaN).
RESULTS_FLOATS: tuple[str, ...] = (
    "value", "ci_low", "ci_high", "chance", "images_per_s", "passes_per_image", "peak_memory_mb",
)
#: results.csv columns parsed as integers (empty -> missing).
RESULTS_INTS: tuple[str, ...] = ("n_used", "n_excluded")
#: Columns that measure cost: they vary between runs and machines, and never decide a regression.
COST_COLUMNS: tuple[str, ...] = ("images_per_s", "passes_per_image", "peak_memory_mb")
#: The identity of a results row (``k`` is "" except for curve rows).
KEY_COLUMNS: tuple[str, ...] = ("dataset", "model_pair", "method", "metric", "k")
DIRECTIONS: tuple[str, ...] = ("higher", "lower", "none")
#: The metric name of the RMCS curve points (one row per k).
CURVE_METRIC = "rmcs_curve"


def is_curve_point(frame: pd.DataFrame) -> pd.Series:
    """Rows that are points of a curve (``k`` set: rmcs_curve, tcav_rmcs_curve), not summary values."""
    return frame["k"].astype(str).str.strip() != ""

#: records.csv columns, in order; method extras (e.g. ``boundary_distance``) follow, sorted.
RECORD_COLUMNS: tuple[str, ...] = (
    "image_id", "subset", "input", "model_role", "model_hash", "method", "method_hash", "method_version",
    "prediction", "label", "correct", "g", "valid", "status",
)
#: The order of records.csv rows.
RECORD_ORDER: tuple[str, ...] = ("method", "model_role", "input", "subset", "image_id")

_TRUE = frozenset({"true", "1", "yes", "t", "1.0"})
_FALSE = frozenset({"false", "0", "no", "f", "0.0"})
_MISSING = frozenset({"", "nan", "na", "none", "null"})


# ---------------------------------------------------------------------------------- cells
def bool_cell(value: Any) -> bool | None:
    """A boolean cell (bool, 0/1, true/false strings) as bool; None for a missing cell; ValueError otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        if value in (0, 1):
            return bool(value)
        raise ValueError(value)
    s = str(value).strip().lower()
    if s in _MISSING:
        return None
    if s in _TRUE:
        return True
    if s in _FALSE:
        return False
    raise ValueError(value)


def bool_column(values: Iterable[Any], default: bool) -> np.ndarray:
    """A column of boolean cells as a bool array; missing or unreadable cells -> ``default``."""
    out = []
    for v in values:
        try:
            b = bool_cell(v)
        except ValueError:
            b = None
        out.append(default if b is None else b)
    return np.asarray(out, dtype=bool)


def float_cell(value: Any) -> float:
    """A numeric cell as float; missing cells -> NaN; ValueError otherwise."""
    if value is None:
        return math.nan
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return float(value)
    s = str(value).strip()
    return math.nan if s.lower() in _MISSING else float(s)


def parse_json_cell(text: Any) -> Any:
    """Decode a JSON cell (``method_params``, ``excluded_reasons``); non-JSON text is returned as is."""
    if not isinstance(text, str) or not text.strip():
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# ---------------------------------------------------------------------------------- files
def _read_text_csv(path: Path, what: str) -> pd.DataFrame:
    """Read a CSV with every cell as a string (no NA guessing); one-line errors."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BamError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise BamError(f"{what} {path} is a directory; expected a CSV file") from None
    except UnicodeDecodeError:
        raise BamError(f"malformed {what} {path}: not UTF-8 text; expected a CSV file") from None
    if not text.strip():
        raise BamError(f"malformed {what} {path}: the file is empty; expected a CSV header line")
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), strict=True))
    except csv.Error as exc:
        raise BamError(f"malformed {what} {path}: {exc}; expected a CSV file") from None
    rows = [r for r in rows if r]
    header, body = rows[0], rows[1:]
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise BamError(f"malformed {what} {path}: line {bad[0]} has {len(body[bad[0] - 2])} fields, "
                       f"expected {len(header)} (as in the header)")
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise BamError(f"malformed {what} {path}: duplicate column(s) {', '.join(dup)}")
    return pd.DataFrame(body, columns=header, dtype=object)


def _require(df: pd.DataFrame, columns: Sequence[str], path: Path, what: str) -> None:
    """BamError naming the missing columns of ``df``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise BamError(f"not a bam {what} (schema {SCHEMA_VERSION}): {path} lacks column(s) {', '.join(missing)}; "
                       f"expected columns: {', '.join(columns)}")


def _parse(series: pd.Series, column: str, path: Path, what: str, parse: Any, expected: str) -> list[Any]:
    """Parse every cell of a string column; the first bad cell raises a BamError naming it."""
    out = []
    for i, cell in enumerate(series.tolist()):
        try:
            out.append(parse(cell))
        except ValueError:
            raise BamError(f"malformed {what} {path}: column {column!r} row {i + 1} is {cell!r}; "
                           f"expected {expected}") from None
    return out


def _k_cell(cell: Any) -> str:
    """``k`` as a canonical string: "" for non-curve rows, else the integer ("3.0" -> "3")."""
    f = float_cell(cell)
    if math.isnan(f):
        return ""
    if not f.is_integer():
        raise ValueError(cell)
    return str(int(f))


def read_results(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a ``results.csv``.

    Returns every schema column: floats for values/CIs/costs, nullable ints for counts, ``k`` as a
    canonical string ("" for non-curve rows), other columns as strings; extra columns are kept.
    One-line BamError on a missing file, missing columns, another schema version, an unparsable
    cell, an unknown direction or a duplicated row key.
    """
    path, what = Path(path), "results file"
    df = _read_text_csv(path, what)
    if "schema_version" not in df.columns:
        _require(df, RESULTS_COLUMNS, path, "results.csv")
    if df.empty:
        _require(df, [c for c in RESULTS_COLUMNS if c not in V2_DEFAULTS and c not in V3_DEFAULTS], path,
                 "results.csv")
        return df.reindex(columns=list(dict.fromkeys([*RESULTS_COLUMNS, *df.columns])))
    versions = sorted(set(df["schema_version"].astype(str).str.strip()))
    readable = {s for v in READABLE_VERSIONS for s in (str(v), f"{v}.0")}
    if len(versions) != 1 or versions[0] not in readable:
        raise BamError(f"unsupported results schema_version {', '.join(versions) or '(none)'} in {path}; "
                       f"accepted: {', '.join(map(str, READABLE_VERSIONS))} (one per file)")
    version = int(float(versions[0]))
    added = {**(V2_DEFAULTS if version == 1 else {}), **(V3_DEFAULTS if version < 3 else {})}
    for col, default in added.items():
        if col not in df.columns:
            df[col] = default
    _require(df, RESULTS_COLUMNS, path, "results.csv")
    df["schema_version"] = version
    for col in RESULTS_FLOATS:
        df[col] = pd.Series(_parse(df[col], col, path, what, float_cell, "a number or empty"), index=df.index,
                            dtype=float)
    for col in RESULTS_INTS:
        vals = _parse(df[col], col, path, what, float_cell, "an integer or empty")
        df[col] = pd.Series(vals, index=df.index, dtype=float).round().astype("Int64")
    df["k"] = pd.Series(_parse(df["k"], "k", path, what, _k_cell, "an integer or empty"), index=df.index, dtype=object)
    df["direction"] = df["direction"].astype(str).str.strip().str.lower()
    bad_dir = sorted(set(df["direction"]) - set(DIRECTIONS))
    if bad_dir:
        raise BamError(f"malformed results file {path}: direction {bad_dir[0]!r}; "
                       f"expected one of {', '.join(DIRECTIONS)}")
    for col in ("dataset", "model_pair", "method", "metric"):
        df[col] = df[col].astype(str).str.strip()
    if (df["method"] == "").any() or (df["metric"] == "").any():
        raise BamError(f"malformed results file {path}: empty method or metric cell; every row needs both")
    dup = df.duplicated(list(KEY_COLUMNS), keep=False)
    if dup.any():
        row = df[dup].iloc[0]
        key = ", ".join(f"{c}={row[c]!r}" for c in KEY_COLUMNS)
        raise BamError(f"malformed results file {path}: duplicate row for ({key}); expected one row per key")
    return df.reset_index(drop=True)


def _strict_bool(cell: Any) -> bool:
    """A required boolean cell (missing is an error)."""
    b = bool_cell(cell)
    if b is None:
        raise ValueError(cell)
    return b


def read_comparisons(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a ``comparisons.csv``: numbers as floats, ``resolved`` as bool."""
    path, what = Path(path), "comparisons file"
    df = _read_text_csv(path, what)
    _require(df, COMPARISON_COLUMNS, path, "comparisons.csv")
    for col in ("n_common", "delta", "ci_low", "ci_high", "p_value", "p_adjusted", "confidence"):
        df[col] = pd.Series(_parse(df[col], col, path, what, float_cell, "a number or empty"), index=df.index,
                            dtype=float)
    df["resolved"] = pd.Series(_parse(df["resolved"], "resolved", path, what, _strict_bool, "true/false"),
                               index=df.index, dtype=bool)
    return df


def read_records(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a per-image ``records.csv``: ``g`` as float, ``correct``/``valid`` as bool (a file written before
    schema 3 gets an empty ``method_version``)."""
    path, what = Path(path), "records file"
    df = _read_text_csv(path, what)
    for col, default in V3_DEFAULTS.items():
        if col not in df.columns and "method_hash" in df.columns:
            df.insert(list(df.columns).index("method_hash") + 1, col, default)
    _require(df, RECORD_COLUMNS, path, "records.csv")
    df["g"] = pd.Series(_parse(df["g"], "g", path, what, float_cell, "a number or empty"), index=df.index,
                        dtype=float)
    for col in ("correct", "valid"):
        df[col] = pd.Series(_parse(df[col], col, path, what, _strict_bool, "true/false or 1/0"), index=df.index,
                            dtype=bool)
    return df

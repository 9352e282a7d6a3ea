"""Reading and validating ``results.csv`` (schema version 1) and ``records.csv``.

The column lists are the contract in ``docs/architecture.md`` ("Metrics and reports"). Every
problem with a file is a one-line :class:`~bam.errors.BamError` naming the file and what is
expected, so ``bam report`` and ``bam compare`` fail cleanly on a truncated or foreign CSV.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bam.errors import BamError

SCHEMA_VERSION = 1

#: results.csv columns, schema version 1, in order.
RESULTS_COLUMNS: tuple[str, ...] = (
    "schema_version", "dataset", "manifest_hash", "model_pair", "model_hashes", "method", "method_params",
    "metric", "k", "value", "ci_low", "ci_high", "n_used", "n_excluded", "excluded_reasons", "direction",
    "chance", "images_per_s", "passes_per_image", "peak_memory_mb", "seed",
)
#: Columns parsed as floats (empty -> NaN).
RESULTS_FLOATS: tuple[str, ...] = (
    "value", "ci_low", "ci_high", "chance", "images_per_s", "passes_per_image", "peak_memory_mb",
)
#: Columns parsed as integers (empty -> missing).
RESULTS_INTS: tuple[str, ...] = ("n_used", "n_excluded")
#: Cost columns: never part of a regression decision.
COST_COLUMNS: tuple[str, ...] = ("images_per_s", "passes_per_image", "peak_memory_mb")
#: The identity of a results row (``k`` is "" except for curve rows).
KEY_COLUMNS: tuple[str, ...] = ("dataset", "model_pair", "method", "metric", "k")
DIRECTIONS: tuple[str, ...] = ("higher", "lower", "none")
#: The metric name of the RMCS curve points (one row per k).
CURVE_METRIC = "rmcs_curve"

#: records.csv columns that the report reads (method extras may follow).
RECORDS_COLUMNS: tuple[str, ...] = (
    "image_id", "subset", "input", "model_role", "model_hash", "method", "method_hash", "prediction",
    "label", "correct", "g", "valid",
)

_TRUE = {"true", "1", "yes", "t", "1.0"}
_FALSE = {"false", "0", "no", "f", "0.0", ""}


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
        raise BamError(
            f"malformed {what} {path}: line {bad[0]} has {len(body[bad[0] - 2])} fields, "
            f"expected {len(header)} (as in the header)"
        )
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise BamError(f"malformed {what} {path}: duplicate column(s) {', '.join(dup)}")
    return pd.DataFrame(body, columns=header, dtype=object)


def _to_float(series: pd.Series, column: str, path: Path, what: str) -> pd.Series:
    """Parse a string column as floats ("" and "nan" -> NaN); bad cells raise a BamError."""
    out = np.empty(len(series), dtype=float)
    for i, cell in enumerate(series.tolist()):
        s = str(cell).strip()
        if s == "" or s.lower() in {"nan", "na", "none", "null"}:
            out[i] = math.nan
            continue
        try:
            out[i] = float(s)
        except ValueError:
            raise BamError(
                f"malformed {what} {path}: column {column!r} row {i + 1} is {s!r}; expected a number or empty"
            ) from None
    return pd.Series(out, index=series.index, name=column)


def _to_bool(series: pd.Series, column: str, path: Path, what: str) -> pd.Series:
    """Parse a string column as booleans (true/false/1/0)."""
    out = np.empty(len(series), dtype=bool)
    for i, cell in enumerate(series.tolist()):
        s = str(cell).strip().lower()
        if s in _TRUE:
            out[i] = True
        elif s in _FALSE:
            out[i] = False
        else:
            raise BamError(
                f"malformed {what} {path}: column {column!r} row {i + 1} is {cell!r}; expected true/false or 1/0"
            )
    return pd.Series(out, index=series.index, name=column)


def _normalise_k(series: pd.Series, path: Path) -> pd.Series:
    """``k`` as a canonical string: "" for non-curve rows, else the integer ("3.0" -> "3")."""
    out = []
    for i, cell in enumerate(series.tolist()):
        s = str(cell).strip()
        if s == "" or s.lower() == "nan":
            out.append("")
            continue
        try:
            f = float(s)
        except ValueError:
            raise BamError(f"malformed results file {path}: column 'k' row {i + 1} is {s!r}; expected an integer or empty") from None
        if not f.is_integer():
            raise BamError(f"malformed results file {path}: column 'k' row {i + 1} is {s!r}; expected an integer or empty")
        out.append(str(int(f)))
    return pd.Series(out, index=series.index, name="k", dtype=object)


def read_results(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read and validate a ``results.csv`` (schema version 1).

    Returns a DataFrame with every schema column: floats for values/CIs/costs, nullable ints for
    counts, ``k`` as a canonical string ("" for non-curve rows), other columns as strings. Extra
    columns are kept. Raises a one-line BamError on a missing file, missing columns, another
    schema version, an unparsable number, an unknown direction or a duplicated row key.
    """
    path = Path(path)
    what = "results file"
    df = _read_text_csv(path, what)
    missing = [c for c in RESULTS_COLUMNS if c not in df.columns]
    if missing:
        raise BamError(
            f"not a bam results.csv (schema {SCHEMA_VERSION}): {path} lacks column(s) {', '.join(missing)}; "
            f"expected columns: {', '.join(RESULTS_COLUMNS)}"
        )
    versions = sorted(set(df["schema_version"].astype(str).str.strip()))
    if any(v not in {str(SCHEMA_VERSION), f"{SCHEMA_VERSION}.0"} for v in versions):
        raise BamError(
            f"unsupported results schema_version {', '.join(versions) or '(none)'} in {path}; "
            f"expected {SCHEMA_VERSION}"
        )
    df["schema_version"] = SCHEMA_VERSION
    for col in RESULTS_FLOATS:
        df[col] = _to_float(df[col], col, path, what)
    for col in RESULTS_INTS:
        df[col] = _to_float(df[col], col, path, what).round().astype("Int64")
    df["k"] = _normalise_k(df["k"], path)
    df["direction"] = df["direction"].astype(str).str.strip().str.lower()
    bad_dir = sorted(set(df["direction"]) - set(DIRECTIONS))
    if bad_dir:
        raise BamError(f"malformed results file {path}: direction {bad_dir[0]!r}; expected one of {', '.join(DIRECTIONS)}")
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


def read_records(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a per-image ``records.csv``: ``g`` as float, ``correct``/``valid`` as bool."""
    path = Path(path)
    what = "records file"
    df = _read_text_csv(path, what)
    missing = [c for c in RECORDS_COLUMNS if c not in df.columns]
    if missing:
        raise BamError(
            f"not a bam records.csv: {path} lacks column(s) {', '.join(missing)}; "
            f"expected at least: {', '.join(RECORDS_COLUMNS)}"
        )
    df["g"] = _to_float(df["g"], "g", path, what)
    df["correct"] = _to_bool(df["correct"], "correct", path, what)
    df["valid"] = _to_bool(df["valid"], "valid", path, what)
    return df


def parse_json_cell(text: Any) -> Any:
    """Decode a JSON cell (``method_params``, ``excluded_reasons``); non-JSON text is returned as is."""
    if not isinstance(text, str) or not text.strip():
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text

"""Per-image records as typed, columnar batches, and their one table (``records.csv``, SPEC §6).

A :class:`RecordBatch` holds the records of one method on one chunk of one unit: the shared
fields once, the per-image fields as tuples. :func:`records_frame` turns batches into the
``records.csv`` table (:data:`bam.schema.RECORD_COLUMNS`, then method extras sorted by name).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bam.schema import RECORD_COLUMNS, RECORD_ORDER


@dataclass(frozen=True)
class RecordBatch:
    """Records of one method on one chunk: image i has ``image_ids[i]``, ``g[i]``, ``status[i]``, ..."""

    method: str
    method_hash: str
    method_version: int
    model_role: str
    model_hash: str
    subset: str
    input: str
    image_ids: tuple[str, ...]
    prediction: tuple[int, ...]
    label: tuple[int, ...]
    g: tuple[float, ...]
    valid: tuple[bool, ...]
    status: tuple[str, ...]
    #: per image: did the IIR patch keep the prediction (None: not a patched input)
    patch_unchanged: tuple[bool, ...] | None = None
    #: method records (e.g. boundary_distance), name -> one float per image
    extras: Mapping[str, tuple[float, ...]] | None = None

    def frame(self) -> pd.DataFrame:
        """This batch as rows of ``records.csv`` (columns in schema order, extras after)."""
        n = len(self.image_ids)
        cols: dict[str, object] = {
            "image_id": list(self.image_ids), "subset": [self.subset] * n, "input": [self.input] * n,
            "model_role": [self.model_role] * n, "model_hash": [self.model_hash] * n, "method": [self.method] * n,
            "method_hash": [self.method_hash] * n, "method_version": [self.method_version] * n,
            "prediction": list(self.prediction), "label": list(self.label),
            "correct": [p == t for p, t in zip(self.prediction, self.label)], "g": list(self.g),
            "valid": list(self.valid), "status": list(self.status),
        }
        if self.patch_unchanged is not None:
            cols["patch_unchanged"] = list(self.patch_unchanged)
        for k, v in (self.extras or {}).items():
            cols[k] = list(v)
        return pd.DataFrame(cols)


def statuses(valid: np.ndarray, nonfinite: np.ndarray, g: np.ndarray, empty_mask: np.ndarray) -> np.ndarray:
    """Per-image record status: ok, method_failed, nonfinite, empty_mask or constant_map."""
    return np.select([~valid & (nonfinite > 0), ~valid, ~np.isfinite(g) & empty_mask, ~np.isfinite(g)],
                     ["nonfinite", "method_failed", "empty_mask", "constant_map"], default="ok")


def _floats(values: object, n: int) -> np.ndarray:
    """Cached numbers as float64 (None -> NaN)."""
    seq = list(values) if values is not None else [0.0] * n  # type: ignore[call-overload]
    return np.array([math.nan if v is None else float(v) for v in seq], dtype=float)


def batch_from_payload(fields: Mapping[str, str], ids: Sequence[str], preds: Mapping[str, Sequence[int]],
                       payload: Mapping[str, object], unchanged: Sequence[bool] | None,
                       method_version: int = 1) -> RecordBatch:
    """Records of one chunk from its (cached) method payload and predictions.

    ``fields``: method, method_hash, model_role, model_hash, subset, input; ``method_version``: the
    method's :attr:`~bam.methods.MethodInfo.version`.
    """
    n = len(ids)
    extras_in = payload.get("extras") or {}
    assert isinstance(extras_in, Mapping)
    g = _floats(payload["g"], n)
    valid = np.asarray([bool(v) for v in payload["valid"]], dtype=np.bool_)  # type: ignore[attr-defined]
    empty = np.asarray([bool(v) for v in payload.get("empty_mask", [False] * n)],  # type: ignore[attr-defined]
                       dtype=np.bool_)
    status = statuses(valid, np.nan_to_num(_floats(extras_in.get("nonfinite"), n)), g, empty)
    g = np.where(status == "ok", g, math.nan)
    extras = {str(k): tuple(_floats(v, n).tolist()) for k, v in extras_in.items()}
    return RecordBatch(method=fields["method"], method_hash=fields["method_hash"],
                       method_version=int(method_version), model_role=fields["model_role"],
                       model_hash=fields["model_hash"], subset=fields["subset"], input=fields["input"],
                       image_ids=tuple(ids), prediction=tuple(int(p) for p in preds["prediction"]),
                       label=tuple(int(t) for t in preds["label"]), g=tuple(g.tolist()),
                       valid=tuple(valid.tolist()), status=tuple(str(x) for x in status),
                       patch_unchanged=None if unchanged is None else tuple(bool(u) for u in unchanged),
                       extras=extras)


def records_frame(batches: Sequence[RecordBatch]) -> pd.DataFrame:
    """All records as one DataFrame in a deterministic order (method, role, input, subset, image_id)."""
    if not batches:
        return pd.DataFrame(columns=list(RECORD_COLUMNS))
    df = pd.concat([b.frame() for b in batches], ignore_index=True, sort=False)
    extra = sorted(c for c in df.columns if c not in RECORD_COLUMNS)
    df = df[list(RECORD_COLUMNS) + extra]
    df = df.sort_values(list(RECORD_ORDER), kind="stable")
    return df.reset_index(drop=True)


def records_for(frame: pd.DataFrame, method: str, image_ids: Sequence[str]) -> pd.DataFrame:
    """The records of ``method`` restricted to ``image_ids``."""
    return frame[(frame["method"] == method) & frame["image_id"].isin(list(image_ids))]

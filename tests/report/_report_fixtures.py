"""Helpers for the report/compare tests: tiny results.csv / records.csv files (results schema 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from bam.schema import RESULTS_COLUMNS

METHODS = ("gradcam", "gradient", "smoothgrad", "random", "edge")
METRICS = {  # metric -> (model pair, direction, chance)
    "mcs": ("obj|scene", "higher", 0.0),
    "idr": ("scene", "higher", 0.5),
    "iir": ("scene_only", "higher", ""),
    "rmcs": ("|".join(f"commonality-{k}" for k in range(1, 11)), "higher", 0.0),
}
BASE_VALUES = {"gradcam": 0.6, "gradient": 0.4, "smoothgrad": 0.3, "random": 0.0, "edge": 0.05}


def results_rows(values: dict[str, float] | None = None, curve_k: int = 9,
                 curve_direction: str = "none") -> list[dict[str, object]]:
    """Rows of a schema-2 results.csv: 4 metrics x methods plus RMCS curve points k = 1..curve_k.

    The format follows ``bam.evaluate.summarise``: model_pair = roles joined by "|", model_hashes =
    16-hex prefixes joined by "|".
    """
    values = dict(BASE_VALUES, **(values or {}))
    rows: list[dict[str, object]] = []
    for metric, (pair, direction, chance) in METRICS.items():
        for i, method in enumerate(METHODS):
            v = values[method] + 0.01 * list(METRICS).index(metric)
            rows.append(_row(method, metric, pair, "", v, direction, chance, i))
    for method in METHODS:
        for k in range(1, curve_k + 1):
            v = values[method] * (1 - k / 10)
            rows.append(_row(method, "rmcs_curve", f"commonality-{k}|commonality-10", k, v, curve_direction, 0.0, 0))
    return rows


def _row(method: str, metric: str, pair: str, k: object, value: float, direction: str, chance: object,
         i: int) -> dict[str, object]:
    return {
        "schema_version": 2, "dataset": "tiny", "manifest_hash": "ab" * 32, "model_pair": pair,
        "metric_params": "{}", "space": "pixel", "tier": "",
        "model_hashes": "|".join(("1" if n == 0 else "2") * 16 for n in range(pair.count("|") + 1)), "method": method,
        "method_params": json.dumps({"steps": 25} if method == "smoothgrad" else {}), "metric": metric, "k": k,
        "value": round(value, 6), "ci_low": round(value - 0.02, 6), "ci_high": round(value + 0.02, 6),
        "n_used": 90 - i, "n_excluded": 10 + i, "excluded_reasons": json.dumps({"misclassified": 10 + i}),
        "direction": direction, "chance": chance, "images_per_s": 100.0 + i, "passes_per_image": 1,
        "peak_memory_mb": 512.0, "seed": 0,
    }


def write_results(path: Path, rows: list[dict[str, object]]) -> Path:
    """Write rows as a results.csv with exactly the schema columns."""
    pd.DataFrame(rows, columns=list(RESULTS_COLUMNS)).to_csv(path, index=False)
    return path


def write_records(path: Path, methods: tuple[str, ...] = METHODS, n: int = 8, seed: int = 0) -> Path:
    """A records.csv with obj/scene rows per composite (and some scene_only rows to be ignored)."""
    rng = np.random.default_rng(seed)
    rows = []
    for method in methods:
        for i in range(n):
            image_id = f"img{i:03d}"
            g_obj, g_scene = rng.uniform(0, 1, size=2)
            for role, g in (("obj", g_obj), ("scene", g_scene)):
                rows.append({"image_id": image_id, "subset": role, "input": "composite", "model_role": role,
                             "model_hash": "h" + role, "method": method, "method_hash": "m" + method,
                             "prediction": 1, "label": 1, "correct": True, "g": g, "valid": True, "status": "ok"})
            rows.append({"image_id": image_id, "subset": "scene_only", "input": "scene_only", "model_role": "scene",
                         "model_hash": "hscene", "method": method, "method_hash": "m" + method,
                         "prediction": 1, "label": 1, "correct": True, "g": -5.0, "valid": True, "status": "ok"})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path

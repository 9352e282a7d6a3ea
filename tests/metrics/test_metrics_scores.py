"""MCS, IDR, IIR, RMCS over hand-made per-image records (SPEC §4.2-4.7)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bam.evaluate import bootstrap_ci
from bam.evaluate._bootstrap import row_rng
from bam.metrics import METRICS, get_metric_info, idr, iir, iir_hits, list_metrics, mcs, rmcs, spearman


def rec(role: str, inp: str, iid: str, g: float, correct: bool = True, status: str | None = None,
        **extra: object) -> dict[str, object]:
    if status is None:
        status = "ok" if math.isfinite(g) else "constant_map"
    return {"image_id": iid, "subset": inp, "input": inp, "model_role": role, "model_hash": role[:4],
            "method": "m", "method_hash": "h", "prediction": 0, "label": 0 if correct else 1, "correct": correct,
            "g": g, "valid": status not in ("method_failed", "nonfinite"), "status": status, **extra}


def test_registry_metadata() -> None:
    assert list_metrics() == ["mcs", "idr", "iir", "rmcs", "tcav_mcs", "tcav_rmcs"]
    assert get_metric_info("tcav_mcs").concept_method == "tcav" and get_metric_info("mcs").concept_method is None
    info = get_metric_info("mcs")
    assert (info.direction, info.range, info.chance) == ("higher", (-1.0, 1.0), 0.0)
    assert get_metric_info("idr").chance == 0.5
    assert {n.role for n in info.needs(10)} == {"obj", "scene"}
    rmcs_info = get_metric_info("rmcs")
    assert [n.role for n in rmcs_info.needs(3)] == ["commonality-3"]  # the reference model, always
    assert [n.role for n in rmcs_info.optional_needs(3)] == ["commonality-1", "commonality-2"]  # curve points
    assert rmcs_info.min_optional == 2 and rmcs_info.context == ("num_k",)
    assert dict(get_metric_info("iir").defaults) == {"threshold": 0.1}
    assert METRICS.get("iir") is iir


def test_mcs_hand_value_with_exclusions() -> None:
    rows = [rec("obj", "composite", i, g) for i, g in zip("abcdef", [0.8, 0.6, 0.5, math.nan, 0.9, 0.7])]
    rows += [rec("scene", "composite", "a", 0.2), rec("scene", "composite", "b", 0.4),
             rec("scene", "composite", "c", 0.1, correct=False), rec("scene", "composite", "d", 0.3),
             rec("scene", "composite", "e", math.nan, status="method_failed")]
    v = mcs(pd.DataFrame(rows))  # f has no scene record
    assert v.value == pytest.approx(((0.8 - 0.2) + (0.6 - 0.4)) / 2)
    assert v.n_used == 2 and v.image_ids == ("a", "b")
    assert dict(v.excluded) == {"incorrect": 1, "constant_map": 1, "method_failed": 1, "missing": 1}
    assert v.n_excluded == 4


def test_empty_intersection_gives_nan_with_counts() -> None:
    rows = [rec("obj", "composite", str(i), 0.5, correct=False) for i in range(3)]
    rows += [rec("scene", "composite", str(i), 0.5) for i in range(3)]
    v = mcs(pd.DataFrame(rows))
    assert math.isnan(v.value) and v.n_used == 0 and dict(v.excluded) == {"incorrect": 3}
    assert all(math.isnan(x) for x in bootstrap_ci(v.per_image, v.statistic, 100, 0.95, np.random.default_rng(0)))


def test_idr_hand_value() -> None:
    g_so = [0.3, 0.6, 0.2, 0.5]
    g_co = [0.4, 0.5, 0.1, 0.5]  # hits: no, yes, yes, no (ties are not >)
    rows = [rec("scene", "scene_only", str(i), g) for i, g in enumerate(g_so)]
    rows += [rec("scene", "composite", str(i), g) for i, g in enumerate(g_co)]
    rows += [rec("scene", "scene_only", "9", 0.9, correct=False), rec("scene", "composite", "9", 0.0)]
    v = idr(pd.DataFrame(rows))
    assert v.value == 0.5 and v.n_used == 4 and dict(v.excluded) == {"incorrect": 1}


def test_iir_threshold_logic() -> None:
    hits = iir_hits(np.array([0.5, 0.5, 0.5, 0.0, 0.5]), np.array([0.54, 0.56, 0.46, 0.0, 0.5]), 0.1)
    assert hits.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]  # strict <; g(x) = 0 never counts
    rows = [rec("scene_only", "iir_scene", "a", 0.5), rec("scene_only", "iir_patch", "a", 0.54, patch_unchanged=True),
            rec("scene_only", "iir_scene", "b", 0.5), rec("scene_only", "iir_patch", "b", 0.7, patch_unchanged=True),
            rec("scene_only", "iir_scene", "c", 0.5), rec("scene_only", "iir_patch", "c", 0.5, patch_unchanged=False)]
    v = iir(pd.DataFrame(rows))
    assert v.value == 0.5 and v.n_used == 2 and dict(v.excluded) == {"patch_changed": 1}
    assert iir(pd.DataFrame(rows), threshold=0.5).value == 1.0


def _rmcs_rows(curve: list[float], n: int = 3) -> list[dict[str, object]]:
    big = len(curve) + 1
    rows = [rec(f"commonality-{big}", "common_in_scene", str(i), 0.1) for i in range(n)]
    for k, v in enumerate(curve, start=1):
        rows += [rec(f"commonality-{k}", "common_in_scene", str(i), 0.1 + v) for i in range(n)]
    return rows


def test_rmcs_sign_and_curve() -> None:
    dec = rmcs(pd.DataFrame(_rmcs_rows([0.5, 0.3, 0.1])))
    assert dec.value == pytest.approx(0.4)  # the fitted line falls 0.4 from k = 1 to k = 3: higher is better
    assert [c.k for c in dec.curve] == [1, 2, 3]
    assert [c.metric for c in dec.curve] == ["rmcs_curve"] * 3
    assert [round(c.value, 12) for c in dec.curve] == [0.5, 0.3, 0.1]
    inc = rmcs(pd.DataFrame(_rmcs_rows([0.1, 0.2, 0.4])))
    assert inc.value == pytest.approx(-0.3)  # least-squares slope 0.15 per k over a span of 2
    flat = rmcs(pd.DataFrame(_rmcs_rows([0.2, 0.2, 0.2])))
    assert flat.value == 0.0 and not math.copysign(1, flat.value) < 0
    assert spearman(np.array([1, 2, 3, 4]), np.array([1.0, 3.0, 2.0, 4.0])) == pytest.approx(0.8)


def test_bootstrap_ci_contains_value_and_is_seeded() -> None:
    x = np.random.default_rng(1).normal(0.3, 0.2, size=200)
    v = mcs(pd.DataFrame([rec("obj", "composite", str(i), 0.5 + d / 2) for i, d in enumerate(x)]
                         + [rec("scene", "composite", str(i), 0.5 - d / 2) for i, d in enumerate(x)]))
    lo, hi = bootstrap_ci(v.per_image, v.statistic, 1000, 0.95, row_rng(0, "m", "mcs"))
    assert lo < v.value < hi
    assert (lo, hi) == bootstrap_ci(v.per_image, v.statistic, 1000, 0.95, row_rng(0, "m", "mcs"))
    se = x.std() / math.sqrt(len(x))
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.2)
    rv = rmcs(pd.DataFrame(_rmcs_rows([0.5, 0.3, 0.1], n=8)))
    lo, hi = bootstrap_ci(rv.per_image, rv.statistic, 50, 0.95, row_rng(0, "m", "rmcs"))
    assert lo <= rv.value <= hi

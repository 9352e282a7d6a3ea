"""The RMCS summary (fitted fall of the MCS_k curve, bam.metrics.contrast.CurveFall) on constructed
curves with known answers, and its null: a noise curve at 0 gets a CI containing 0 about 95% of the time."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bam.evaluate._bootstrap import bootstrap_ci, row_rng
from bam.metrics import rmcs
from bam.metrics.contrast import CurveFall

KS = np.arange(1.0, 10.0)  # k = 1..9 against commonality-10, as on the default run


def _records(diffs: np.ndarray) -> pd.DataFrame:
    """records of one method: image i at commonality-k has g = 0.5 + diffs[i, k-1], commonality-K has 0.5."""
    n, m = diffs.shape

    def row(i: int, k: int, g: float) -> dict[str, object]:
        return {"image_id": f"i{i}", "subset": "common_in_scene", "input": "common_in_scene",
                "model_role": f"commonality-{k}", "model_hash": f"h{k}", "method": "m", "method_hash": "h",
                "prediction": 0, "label": 0, "correct": True, "g": g, "valid": True, "status": "ok"}

    rows = [row(i, m + 1, 0.5) for i in range(n)]
    rows += [row(i, k, 0.5 + float(diffs[i, k - 1])) for k in range(1, m + 1) for i in range(n)]
    return pd.DataFrame(rows)


def _ci(per_image: np.ndarray, stat: CurveFall, seed: int = 0, n_boot: int = 1000) -> tuple[float, float]:
    return bootstrap_ci(per_image, stat, n_boot, 0.95, row_rng(seed, "test", "rmcs"))


def test_strictly_falling_curve_scores_its_fall() -> None:
    rng = np.random.default_rng(0)
    curve = 0.4 - 0.05 * (KS - 1)  # 0.4 -> 0.0: falls 0.4 from k = 1 to k = 9
    diffs = curve + rng.normal(0.0, 0.02, size=(100, len(KS)))
    v = rmcs(_records(diffs))
    assert [c.k for c in v.curve] == list(range(1, 10)) and v.n_used == 100
    assert v.value == pytest.approx(0.4, abs=0.01)
    lo, hi = _ci(v.per_image, v.statistic)
    assert 0.0 < lo < 0.4 < hi
    exact = rmcs(_records(np.tile(curve, (5, 1))))  # no noise: exactly 0.4
    assert exact.value == pytest.approx(0.4, abs=1e-12)
    assert rmcs(_records(np.tile(curve[::-1], (5, 1)))).value == pytest.approx(-0.4, abs=1e-12)  # rising


def test_constant_curves_score_zero() -> None:
    zero = rmcs(_records(np.zeros((20, 9))))  # a model-independent map (edge, center): every difference 0
    assert zero.value == 0.0 and not math.copysign(1.0, zero.value) < 0
    assert _ci(zero.per_image, zero.statistic) == (0.0, 0.0)
    level = rmcs(_records(np.full((20, 9), 0.2)))  # a constant non-zero curve has no trend either
    assert level.value == pytest.approx(0.0, abs=1e-12)


def test_flat_noisy_curve_is_at_chance_and_small() -> None:
    """Noise of a few thousandths around 0 (the random control): a summary of the size of the noise,
    whose CI contains 0; a rank correlation of the same points would be anywhere in [-1, 1]."""
    diffs = np.random.default_rng(3).normal(0.0, 0.01, size=(60, len(KS)))
    v = rmcs(_records(diffs))
    lo, hi = _ci(v.per_image, v.statistic)
    assert lo < 0.0 < hi
    points = np.array([c.value for c in v.curve])
    # |fall| <= (max k - min k) * |slope| <= (8/3) * max |MCS_k| for nine points in [-e, e]
    assert abs(v.value) <= 8 / 3 * np.abs(points).max() + 1e-12
    assert abs(v.value) < 0.02


def test_null_coverage_is_nominal() -> None:
    """Over 200 noise-only data sets (unequal images per k, as the correctness filter leaves), the
    95% bootstrap CI of the fitted fall contains the true value 0 in 88-99% of them."""
    rng = np.random.default_rng(7)
    stat = CurveFall(KS)
    hits = 0
    for rep in range(200):
        mat = rng.normal(0.0, 0.01, size=(50, len(KS))) + rng.normal(0.0, 0.01, size=(50, 1))  # per-image offset
        mat[rng.random(mat.shape) < 0.25] = np.nan
        lo, hi = bootstrap_ci(mat, stat, 400, 0.95, row_rng(rep, "null"))
        hits += lo <= 0.0 <= hi
    assert 0.88 <= hits / 200 <= 0.99


def test_over_resamples_equals_one_at_a_time() -> None:
    """The vectorised bootstrap path = the statistic on each resample (with missing entries, an
    all-NaN column, a single-point curve and constant curves among the resamples)."""
    rng = np.random.default_rng(1)
    stat = CurveFall(KS)
    mats = rng.normal(0.0, 0.1, size=(200, 12, 9))
    mats[rng.random(mats.shape) < 0.2] = np.nan
    mats[5, :, 3] = np.nan  # a column with no finite entry: fit the other eight points
    mats[6, :, 1:] = np.nan  # one point left: no line, NaN
    mats[7] = 0.5  # a constant curve
    one = np.array([stat(m) for m in mats])
    many = stat.over_resamples(mats)
    assert np.allclose(many, one, rtol=0, atol=1e-12, equal_nan=True)
    assert np.isnan(many[6]) and np.isnan(many).sum() == 1 and many[7] == pytest.approx(0.0, abs=1e-12)
    # a missing k keeps the span: 8 points on the line 0.4 - 0.05 (k - 1) still fall 0.4 over k = 1..9
    line = np.tile(0.4 - 0.05 * (KS - 1), (3, 1))
    line[:, 4] = np.nan
    assert stat(line) == pytest.approx(0.4, abs=1e-12)

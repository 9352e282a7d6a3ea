"""TCAV MCS / RMCS over hand-written records (known answers) and their bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bam.concepts import RECORD_COLUMNS
from bam.errors import BamError
from bam.metrics.tcav import tcav_mcs, tcav_rmcs, tcav_score


def _rows(role: str, image: str, positives: list[bool], layer: str = "block_layer3", correct: bool = True,
          kind: str = "concept", summary: bool = True) -> list[dict[str, object]]:
    return [{"model_role": role, "model_hash": "h", "layer": layer, "summary": summary, "target_class": 0,
             "target_name": "t", "kind": kind, "run": r, "concept": "c", "negative": f"random500_{r}",
             "image_id": image, "prediction": 0, "correct": correct, "derivative": 1.0 if p else -1.0,
             "positive": p} for r, p in enumerate(positives)]


def _frame(*parts: list[dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame([r for p in parts for r in p], columns=RECORD_COLUMNS)


def test_tcav_mcs_known_answer_paired_per_image() -> None:
    rec = _frame(_rows("obj", "A", [True, True]), _rows("obj", "B", [True, False]), _rows("obj", "C", [True, True]),
                 _rows("scene", "A", [False, False], correct=False), _rows("scene", "B", [True, True]),
                 _rows("scene", "A", [True, True], kind="random"),  # null runs are not part of the score
                 _rows("obj", "A", [False, False], layer="logit", summary=False),
                 _rows("scene", "A", [False, False], layer="logit", summary=False))
    v = tcav_mcs(rec)
    assert v.image_ids == ("A", "B") and v.n_used == 2
    np.testing.assert_allclose(v.per_image, [1.0, -0.5])
    assert v.value == pytest.approx(0.25) and dict(v.excluded) == {"missing": 1}
    assert v.statistic(v.per_image[[0, 0]]) == 1.0  # a bootstrap resample
    assert tcav_mcs(rec, layer="logit").value == 0.0
    only = tcav_mcs(rec, correct_only=True)
    assert only.image_ids == ("B",) and dict(only.excluded) == {"missing": 1, "incorrect": 1}
    assert tcav_score(rec, "obj").value == pytest.approx((1 + 0.5 + 1) / 3)


def test_tcav_rmcs_decreasing_curve_scores_its_fall() -> None:
    parts = []
    for k in range(1, 5):  # share of positive runs (4 runs): (4 - k) / 4 on both images
        for img in ("A", "B"):
            parts.append(_rows(f"commonality-{k}", img, [i < 4 - k for i in range(4)]))
    rec = _frame(*parts)
    v = tcav_rmcs(rec)
    assert [c.k for c in v.curve] == [1, 2, 3] and [c.metric for c in v.curve] == ["tcav_rmcs_curve"] * 3
    np.testing.assert_allclose([c.value for c in v.curve], [0.75, 0.5, 0.25])
    assert v.value == pytest.approx(0.5) and v.per_image.shape == (2, 3)  # 0.75 -> 0.25 over k = 1..3
    flipped = rec.assign(model_role=rec["model_role"].map(
        {"commonality-1": "commonality-3", "commonality-3": "commonality-1"}).fillna(rec["model_role"]))
    # k = 1 and 3 swapped, reference commonality-4 unchanged: the curve rises by 0.5
    np.testing.assert_allclose([c.value for c in tcav_rmcs(flipped).curve], [0.25, 0.5, 0.75])
    assert tcav_rmcs(flipped).value == pytest.approx(-0.5)


def test_bad_input() -> None:
    rec = _frame(_rows("obj", "A", [True]), _rows("scene", "A", [False]))
    with pytest.raises(BamError, match="tcav layer 'block_layer9' is not in the records; accepted: block_layer3"):
        tcav_mcs(rec, layer="block_layer9")
    with pytest.raises(BamError, match="no model role 'scene'"):
        tcav_mcs(rec[rec["model_role"] == "obj"])
    with pytest.raises(BamError, match="tcav_rmcs needs commonality-k models"):
        tcav_rmcs(rec)
    with pytest.raises(BamError, match="no summary layer"):
        tcav_mcs(rec.assign(summary=False))

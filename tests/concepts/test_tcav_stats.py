"""The t-test of TCAV's significance check: closed-form Student t against hand-derived values and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bam.concepts import t_two_sided_p, ttest_ind


def test_t_distribution_known_values() -> None:
    # df = 1 (Cauchy): P(|T| >= 1) = 1 - 2 atan(1) / pi = 1/2
    assert t_two_sided_p(1.0, 1) == pytest.approx(0.5, abs=1e-12)
    # df = 2: P(|T| >= t) = 1 - t / sqrt(t^2 + 2); t = 2 -> 1 - 2/sqrt(6)
    assert t_two_sided_p(2.0, 2) == pytest.approx(1 - 2 / math.sqrt(6), abs=1e-12)
    # df = 3, t = 1: theta = pi/6, A = 2/pi (pi/6 + sin cos) -> 1 - A
    theta = math.pi / 6
    assert t_two_sided_p(1.0, 3) == pytest.approx(1 - 2 / math.pi * (theta + math.sin(theta) * math.cos(theta)))
    # df = 4: A = sin(theta) (1 + cos^2(theta) / 2)
    theta = math.atan(1.5 / 2)
    assert t_two_sided_p(-1.5, 4) == pytest.approx(1 - math.sin(theta) * (1 + math.cos(theta) ** 2 / 2))
    assert t_two_sided_p(0.0, 7) == pytest.approx(1.0)
    assert t_two_sided_p(math.inf, 5) == 0.0
    assert math.isnan(t_two_sided_p(math.nan, 5))
    with pytest.raises(ValueError):
        t_two_sided_p(1.0, 0)


def test_ttest_hand_example_and_edge_cases() -> None:
    # a = [1, 1], b = [0, 0.5]: means 1 and 0.25, pooled var = (0 + 0.125) / 2, t = 0.75 / sqrt(0.0625)
    t, p = ttest_ind([1.0, 1.0], [0.0, 0.5])
    assert t == pytest.approx(3.0)
    assert p == pytest.approx(1 - 3 / math.sqrt(11))
    t, p = ttest_ind([1.0, 1.0], [0.0, 0.0])  # constant samples with different means
    assert t == math.inf and p == 0.0
    t, p = ttest_ind([0.5, 0.5], [0.5, 0.5])  # nothing to test
    assert math.isnan(t) and math.isnan(p)
    assert all(math.isnan(v) for v in ttest_ind([1.0], [2.0]))


def test_matches_scipy_when_installed() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for n1, n2 in [(2, 2), (3, 5), (10, 7), (50, 60)]:
        a, b = rng.normal(0.6, 0.2, n1), rng.normal(0.5, 0.3, n2)
        t, p = ttest_ind(list(a), list(b))
        ref = stats.ttest_ind(a, b)
        assert t == pytest.approx(ref.statistic, rel=1e-10) and p == pytest.approx(ref.pvalue, rel=1e-8, abs=1e-14)
    for df in (1, 2, 3, 8, 9, 30, 301):
        for t in (0.1, 1.0, 2.5, 6.0):
            assert t_two_sided_p(t, df) == pytest.approx(2 * stats.t.sf(t, df), rel=1e-9, abs=1e-13)

"""Known answers for the statistics over training seeds: the two-level bootstrap and the replication rate."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bam.metrics._base import MetricValue, mean_statistic
from bam.replication import replication, seed_replicates, two_level
from bam.stats import paired_difference


def test_two_level_without_image_noise_is_the_bootstrap_over_seeds() -> None:
    # two seeds, values 0.2 and 0.0, no spread over images: the outer resample draws {0.2, 0.2},
    # {0.2, 0.0} or {0.0, 0.0} with probabilities 1/4, 1/2, 1/4, so the pooled value is 0.1, its
    # resamples are 0.2 / 0.1 / 0.0, the SE is sqrt(0.005) and the 95% interval is [0, 0.2]
    n_boot = 4000
    reps = [np.full(2 * n_boot, 0.2), np.full(2 * n_boot, 0.0)]
    p = two_level([0.2, 0.0], reps, n_boot, 0.95, np.random.default_rng(0))
    assert p.value == pytest.approx(0.1) and p.n_seeds == 2
    assert (p.ci_low, p.ci_high) == pytest.approx((0.0, 0.2))
    assert p.se == pytest.approx(math.sqrt(0.005), rel=0.05)
    assert p.p_value == pytest.approx(math.erfc(1.0), abs=0.02)  # |0.1| / 0.0707 = sqrt(2) SE
    # a seed without a value is left out; none at all gives NaN
    one = two_level([0.2, math.nan], [np.full(n_boot, 0.2), []], n_boot, 0.95, np.random.default_rng(0))
    assert one.n_seeds == 1 and one.value == pytest.approx(0.2) and one.ci_low == pytest.approx(0.2)
    assert math.isnan(two_level([math.nan], [[]], 10, 0.95, np.random.default_rng(0)).value)


def test_two_level_keeps_the_image_noise_of_each_draw() -> None:
    # one seed, so the outer level is fixed: the interval is the image bootstrap of that seed
    x = np.random.default_rng(1).normal(0.5, 0.1, size=400)
    n_boot = 2000
    reps = seed_replicates(x, mean_statistic, n_boot, np.random.default_rng(2))
    p = two_level([float(x.mean())], [reps], n_boot, 0.95, np.random.default_rng(3))
    half = 1.96 * 0.1 / math.sqrt(400)
    assert p.ci_low == pytest.approx(x.mean() - half, abs=0.003) and p.ci_high == pytest.approx(x.mean() + half,
                                                                                                abs=0.003)


def _seed_values(a: np.ndarray, b: np.ndarray, seed: int) -> object:
    """A SeedValues of one metric with methods a and b on the same images."""
    from bam.evaluate.pooled import SeedValues

    ids = tuple(f"im{i:04d}" for i in range(len(a)))

    def value(x: np.ndarray) -> MetricValue:
        return MetricValue("mcs", float(x.mean()), len(x), {}, x, ids, mean_statistic)

    return SeedValues(folder=__import__("pathlib").Path(f"seed-{seed}"), seed=seed, n_boot=1000, confidence=0.95,
                      directions={"mcs": "higher"}, values={("standard", "mcs", "a"): value(a),
                                                            ("standard", "mcs", "b"): value(b)})


def test_a_between_seed_offset_unresolves_a_pair_that_one_seed_resolves() -> None:
    from bam.evaluate.pooled import pooled_tables

    noise = np.random.default_rng(0).normal(0, 0.01, size=(4, 300))
    # seed 0: a beats b by 0.2 on every image; seed 1: they tie (the training run moved b up by 0.2)
    a0, b0 = 0.3 + noise[0], 0.1 + noise[1]
    a1, b1 = 0.3 + noise[2], 0.3 + noise[3]
    ids = [f"im{i:04d}" for i in range(300)]
    one_seed = paired_difference((ids, a0), (ids, b0), mean_statistic, 1000, 0.95, np.random.default_rng(0))
    assert one_seed.ci_low > 0.19 and one_seed.p_value < 1e-6  # resolved within seed 0
    pooled, comps = pooled_tables([_seed_values(a0, b0, 0), _seed_values(a1, b1, 1)])  # type: ignore[list-item]
    pair = comps.iloc[0]
    assert (pair["method_a"], pair["method_b"]) == ("a", "b")
    assert pair["delta"] == pytest.approx(0.1, abs=0.003)
    assert pair["ci_low"] == pytest.approx(0.0, abs=0.01) and pair["ci_high"] == pytest.approx(0.2, abs=0.01)
    assert pair["p_value"] == pytest.approx(math.erfc(1.0), abs=0.03) and not pair["resolved"]
    by = pooled.set_index("method")
    assert by.loc["a", "tier"] == by.loc["b", "tier"] == "a"  # one tier: not resolved when pooled
    assert by.loc["b", "value"] == pytest.approx(0.2, abs=0.003)
    assert by.loc["b", "ci_low"] == pytest.approx(0.1, abs=0.01) and by.loc["b", "ci_high"] == pytest.approx(0.3,
                                                                                                           abs=0.01)
    assert by.loc["a", "ci_high"] - by.loc["a", "ci_low"] < 0.01  # a did not move between seeds
    # with the same offset in both seeds the pooled comparison resolves it
    _, same = pooled_tables([_seed_values(a0, b0, 0), _seed_values(a1, b0, 1)])  # type: ignore[list-item]
    assert bool(same.iloc[0]["resolved"]) and same.iloc[0]["ci_low"] > 0.19


def test_replication_rate_on_hand_made_comparisons() -> None:
    seed0 = {("a", "b"): (0.2, True), ("a", "c"): (0.1, True), ("b", "c"): (-0.05, False)}
    seed1 = {("b", "a"): (-0.1, False),  # same sign as a - b = +0.2, given the other way round
             ("a", "c"): (-0.02, False),  # opposite sign
             ("b", "c"): (0.3, True)}  # resolved here; seed 0 has the opposite sign
    seed2 = {("a", "b"): (0.0, False)}  # a zero difference does not replicate
    rep = replication([seed0, seed1])
    assert (rep.replicated, rep.checked) == (1, 3) and rep.rate == pytest.approx(1 / 3)
    rep3 = replication([seed0, seed1, seed2])  # (a, b) from seed 0 is checked in seeds 1 and 2
    assert (rep3.replicated, rep3.checked) == (1, 4)
    assert math.isnan(replication([seed2, {("a", "b"): (0.1, False)}]).rate)  # nothing resolved

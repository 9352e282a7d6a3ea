"""Known answers for the ranking statistics: paired bootstrap, Holm, letters, Kendall's tau and W."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bam.metrics._base import mean_statistic
from bam.stats import holm, kendall_tau, kendall_w, letters, mean_pairwise_tau, paired_difference


def _slow_paired(a: dict[str, float], b: dict[str, float], n_boot: int, confidence: float,
                 seed: int) -> tuple[float, float, float]:
    """The definition, one resample at a time: same images for both, difference of means."""
    common = [i for i in a if i in b]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(common), size=(n_boot, len(common)))
    diffs = []
    for row in idx:
        pick = [common[k] for k in row]
        diffs.append(sum(a[i] for i in pick) / len(pick) - sum(b[i] for i in pick) / len(pick))
    lo, hi = np.quantile(diffs, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    delta = sum(a[i] for i in common) / len(common) - sum(b[i] for i in common) / len(common)
    return delta, float(lo), float(hi)


def test_paired_bootstrap_equals_the_slow_reference() -> None:
    rng = np.random.default_rng(0)
    ids_a = [f"i{k}" for k in range(40)]
    ids_b = [f"i{k}" for k in range(5, 50)]  # only i5..i39 are common
    va, vb = rng.normal(0.3, 0.2, 40), rng.normal(0.2, 0.2, 45)
    got = paired_difference((ids_a, va), (ids_b, vb), mean_statistic, 500, 0.95, np.random.default_rng(7))
    want = _slow_paired(dict(zip(ids_a, va)), dict(zip(ids_b, vb)), 500, 0.95, 7)
    assert got.n_common == 35
    assert got.delta == pytest.approx(want[0]) and got.ci_low == pytest.approx(want[1])
    assert got.ci_high == pytest.approx(want[2])


def test_paired_bootstrap_known_answers() -> None:
    ids = [str(k) for k in range(30)]
    a = np.random.default_rng(1).random(30)
    # a constant per-image offset: every resample has the same difference, no uncertainty at all
    d = paired_difference((ids, a), (ids, a - 0.1), mean_statistic, 200, 0.95, np.random.default_rng(0))
    assert d.delta == pytest.approx(0.1) and d.ci_low == pytest.approx(0.1) and d.ci_high == pytest.approx(0.1)
    assert d.p_value == 0.0
    # a method against itself: zero difference, p = 1
    same = paired_difference((ids, a), (ids, a), mean_statistic, 200, 0.95, np.random.default_rng(0))
    assert same.delta == 0.0 and same.p_value == 1.0
    # pairing matters: b = a + noise is resolved paired, although the two CIs of the means overlap
    noise = np.random.default_rng(2).normal(0, 0.01, 30)
    tight = paired_difference((ids, a + 0.02 + noise), (ids, a), mean_statistic, 1000, 0.95, np.random.default_rng(3))
    assert tight.ci_low > 0 and tight.p_value < 1e-6
    assert paired_difference((["x"], a[:1]), (["y"], a[:1]), mean_statistic, 10, 0.95,
                             np.random.default_rng(0)).n_common == 0


def test_paired_bootstrap_on_a_matrix_statistic() -> None:
    """Curve statistics (RMCS: a statistic of a [images, k] matrix) resample image rows jointly."""
    ids = [str(k) for k in range(20)]
    rng = np.random.default_rng(4)
    ma, mb = rng.random((20, 3)), rng.random((20, 3))

    def col0(m: np.ndarray) -> float:
        return float(m[:, 0].mean())

    d = paired_difference((ids, ma), (ids, mb), col0, 300, 0.9, np.random.default_rng(5))
    ref = paired_difference((ids, ma[:, 0]), (ids, mb[:, 0]), mean_statistic, 300, 0.9, np.random.default_rng(5))
    assert d.delta == pytest.approx(ref.delta) and d.ci_low == pytest.approx(ref.ci_low)


def test_holm_on_a_known_p_value_set() -> None:
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(0.06, 1*0.04)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.01, math.nan, 0.02])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_compact_letter_display() -> None:
    resolved = {frozenset(p) for p in (("A", "C"), ("A", "D"), ("B", "D"))}
    got = letters(["A", "B", "C", "D"], lambda x, y: frozenset((x, y)) in resolved)
    assert got == {"A": "a", "B": "ab", "C": "bc", "D": "c"}
    assert letters(["A", "B"], lambda x, y: False) == {"A": "a", "B": "a"}
    assert letters(["A", "B", "C"], lambda x, y: True) == {"A": "a", "B": "b", "C": "c"}


def test_kendall_tau_and_w_on_hand_made_rankings() -> None:
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    same = np.array([[0.1, 0.5, 0.9]] * 4)
    assert kendall_w(same) == pytest.approx(1.0) and mean_pairwise_tau(same) == pytest.approx(1.0)
    assert kendall_w(np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])) == pytest.approx(0.0)
    # ranks [1,2,3], [1,3,2], [2,1,3]: rank sums 4, 6, 8 -> S = 8 -> W = 12*8 / (3^2 * (27 - 3)) = 4/9
    scores = np.array([[1.0, 2.0, 3.0], [1.0, 3.0, 2.0], [2.0, 1.0, 3.0]])
    assert kendall_w(scores) == pytest.approx(4 / 9)
    assert mean_pairwise_tau(scores) == pytest.approx(np.mean([1 / 3, 1 / 3, -1 / 3]))


def test_stability_tables_on_constructed_repeats() -> None:
    import pandas as pd

    from bam.evaluate.stability import repeats_table, stability_table

    def results(values: dict[str, float], seed: int) -> pd.DataFrame:
        return pd.DataFrame([{"metric": "mcs", "method": m, "value": v, "seed": seed, "k": ""} for m, v in values.items()])

    reps = [results({"a": 0.3, "b": 0.2, "c": 0.1, "random": 0.0}, 0),
            results({"a": 0.35, "b": 0.1, "c": 0.15, "random": 0.01}, 1)]
    comps = [pd.DataFrame({"metric": ["mcs"] * 3, "method_a": ["a", "a", "b"], "method_b": ["b", "c", "c"],
                           "delta": [0.1, 0.2, 0.1], "resolved": [True, True, False]}),
             pd.DataFrame({"metric": ["mcs"] * 3, "method_a": ["a", "a", "c"], "method_b": ["c", "b", "b"],
                           "delta": [0.2, 0.25, 0.05], "resolved": [True, False, False]})]
    stab = stability_table(reps, comps, frozenset({"random"}), {}).iloc[0]
    # rankings a > b > c and a > c > b: tau = 1/3 (one of three pairs swapped)
    assert stab["n_methods"] == 3 and stab["mean_tau"] == pytest.approx(1 / 3)
    assert stab["kendall_w"] == pytest.approx(kendall_w(np.array([[0.3, 0.2, 0.1], [0.35, 0.1, 0.15]])))
    assert stab["resolved_pairs"] == "[2, 1]" and stab["resolved_pairs_mean"] == 1.5 and stab["n_pairs"] == 3
    # resolved: (a, b), (a, c) in repeat 0, (a, c) in repeat 1; each has the same sign in the other repeat
    assert (stab["replicated"], stab["replication_checks"], stab["replication_rate"]) == (3, 3, 1.0)
    rep = repeats_table(reps, {}).set_index("method")
    assert rep.loc["a", "mean"] == pytest.approx(0.325) and rep.loc["a", "sd"] == pytest.approx(np.std([0.3, 0.35],
                                                                                                       ddof=1))
    assert rep.loc["b", "n_repeats"] == 2 and rep.loc["b", "values"] == "[0.2, 0.1]"


def test_stability_table_never_ranks_two_model_kinds_together() -> None:
    import json

    import pandas as pd

    from bam.evaluate.stability import repeats_table, stability_table

    kinds = {"a": "standard", "b": "standard", "c": "standard", "inv_p": "invertible", "inv_t": "invertible"}

    def results(values: dict[str, float]) -> pd.DataFrame:
        return pd.DataFrame([{"metric": "mcs", "method": m, "value": v, "seed": 0, "k": ""} for m, v in values.items()])

    def comps(rows: list[tuple[str, str, str, float, bool]]) -> pd.DataFrame:
        return pd.DataFrame(rows, columns=["model_kind", "method_a", "method_b", "delta", "resolved"]).assign(
            metric="mcs")

    # the standard order a > b > c never changes; the invertible pair swaps, and its values sit between
    reps = [results({"a": 0.4, "b": 0.2, "c": 0.0, "inv_p": 0.3, "inv_t": 0.1}),
            results({"a": 0.4, "b": 0.2, "c": 0.0, "inv_p": -0.1, "inv_t": 0.1})]
    cs = [comps([("standard", "a", "b", 0.2, True), ("standard", "a", "c", 0.4, True),
                 ("standard", "b", "c", 0.2, True), ("invertible", "inv_p", "inv_t", 0.2, True)]),
          comps([("standard", "a", "b", 0.2, True), ("standard", "a", "c", 0.4, True),
                 ("standard", "b", "c", 0.2, True), ("invertible", "inv_t", "inv_p", 0.2, True)])]
    stab = stability_table(reps, cs, frozenset(), kinds).set_index("model_kind")
    assert sorted(stab.index) == ["invertible", "standard"]
    assert json.loads(stab.loc["standard", "methods"]) == ["a", "b", "c"]
    assert json.loads(stab.loc["invertible", "methods"]) == ["inv_p", "inv_t"]
    # together the swap would pull tau below 1; per kind the standard ranking agrees perfectly
    assert stab.loc["standard", "mean_tau"] == pytest.approx(1.0) and stab.loc["standard", "kendall_w"] == 1.0
    assert stab.loc["invertible", "mean_tau"] == pytest.approx(-1.0)
    assert stab.loc["standard", "n_pairs"] == 3 and stab.loc["invertible", "n_pairs"] == 1
    assert stab.loc["standard", "replication_rate"] == 1.0 and stab.loc["standard", "replication_checks"] == 6
    assert stab.loc["invertible", "replication_rate"] == 0.0 and stab.loc["invertible", "replication_checks"] == 2
    rep = repeats_table(reps, kinds).set_index("method")
    assert rep.loc["inv_p", "model_kind"] == "invertible" and rep.loc["a", "model_kind"] == "standard"

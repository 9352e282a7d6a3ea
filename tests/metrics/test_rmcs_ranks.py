"""average_ranks (numpy) equals pandas' average ranks, ties and all; spearman on known cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bam.metrics.contrast import average_ranks, spearman


@pytest.mark.parametrize("values", [[3.0], [1.0, 2.0, 3.0], [3.0, 1.0, 2.0], [1.0, 1.0, 1.0], [2.0, 1.0, 2.0, 5.0, 1.0],
                                    [0.5, -1.0, 0.5, 0.5, 7.0, -1.0]])
def test_average_ranks_match_pandas(values: list[float]) -> None:
    v = np.asarray(values)
    assert average_ranks(v).tolist() == pd.Series(v).rank(method="average").tolist()


def test_average_ranks_random_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        v = rng.integers(0, 6, size=int(rng.integers(1, 30))).astype(float)
        assert np.array_equal(average_ranks(v), pd.Series(v).rank(method="average").to_numpy())


def test_spearman_known_answers() -> None:
    k = np.arange(1.0, 6.0)
    assert spearman(k, -k) == -1.0 and spearman(k, k**3) == 1.0
    assert spearman(k, np.ones(5)) == 0.0 and np.isnan(spearman(k[:1], k[:1]))
    # ties: ranks (1.5, 1.5, 3) vs (1, 2, 3): r = 1.5 / sqrt(1.5 * 2)
    assert spearman(np.array([1.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(1.5 / np.sqrt(3.0))

"""g(f, x) of SPEC §4.1 against hand-derived values and a slow numpy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bam.errors import BamError
from bam.metrics import normalise_maps, object_attribution, percentile_rows, positive_map


def reference_g(attr: np.ndarray, mask: np.ndarray) -> float:
    """Slow per-image re-implementation of SPEC §4.1 with numpy.percentile."""
    m = np.maximum(attr, 0).sum(axis=0)
    lo, p99 = m.min(), np.percentile(m, 99)
    if not p99 > lo:
        return math.nan
    norm = np.clip((m - lo) / (p99 - lo), 0, 1)
    sel = mask.reshape(m.shape) > 0.5
    return float(norm[sel].mean()) if sel.any() else math.nan


def test_p99_normalisation_hand_values() -> None:
    # one channel holding 0..99: min 0, P99 = 0.99 * 99 = 98.01 (linear interpolation)
    attr = torch.arange(100, dtype=torch.float64).view(1, 1, 10, 10)
    low = torch.zeros(1, 10, 10)
    low.view(-1)[:10] = 1  # values 0..9 -> mean 4.5 / 98.01
    high = torch.zeros(1, 10, 10)
    high.view(-1)[99] = 1  # 99 > P99 -> clipped to 1
    assert object_attribution(attr, low).item() == pytest.approx(4.5 / 98.01, abs=1e-12)
    assert object_attribution(attr, high).item() == 1.0
    assert percentile_rows(attr.view(1, -1), 99.0).item() == pytest.approx(98.01)


def test_positive_part_summed_over_channels_no_abs() -> None:
    attr = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    attr[0, 0, :2] = 1.0      # top half +1 in channel 0
    attr[0, 1, :2] = 2.0      # +2 in channel 1 -> M = 3 on the top half
    attr[0, 2] = -7.0         # strongly negative everywhere: ignored (no absolute value)
    attr[0, 0, 2:] = -1.0     # negative bottom half: M = 0 there
    m = positive_map(attr)
    assert torch.equal(m[0, :2], torch.full((2, 4), 3.0, dtype=torch.float64))
    assert torch.equal(m[0, 2:], torch.zeros(2, 4, dtype=torch.float64))
    top = torch.zeros(1, 1, 4, 4)
    top[..., :2, :] = 1
    assert object_attribution(attr, top).item() == 1.0
    assert object_attribution(attr, 1 - top).item() == 0.0
    # signed map: +1 on top, -3 below; |E| would rank the bottom first, the positive part the top
    signed = torch.where(top.bool(), 1.0, -3.0).double()
    assert object_attribution(signed, top).item() == 1.0
    assert object_attribution(signed.abs(), top).item() == 0.0


def test_constant_map_and_empty_mask_are_nan() -> None:
    attr = torch.ones(3, 3, 8, 8)
    attr[1] = torch.rand(3, 8, 8)
    attr[2] = -torch.rand(3, 8, 8)  # all negative -> M = 0 everywhere -> constant
    mask = torch.ones(3, 8, 8)
    g = object_attribution(attr, mask)
    assert math.isnan(g[0]) and math.isnan(g[2]) and 0 <= g[1] <= 1
    _norm, constant = normalise_maps(positive_map(attr))
    assert constant.tolist() == [True, False, True]
    empty = torch.zeros(3, 8, 8)
    assert torch.isnan(object_attribution(attr, empty)).all()


def test_matches_slow_reference_and_axioms() -> None:
    gen = torch.Generator().manual_seed(3)
    attr = torch.randn(6, 3, 12, 12, generator=gen, dtype=torch.float64)
    mask = (torch.rand(6, 1, 12, 12, generator=gen) > 0.7).float()
    g = object_attribution(attr, mask)
    ref = [reference_g(attr[i].numpy(), mask[i].numpy()) for i in range(6)]
    assert np.allclose(g.numpy(), ref, atol=1e-12)
    # positive scaling and adding a constant to every pixel of one channel's positive part leave g unchanged
    assert torch.allclose(object_attribution(attr * 7.5, mask), g)
    # [N, H, W] and [N, 1, H, W] masks agree; float32 input gives the same values
    assert torch.allclose(object_attribution(attr, mask[:, 0]), g)
    assert torch.allclose(object_attribution(attr.float(), mask), g, atol=1e-6)
    assert ((g >= 0) & (g <= 1)).all()


def test_bad_shapes_raise_one_line_errors() -> None:
    with pytest.raises(BamError, match="attributions must be"):
        object_attribution(torch.zeros(3, 8, 8), torch.zeros(3, 8, 8))
    with pytest.raises(BamError, match="does not match"):
        object_attribution(torch.zeros(2, 3, 8, 8), torch.zeros(2, 1, 4, 4))

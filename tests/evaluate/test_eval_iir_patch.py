"""The functionally insignificant patch of SPEC §4.6: one hand-computed step, confinement, cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from evalfakes import FakeData, make_models

from bam.evaluate import PatchConfig, build_patch_set, optimise_patch


class Linear(torch.nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T


def test_one_step_matches_hand_gradient() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 4, 4, generator=gen, dtype=torch.float64) * 0.5 + 0.25
    init = torch.rand(2, 3, 4, 4, generator=gen, dtype=torch.float64)
    init[0, 0, 1, 1] = 1.4  # outside the pixel box: the range penalty acts
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.float64)
    mask[:, :, 1:3, 1:3] = 1
    w = torch.randn(5, 48, generator=gen, dtype=torch.float64)
    cfg = PatchConfig(steps=1, alpha=0.01, beta=0.01)
    out = optimise_patch(Linear(w), x, init, mask, cfg)
    # by hand: d0 = (init - x) * mask; f linear so f(x+d) - f(x) = W d
    d0 = ((init - x) * mask).flatten(1)
    wd = d0 @ w.T
    grad = (wd / wd.norm(dim=1, keepdim=True)) @ w
    grad = grad - 0.01 * 255 * d0 / d0.norm(dim=1, keepdim=True)
    z = (x.flatten(1) + d0)
    grad = grad + 0.01 * 255 * ((z > 1).double() - (z < 0).double())
    d1 = (d0 - cfg.step_size * grad) * mask.expand(2, 3, 4, 4).reshape(2, 48)
    expect = (x.flatten(1) + d1).clamp(0, 1).view_as(x)
    assert torch.allclose(out["patched"], expect, atol=1e-12)
    assert torch.equal(out["patched"] * (1 - mask), x * (1 - mask))  # confined to the mask
    logits_change = ((expect - x).flatten(1) @ w.T).norm(dim=1)
    assert torch.allclose(out["logit_change"], logits_change)
    assert torch.allclose(out["delta_norm"], (expect - x).flatten(1).norm(dim=1))
    assert cfg.step_size == pytest.approx(500 / 255**2)


def test_unchanged_flag_and_growth() -> None:
    x = torch.full((1, 3, 4, 4), 0.5)
    x[0, 2, 3, 3] = 0.3  # class 1 logit 0.3 < class 0 logit 0.5
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1
    w = torch.zeros(2, 48)
    w[0, 0] = 1.0  # class 0 reads pixel (0, 0, 0), inside the mask
    w[1, 47] = 1.0  # class 1 reads a pixel outside the mask
    init = x.clone()
    init[:, :, :2, :2] = 0.6
    ok = optimise_patch(Linear(w), x, init, mask, PatchConfig(steps=20))
    assert ok["unchanged"].tolist() == [True]
    assert ok["delta_norm"].item() > 0.2  # -alpha ||d|| pushes the patch to grow
    flip = init.clone()
    flip[0, 0, 0, 0] = 0.0  # start below class 1's logit: prediction changes
    bad = optimise_patch(Linear(w), x, flip, mask, PatchConfig(steps=0))
    assert bad["unchanged"].tolist() == [False]


def test_patch_set_cached_per_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = FakeData(tmp_path / "data", n=3)
    entry = next(e for e in make_models(data.manifest_hash) if e.card.role == "scene_only")
    cfg = PatchConfig(steps=2)
    ps = build_patch_set(data, entry.model, entry.sha256, cfg, torch.device("cpu"))
    folder = tmp_path / "data" / "derived" / "iir_patch" / entry.sha256[:16]
    assert {p.name for p in folder.iterdir()} >= {"patch.safetensors", "table.csv", "meta.json"}
    assert list(ps.table.columns)[:4] == ["image_id", "logit_change", "delta_norm", "unchanged"]
    assert len(ps.image_ids) == 3 and ps.patched.shape == (3, 3, 16, 16)
    import bam.evaluate.iir_patch as mod

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("recomputed")

    monkeypatch.setattr(mod, "optimise_patch", boom)
    again = build_patch_set(data, entry.model, entry.sha256, cfg, torch.device("cpu"))
    assert torch.equal(again.patched, ps.patched)
    # other parameters -> rebuilt
    with pytest.raises(AssertionError, match="recomputed"):
        build_patch_set(data, entry.model, entry.sha256, PatchConfig(steps=3), torch.device("cpu"))
    # the patch lives only inside the common-object mask
    sub = data.subset("iir_scene")
    x, _y, m = sub.load_batch([0, 1, 2])
    assert torch.equal(ps.patched * (1 - m), x * (1 - m))

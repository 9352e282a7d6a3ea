"""Recipes, the placement rule and the renderer, against hand-derived values and F.interpolate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _data_helpers import TINY

from bam.data import load_recipe
from bam.data._compose import compose, render_window
from bam.data._placement import draw_placements
from bam.errors import BamError


def test_builtin_recipes() -> None:
    paper = load_recipe("paper")
    assert paper.object_classes == ("backpack", "bird", "dog", "elephant", "kite", "pizza", "stop_sign", "toilet",
                                    "truck", "zebra")
    assert paper.object_classes.index("stop_sign") == 6
    assert paper.coco_category("stop_sign") == "stop sign" and paper.coco_category("dog") == "dog"
    assert paper.scene_classes[0] == "bamboo_forest" and paper.scene_classes[9] == "track"
    assert paper.scene_folder("track") == "t/track/outdoor"
    assert (paper.common_object, paper.common_scene, paper.iir_scene) == ("dog", "bedroom", "bamboo_forest")
    assert (paper.image_size, paper.instances_per_class, paper.train_instances) == (128, 1000, 900)
    assert paper.scale_range() == (73, 90)  # 73..89 px for W = 128 (SPEC §2.3)
    syn = load_recipe("synthetic")
    assert (len(syn.object_classes), len(syn.scene_classes), syn.image_size, syn.val_instances) == (10, 10, 32, 100)
    assert syn.instances_per_class == 400  # 300 train per class: the training set stays at 30,000 composites
    assert syn.synthetic_max_rotation == 20
    full = load_recipe("synthetic_full")
    assert (full.image_size, full.instances_per_class, full.val_instances) == (128, 1000, 100)
    assert load_recipe("tiny").image_size == 32


def test_recipe_sorts_classes() -> None:
    r = load_recipe({**TINY, "object_classes": ["triangle", "circle", "cross"]})
    assert r.object_classes == ("circle", "cross", "triangle")


@pytest.mark.parametrize("change, needle", [
    ({"common_object": "dog"}, "common_object 'dog'"),
    ({"iir_scene": "nope"}, "iir_scene 'nope'"),
    ({"val_instances": 8}, "val_instances 8"),
    ({"object_classes": ["a", "a"]}, "duplicate"),
    ({"object_source": "flickr"}, "object_source 'flickr'"),
    ({"bogus": 1}, "unknown config key(s) bogus"),
    ({"image_size": "big"}, "expected an integer"),
])
def test_recipe_errors(change: dict, needle: str) -> None:
    with pytest.raises(BamError, match=None) as exc:
        load_recipe({**TINY, **change})
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_unknown_builtin_recipe_lists_names() -> None:
    with pytest.raises(BamError) as exc:
        load_recipe("papr")
    assert "paper" in str(exc.value) and "synthetic" in str(exc.value)


def test_placement_rule() -> None:
    rng = np.random.default_rng(1)
    hw = rng.integers(3, 129, size=(4, 50, 2))  # any cut-out shapes
    lo, hi = int(128 / math.sqrt(3)), int(128 / math.sqrt(2))
    b = draw_placements(7, hw, 5, 128, (lo, hi))
    longer = np.maximum(b["w"], b["h"])
    assert longer.min() >= 73 and longer.max() <= 89 and longer.shape == (4, 5, 50)
    assert len(np.unique(longer)) > 10  # actually random over the range
    assert (b["x0"] >= 0).all() and (b["y0"] >= 0).all()
    assert (b["x0"] + b["w"] <= 128).all() and (b["y0"] + b["h"] <= 128).all()
    # aspect kept: the shorter side is the rounded proportional length
    hc, wc = hw[:, None, :, 0], hw[:, None, :, 1]
    expect_short = np.maximum(1, np.rint(np.minimum(hc, wc) * longer / np.maximum(hc, wc)))
    assert (np.minimum(b["w"], b["h"]) == expect_short).all()
    assert ((b["w"] >= b["h"]) == (wc >= hc) | (b["w"] == b["h"])).all()
    # positions cover the range (uniform): both edges reached somewhere
    assert (b["x0"] == 0).any() and (b["x0"] + b["w"] == 128).any()
    again = draw_placements(7, hw, 5, 128, (lo, hi))
    assert all((again[k] == b[k]).all() for k in b)
    other = draw_placements(8, hw, 5, 128, (lo, hi))
    assert any((other[k] != b[k]).any() for k in b)


@pytest.mark.parametrize("hc, wc, w, h, x0, y0", [
    (30, 50, 40, 24, 3, 10),   # downscale
    (64, 40, 28, 45, 0, 19),   # tall, at the left edge
    (10, 7, 36, 25, 28, 39),   # upscale, at the bottom-right edge
])
def test_render_matches_interpolate(hc: int, wc: int, w: int, h: int, x0: int, y0: int) -> None:
    size = 64
    g = torch.Generator().manual_seed(hc)
    cut = torch.rand(4, hc, wc, generator=g)
    cut[3] = (cut[3] > 0.5).float()
    padded = torch.zeros(1, 4, size, size)
    padded[0, :, :hc, :wc] = cut
    ox, oy, win_rgb, win_mask = render_window(padded, torch.tensor([[hc, wc]]), torch.tensor([[x0, y0, w, h]]), size)
    n, ox, oy = win_mask.shape[-1], int(ox[0]), int(oy[0])
    rgb = torch.zeros(3, size, size)
    rgb[:, oy:oy + n, ox:ox + n] = win_rgb[0]
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[oy:oy + n, ox:ox + n] = win_mask[0]
    ref = F.interpolate(cut[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    box = (slice(y0, y0 + h), slice(x0, x0 + w))
    assert torch.allclose(rgb[:, box[0], box[1]], ref[:3], atol=1e-5)
    ref_mask = ref[3] >= 0.5
    ambiguous = (ref[3] - 0.5).abs() < 1e-4
    assert ((mask[box] != ref_mask) & ~ambiguous).sum() == 0
    assert mask.sum() == mask[box].sum()  # nothing outside the box


def test_compose_pastes_exactly_the_mask() -> None:
    size = 32
    g = torch.Generator().manual_seed(0)
    scenes = torch.randint(0, 256, (3, 3, size, size), generator=g, dtype=torch.uint8)
    objects = torch.zeros(3, 4, size, size, dtype=torch.uint8)
    objects[:, :3, :10, :10] = 255  # white 10x10 opaque squares
    objects[:, 3, :10, :10] = 255
    hw = torch.tensor([[10, 10]] * 3)
    boxes = torch.tensor([[2, 3, 20, 20], [5, 5, 20, 20], [-1, -1, -1, -1]])
    paste = torch.tensor([True, False, False])
    images, masks = compose(scenes, objects, hw, boxes, paste)
    base = scenes.float() / 255
    assert masks[0, 0, 3:23, 2:22].all() and masks[0].sum() == 400  # hand-derived: the whole 20x20 box
    assert (images[0][:, masks[0, 0].bool()] == 1).all()
    assert torch.equal(images[0][:, ~masks[0, 0].bool()], base[0][:, ~masks[0, 0].bool()])
    assert masks[1].sum() == 400 and torch.equal(images[1], base[1])  # scene-only: mask, no paste
    assert masks[2].sum() == 0 and torch.equal(images[2], base[2])   # no object at all


def test_synthetic_rotation_range() -> None:
    """With no rotation a square (any aspect) is an axis-aligned rectangle: it fills its cut-out."""
    import numpy as np

    from bam.data.sources._procedural import make_objects

    upright = make_objects(np.random.default_rng(0), "square", 6, 32, max_rotation=0.0)
    assert all((cut[..., 3] == 255).all() for cut in upright)
    turned = make_objects(np.random.default_rng(0), "square", 6, 32, max_rotation=180.0)
    assert any((cut[..., 3] == 0).any() for cut in turned)

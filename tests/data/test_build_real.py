"""COCO + MiniPlaces-layout builds on tiny generated fixtures, and every bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from _data_helpers import REAL, invoke, write_recipe
from PIL import Image
from pycocotools.coco import COCO

from bam._io import sha256_file
from bam.data import open_dataset


def _build(recipe: Path, src: dict[str, Path], out: Path, *extra: str) -> object:
    return invoke("build-data", "--recipe", str(recipe), "--out", str(out), "--coco-images", str(src["coco_images"]),
                  "--coco-annotations", str(src["coco_annotations"]), "--scenes", str(src["scenes"]), *extra)


def test_real_build(real_sources: Callable[..., dict[str, Path]], tmp_path: Path) -> None:
    src = real_sources()
    recipe = write_recipe(tmp_path / "real.yaml", **REAL)
    res = _build(recipe, src, tmp_path / "out")
    assert res.exit_code == 0, res.output
    data = open_dataset(tmp_path / "out")
    m = data.manifest
    coco = COCO(str(src["coco_annotations"]))
    # first N usable images in pycocotools order, per category; stop_sign resolved as "stop sign"
    for cls, cat in (("dog", 1), ("stop_sign", 13)):
        expect = [coco.imgs[i]["file_name"] for i in coco.getImgIds(catIds=[cat])][:4]
        used = m["sources"]["objects"]["used_files_sha256"][cls]
        assert sorted(used) == sorted(expect)
        assert all(used[f] == sha256_file(src["coco_images"] / f) for f in used)
    assert m["sources"]["objects"]["annotation_sha256"] == sha256_file(src["coco_annotations"])
    assert m["notes"]["objects"]["dog"] == {"converted L to RGB": 1}  # grayscale kept, converted
    # the dog cut-out is the largest DOG annotation (20x12), not the larger kite, with alpha = mask
    first = next(coco.imgs[i] for i in coco.getImgIds(catIds=[1]))
    cut = np.asarray(Image.open(tmp_path / "out" / "objects" / "dog" / "0000.png"))
    assert cut.shape == (12, 20, 4) and (cut[..., 3] == 255).all()
    orig = np.asarray(Image.open(src["coco_images"] / first["file_name"]).convert("RGB"))
    assert np.array_equal(cut[..., :3], orig[6:18, 5:25])
    # the stop sign cut-out comes from the crowd RLE: a disk, transparent corners
    sign = np.asarray(Image.open(tmp_path / "out" / "objects" / "stop_sign" / "0000.png"))
    assert sign.shape == (17, 17, 4) and sign[0, 0, 3] == 0 and sign[8, 8, 3] == 255
    disk = sum(dy * dy + dx * dx < 64 for dy in range(-8, 9) for dx in range(-8, 9))
    assert (sign[..., 3] == 255).sum() == disk == 193  # lattice points of the open radius-8 disk
    # scenes: MiniPlaces layout (letter folder found for 'bedroom'), resized to 32 px, sorted order
    scene = np.asarray(Image.open(tmp_path / "out" / "scenes" / "track" / "0000.png"))
    ref = Image.open(src["scenes"] / "images/train/t/track/outdoor/00000000.jpg").convert("RGB")
    assert np.array_equal(scene, np.asarray(ref.resize((32, 32), Image.Resampling.BILINEAR)))
    used = m["sources"]["scenes"]["used_files_sha256"]["bedroom"]
    assert set(used) == {f"images/train/b/bedroom/{k:08d}.jpg" for k in range(4)}
    images, labels, masks = data.subset("obj", "val").load_batch([0, 1, 2, 3])
    assert images.shape == (4, 3, 32, 32) and labels.tolist() == [0, 0, 1, 1] and (masks.sum((1, 2, 3)) > 0).all()
    assert invoke("data", "verify", str(tmp_path / "out")).exit_code == 0
    # same sources and seed elsewhere: same manifest hash
    assert _build(recipe, src, tmp_path / "out2").exit_code == 0
    assert sha256_file(tmp_path / "out2" / "manifest.json") == data.manifest_hash


def test_corrupt_images_skipped_and_counted(real_sources: Callable[..., dict[str, Path]], tmp_path: Path) -> None:
    src = real_sources(corrupt=1)
    ok = write_recipe(tmp_path / "ok.yaml", **{**REAL, "max_corrupt_fraction": 0.25})
    res = _build(ok, src, tmp_path / "out")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["counts"]["skipped"]["objects"] == 1
    (skip,) = m["skipped"]["objects"]["dog"]
    assert skip["reason"].startswith("corrupt image")
    strict = write_recipe(tmp_path / "strict.yaml", **REAL)  # default 5%: 1 of 5 is too many
    res = _build(strict, src, tmp_path / "out3")
    assert res.exit_code == 2
    assert "object class 'dog': 1 of 5 files are unreadable or corrupt" in res.output


def test_fewer_than_asked(real_sources: Callable[..., dict[str, Path]], tmp_path: Path) -> None:
    src = real_sources()
    recipe = write_recipe(tmp_path / "r.yaml", **{**REAL, "instances_per_class": 6, "val_instances": 2})
    res = _build(recipe, src, tmp_path / "out")
    assert res.exit_code == 2
    assert "has 5 usable images, the recipe asks 6" in res.output and "--allow-fewer" in res.output
    res = _build(recipe, src, tmp_path / "out", "--allow-fewer")
    assert res.exit_code == 0, res.output
    data = open_dataset(tmp_path / "out")
    assert data.instances_per_class == 5 and len(data.subset("obj", "val")) == 2 * 2 * 2
    assert invoke("data", "verify", str(tmp_path / "out")).exit_code == 0


@pytest.mark.parametrize("change, drop, needle", [
    ({"coco_categories": {}}, None, "unknown COCO category 'stop_sign' for object class 'stop_sign'; did you mean 'stop sign'"),
    ({"scene_folders": {"track": "track/indoor"}}, None, "scene class 'track': folder 'track/indoor' not found"),
    ({}, "coco_annotations", "--coco-annotations {missing} does not exist; expected a file"),
    ({}, "coco_images", "--coco-images {missing} does not exist; expected a directory"),
    ({}, "scenes", "--scenes {missing} does not exist; expected a directory"),
    ({"scene_folders": {"track": "../outside"}}, None, "scene_folders.track '../outside' is not a plain relative"),
])
def test_bad_inputs(real_sources: Callable[..., dict[str, Path]], tmp_path: Path, change: dict, drop: str | None,
                    needle: str) -> None:
    src = real_sources()
    if drop:
        src[drop] = tmp_path / "does-not-exist"
    recipe = write_recipe(tmp_path / "r.yaml", **{**REAL, **change})
    res = _build(recipe, src, tmp_path / "out")
    assert res.exit_code == 2
    needle = needle.format(missing=tmp_path / "does-not-exist")
    assert needle in res.output and res.output.count("\n") == 1
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_missing_flags_and_unknown_recipe(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", **REAL)
    res = invoke("build-data", "--recipe", str(recipe), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "--coco-images DIR and --coco-annotations FILE" in res.output
    res = invoke("build-data", "--recipe", "nope", "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "unknown recipe 'nope'" in res.output and "synthetic" in res.output
    res = invoke("build-data", "--recipe", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o"))
    assert res.exit_code == 2 and "not found" in res.output


def test_malformed_annotation_file(real_sources: Callable[..., dict[str, Path]], tmp_path: Path) -> None:
    src = real_sources()
    src["coco_annotations"].write_text('{"images": [], "annotations": [{"id": 1}]}')
    res = _build(write_recipe(tmp_path / "r.yaml", **REAL), src, tmp_path / "out")
    assert res.exit_code == 2 and "malformed COCO annotation file" in res.output

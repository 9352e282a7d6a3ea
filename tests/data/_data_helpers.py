"""Helpers and fixtures for the data tests: a COCO-format annotation file, a MiniPlaces-layout folder,
recipe YAMLs, and a CLI runner helper. Everything is generated in tmp_path."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from click.testing import CliRunner, Result
from PIL import Image

from bam.cli.main import cli


def invoke(*args: str) -> Result:
    """Run ``bam -q <args>`` in-process."""
    return CliRunner().invoke(cli, ["-q", *args], catch_exceptions=False)


def rle_counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts (column-major run lengths, starting with zeros)."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return counts


def write_recipe(path: Path, **fields: Any) -> Path:
    """Write a recipe YAML and return its path."""
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


TINY = dict(name="tiny_t", object_classes=["circle", "cross", "triangle"], scene_classes=["checker", "gradient", "stripes"],
            common_object="circle", common_scene="gradient", iir_scene="stripes", image_size=32,
            instances_per_class=8, val_instances=2)


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    """A 3x3-class synthetic recipe, 32 px, 8 instances (2 val)."""
    return write_recipe(tmp_path / "tiny_t.yaml", **TINY)


@pytest.fixture(scope="module")
def tiny_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synthetic build shared by the read-only tests of a module."""
    root = tmp_path_factory.mktemp("tinybuild")
    recipe = write_recipe(root / "r.yaml", **TINY)
    res = invoke("build-data", "--recipe", str(recipe), "--out", str(root / "data"), "--seed", "3")
    assert res.exit_code == 0, res.output
    return root / "data"


@pytest.fixture
def real_sources(tmp_path: Path) -> Callable[..., dict[str, Path]]:
    """Factory for a tiny COCO fixture plus a MiniPlaces-layout scene folder."""

    def make(n_images: int = 5, corrupt: int = 0, n_scenes: int = 5) -> dict[str, Path]:
        rng = np.random.default_rng(0)
        img_dir = tmp_path / "coco" / "train2017"
        img_dir.mkdir(parents=True)
        images, anns = [], []
        cats = [{"id": 1, "name": "dog", "supercategory": "animal"},
                {"id": 13, "name": "stop sign", "supercategory": "outdoor"},
                {"id": 38, "name": "kite", "supercategory": "sports"}]
        aid = 1
        for k in range(2 * n_images):
            iid = 100 + k
            h, w = 30 + k, 40
            rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            name = f"{iid:012d}.jpg"
            gray = k == 1
            im = Image.fromarray(rgb[..., 0]) if gray else Image.fromarray(rgb)
            im.save(img_dir / name, format="PNG")  # lossless, so tests can compare pixels
            images.append({"id": iid, "file_name": name, "height": h, "width": w})
            if k < n_images:  # dog images: two dog polygons (small, large) and a larger kite
                for (x, y, bw, bh) in ((2, 2, 6, 5), (5, 6, 20, 12)):
                    poly = [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
                    anns.append({"id": aid, "image_id": iid, "category_id": 1, "segmentation": [poly],
                                 "area": float(bw * bh), "bbox": [x, y, bw, bh], "iscrowd": 0})
                    aid += 1
                anns.append({"id": aid, "image_id": iid, "category_id": 38, "area": 900.0, "bbox": [0, 0, 30, 30],
                             "segmentation": [[0, 0, 30, 0, 30, 30, 0, 30]], "iscrowd": 0})
                aid += 1
            else:  # stop sign: crowd RLE of a disk
                yy, xx = np.mgrid[:h, :w]
                disk = ((yy - 15) ** 2 + (xx - 20) ** 2 < 8 ** 2).astype(np.uint8)
                anns.append({"id": aid, "image_id": iid, "category_id": 13, "iscrowd": 1, "area": float(disk.sum()),
                             "bbox": [12, 7, 17, 17], "segmentation": {"counts": rle_counts(disk), "size": [h, w]}})
                aid += 1
        for k in range(corrupt):  # corrupt files of dog images (the first ones in pycocotools order)
            (img_dir / images[k]["file_name"]).write_bytes(b"not an image")
        ann_file = tmp_path / "coco" / "instances.json"
        ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
        scenes = tmp_path / "miniplaces"
        for rel in ("b/bedroom", "t/track/outdoor"):
            folder = scenes / "images" / "train" / rel
            folder.mkdir(parents=True)
            for k in range(n_scenes):
                Image.fromarray(rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)).save(folder / f"{k:08d}.jpg")
        return {"coco_images": img_dir, "coco_annotations": ann_file, "scenes": scenes}

    return make


REAL = dict(name="real_t", object_source="coco", scene_source="scenes", object_classes=["dog", "stop_sign"],
            scene_classes=["bedroom", "track"], common_object="dog", common_scene="bedroom", iir_scene="track",
            image_size=32, instances_per_class=4, val_instances=1, coco_categories={"stop_sign": "stop sign"},
            scene_folders={"track": "t/track/outdoor"})

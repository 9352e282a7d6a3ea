"""COCO object cut-outs (SPEC §2.2), read with pycocotools.

For each object class: walk the images containing its category in pycocotools order
(``COCO.getImgIds(catIds=[id])``), take the annotation *of that category* with the largest area
(crowd RLE included), decode it with ``COCO.annToMask``, crop image and mask to the annotation's
bbox and keep an RGBA cut-out with alpha = mask. Grayscale/CMYK images are converted to RGB.
Unlike the original script, an unknown category name is an error: nothing falls back to the
largest object of another category.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bam._io import sha256_bytes, sha256_file
from bam._paths import inside, require_dir, require_file
from bam.data.sources import SOURCES, ClassPlan, Item, SourceInputs
from bam.errors import BamError

if TYPE_CHECKING:
    from bam.data.recipe import Recipe


def _load_coco(path: Path) -> Any:
    """Load an annotation file quietly; a malformed file is a BamError."""
    from pycocotools.coco import COCO

    if not path.is_file():
        raise BamError(f"COCO annotation file not found: {path}")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (ValueError, KeyError, TypeError, AssertionError) as exc:
        raise BamError(f"malformed COCO annotation file {path}: {type(exc).__name__}: {exc}") from None


def _category_id(coco: Any, name: str, cls: str) -> int:
    """The id of the COCO category called exactly ``name``; unknown names list close/valid names."""
    cats = {c["name"]: c["id"] for c in coco.loadCats(coco.getCatIds())}
    if name in cats:
        return int(cats[name])
    close = difflib.get_close_matches(name.replace("_", " "), list(cats), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise BamError(f"unknown COCO category {name!r} for object class {cls!r}; {hint}"
                   f"accepted: {', '.join(sorted(cats))}")


def _check_file_name(img: dict[str, Any], ann_path: Path) -> None:
    """BamError when an annotated image's file_name would leave the image folder."""
    name = str(img.get("file_name", img.get("id", "")))
    parts = name.replace("\\", "/").split("/")
    if not name or name.startswith(("/", "\\")) or ".." in parts:
        raise BamError(f"{ann_path}: image {img.get('id')!r} has file_name {name!r}, which leaves the image folder; "
                       "accepted: a name relative to --coco-images (no '..')")


@SOURCES.register("coco")
class CocoSource:
    """Object cut-outs from COCO instance annotations (``--coco-images``, ``--coco-annotations``)."""

    kinds = ("object",)
    version = "coco-1"

    def prepare(self, recipe: Recipe, kind: str, inputs: SourceInputs) -> tuple[list[ClassPlan], dict[str, Any]]:
        """Load annotations once; per class, list candidate (image, largest annotation) pairs."""
        if inputs.coco_annotations is None or inputs.coco_images is None:
            raise BamError("recipe uses object_source 'coco': give --coco-images DIR and --coco-annotations FILE")
        images_dir = require_dir(inputs.coco_images, "--coco-images", "the COCO image folder, e.g. train2017/")
        ann_path = require_file(inputs.coco_annotations, "--coco-annotations",
                                "a COCO instances JSON, e.g. annotations/instances_train2017.json")
        coco = _load_coco(ann_path)
        plans = []
        for index, cls in enumerate(recipe.object_classes):
            cat = _category_id(coco, recipe.coco_category(cls), cls)
            candidates = []
            for img_id in coco.getImgIds(catIds=[cat]):
                anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id], catIds=[cat], iscrowd=None))
                if not anns:
                    continue
                best = max(anns, key=lambda a: float(a.get("area", 0.0)))  # first of equal areas
                img = dict(coco.imgs[img_id])
                _check_file_name(img, ann_path)
                candidates.append((img, best))
            plans.append(ClassPlan(kind, cls, index, {"images_dir": str(images_dir), "candidates": candidates}))
        info = {"source": "coco", "version": self.version, "annotation_file": ann_path.name,
                "annotation_sha256": sha256_file(ann_path)}
        return plans, info

    def produce(self, recipe: Recipe, plan: ClassPlan, seed: int) -> Iterator[Item]:
        """Yield cut-outs in pycocotools order; unreadable or missing images are corrupt skips."""
        from PIL import Image, UnidentifiedImageError
        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):
            helper = COCO()
        images_dir = Path(plan.data["images_dir"])
        for img, ann in plan.data["candidates"]:
            name = str(img.get("file_name", img["id"]))
            path = inside(images_dir, name, "COCO annotation file_name")
            try:
                raw = path.read_bytes()
            except OSError as exc:
                yield Item(name, reason=f"missing or unreadable file ({exc.strerror or exc})", corrupt=True)
                continue
            try:
                with Image.open(io.BytesIO(raw)) as im:
                    mode = im.mode
                    rgb = np.asarray(im.convert("RGB"))
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
                yield Item(name, reason=f"corrupt image ({type(exc).__name__})", corrupt=True)
                continue
            h, w = int(img["height"]), int(img["width"])
            if rgb.shape[:2] != (h, w):
                yield Item(name, reason=f"image size {rgb.shape[1]}x{rgb.shape[0]} != annotated {w}x{h}", corrupt=True)
                continue
            helper.imgs = {img["id"]: img}
            mask = helper.annToMask(ann).astype(bool)
            x, y, bw, bh = (float(v) for v in ann["bbox"])
            x0, y0 = max(0, math.floor(x)), max(0, math.floor(y))
            x1, y1 = min(w, math.ceil(x + bw)), min(h, math.ceil(y + bh))
            crop = mask[y0:y1, x0:x1]
            if crop.size == 0 or not crop.any():
                yield Item(name, reason="empty mask inside the annotation bbox")
                continue
            alpha = np.where(crop, 255, 0).astype(np.uint8)[..., None]
            rgba = np.concatenate([rgb[y0:y1, x0:x1], alpha], axis=-1)
            notes = (f"converted {mode} to RGB",) if mode != "RGB" else ()
            yield Item(name, pixels=np.ascontiguousarray(rgba), source_sha256=sha256_bytes(raw),
                       notes=notes)

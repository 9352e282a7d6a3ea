"""Scene images from folders (MiniPlaces layout or a plain ``<class>/*.jpg`` tree), SPEC §2.1.

``--scenes DIR`` may be the MiniPlaces root (``DIR/images/train/<letter>/<class>[/<sub>]``), its
``images/train`` folder, or a folder holding one sub-folder per class. The folder of a class is
``Recipe.scene_folder(cls)`` (e.g. ``t/track/outdoor``); the first-letter level may be omitted in
the recipe. Files are taken in sorted name order; images not of size image_size are resized
(bilinear, antialiased) to image_size x image_size.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bam._io import sha256_bytes
from bam._paths import inside, require_dir
from bam.data.sources import SOURCES, ClassPlan, Item, SourceInputs
from bam.errors import BamError

if TYPE_CHECKING:
    from bam.data.recipe import Recipe

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def find_class_folder(root: Path, folder: str) -> tuple[Path | None, list[Path]]:
    """The first existing candidate folder for ``folder`` under ``root`` and all candidates tried."""
    tried: list[Path] = []
    for base in (root / "images" / "train", root / "train", root):
        for rel in (folder, f"{folder[0]}/{folder}"):
            cand = base / rel
            tried.append(cand)
            if cand.is_dir():
                return cand, tried
    return None, tried


@SOURCES.register("scenes")
class SceneFolderSource:
    """Scene images read from class folders (``--scenes DIR``)."""

    kinds = ("scene",)
    version = "scenes-1"

    def prepare(self, recipe: Recipe, kind: str, inputs: SourceInputs) -> tuple[list[ClassPlan], dict[str, Any]]:
        """Locate every class folder and list its image files (sorted)."""
        if inputs.scenes is None:
            raise BamError("recipe uses scene_source 'scenes': give --scenes DIR (MiniPlaces root or class folders)")
        root = require_dir(inputs.scenes, "--scenes", "the MiniPlaces root or a folder of <class>/ folders")
        plans = []
        for index, cls in enumerate(recipe.scene_classes):
            folder, tried = find_class_folder(root, recipe.scene_folder(cls))
            if folder is None:
                raise BamError(f"scene class {cls!r}: folder {recipe.scene_folder(cls)!r} not found under {root} "
                               f"(tried {', '.join(str(t.relative_to(root)) for t in tried)})")
            folder = inside(root, folder.relative_to(root).as_posix(), f"recipe scene_folders.{cls}")
            files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise BamError(f"scene class {cls!r}: no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
            plans.append(ClassPlan(kind, cls, index, {"folder": str(folder), "files": files,
                                                      "rel": str(folder.relative_to(root))}))
        return plans, {"source": "scenes", "version": self.version}

    def produce(self, recipe: Recipe, plan: ClassPlan, seed: int) -> Iterator[Item]:
        """Yield RGB scenes in file-name order; unreadable files are corrupt skips."""
        from PIL import Image, UnidentifiedImageError

        size = recipe.image_size
        folder = Path(plan.data["folder"])
        for fname in plan.data["files"]:
            name = f"{plan.data['rel']}/{fname}"
            try:
                raw = (folder / fname).read_bytes()
                with Image.open(io.BytesIO(raw)) as im:
                    mode = im.mode
                    im = im.convert("RGB")
                    if im.size != (size, size):
                        im = im.resize((size, size), Image.Resampling.BILINEAR)
                    rgb = np.asarray(im)
            except OSError as exc:
                if isinstance(exc, UnidentifiedImageError) or not isinstance(exc, FileNotFoundError):
                    yield Item(name, reason=f"corrupt image ({type(exc).__name__})", corrupt=True)
                else:
                    yield Item(name, reason="missing file", corrupt=True)
                continue
            except (ValueError, SyntaxError) as exc:
                yield Item(name, reason=f"corrupt image ({type(exc).__name__})", corrupt=True)
                continue
            notes = (f"converted {mode} to RGB",) if mode != "RGB" else ()
            yield Item(name, pixels=np.ascontiguousarray(rgb), source_sha256=sha256_bytes(raw),
                       notes=notes)

"""Loading a built dataset: :func:`open_dataset`, :class:`BamData`, :class:`BamSubset`.

Composites are rendered on the fly from the stored scenes, cut-outs and placement boxes
(:mod:`bam.data._compose`), batched; decoded images are cached in memory on first use.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bam._io import read_json, sha256_bytes, sha256_file
from bam._paths import confine, inside, require_dir
from bam.config import from_dict
from bam.data._compose import compose
from bam.data._layout import check_layout
from bam.data._store import ImageStore
from bam.data._subsets import COLUMNS, subset_names
from bam.data.build import DERIVED, FORMAT, MANIFEST, STATE
from bam.data.recipe import Recipe
from bam.errors import BamError, choices_error

SPLITS = ("train", "val")


class BamSubset(torch.utils.data.Dataset):
    """One labelling/subset of a build, restricted to a split; row i of ``table`` is item i."""

    def __init__(self, data: BamData, name: str, split: str | None, table: pd.DataFrame) -> None:
        """Wrap ``table`` (already filtered to ``split``); prefer :meth:`BamData.subset`."""
        self.data, self.name, self.split = data, name, split
        self.table = table.reset_index(drop=True)
        self.label_kind = "object" if name == "obj" else "scene"
        self.num_classes = len(data.object_classes if self.label_kind == "object" else data.scene_classes)
        t = self.table
        self._scene = torch.tensor(t["scene_label"].to_numpy(np.int64))
        self._object = torch.tensor(t["object_label"].to_numpy(np.int64))
        self._instance = torch.tensor(t["instance"].to_numpy(np.int64))
        self._labels = torch.tensor(t["label"].to_numpy(np.int64))
        self._boxes = torch.tensor(t[["x0", "y0", "w", "h"]].to_numpy(np.int64))
        self._paste = torch.tensor((t["input"] == "composite").to_numpy(bool))

    def __len__(self) -> int:
        """Number of items."""
        return len(self.table)

    def __repr__(self) -> str:
        """Short description."""
        return f"BamSubset({self.name!r}, split={self.split!r}, n={len(self)}, label_kind={self.label_kind!r})"

    @property
    def labels(self) -> Tensor:
        """LongTensor[N] of labels (no image decoding)."""
        return self._labels.clone()

    def __getitem__(self, i: int) -> tuple[Tensor, int, Tensor]:
        """(image FloatTensor[3,H,W] in [0,1], label, mask FloatTensor[1,H,W] of {0,1})."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {self!r}")
        images, labels, masks = self.load_batch([i % len(self)])
        return images[0], int(labels[0]), masks[0]

    def load_batch(self, indices: Sequence[int] | Tensor | np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """Vectorised load: images [B,3,H,W], labels LongTensor[B], masks [B,1,H,W]."""
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64)).reshape(-1)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise IndexError(f"indices out of range for {self!r}")
        obj = self._object[idx]
        scenes, objects, hw = self.data.store.gather(self._scene[idx], obj, self._instance[idx])
        boxes = self._boxes[idx]
        images, masks = compose(scenes, objects, hw, boxes, self._paste[idx])
        return images, self._labels[idx], masks


class BamData:
    """A complete build directory (see docs/architecture.md, "Data contract")."""

    def __init__(self, root: Path, manifest: dict[str, Any], manifest_hash: str) -> None:
        """Prefer :func:`open_dataset`, which checks the directory first."""
        self.root, self.manifest, self.manifest_hash = root, manifest, manifest_hash
        self.recipe: Recipe = from_dict(Recipe, manifest["recipe"], "manifest.recipe")
        self.object_classes: list[str] = list(manifest["object_classes"])
        self.scene_classes: list[str] = list(manifest["scene_classes"])
        self.image_size: int = int(manifest["image_size"])
        self.instances_per_class: int = int(manifest["instances_per_class"])
        self.common_object: str = manifest["common_object"]
        self.common_scene: str = manifest["common_scene"]
        self.iir_scene: str = manifest["iir_scene"]
        self._tables: dict[str, pd.DataFrame] = {}

    def __repr__(self) -> str:
        """Short description."""
        return f"BamData({str(self.root)!r}, recipe={self.recipe.name!r}, manifest_hash={self.manifest_hash[:12]})"

    @cached_property
    def store(self) -> ImageStore:
        """The lazily filled image cache shared by all subsets of this dataset."""
        return ImageStore.from_manifest(self.root, self.manifest)

    @property
    def subset_names(self) -> list[str]:
        """Names accepted by :meth:`subset`."""
        return [s for s in subset_names(len(self.scene_classes)) if s in self.manifest["subsets"]]

    def derived_dir(self, kind: str) -> Path:
        """``DIR/derived/<kind>/`` (created) for artefacts written later, e.g. the IIR patch set;
        refused (BamError) when ``derived/`` or ``derived/<kind>`` is a symlink that leaves ``DIR``."""
        if not kind or "/" in kind or "\\" in kind or kind.startswith("."):
            raise BamError(f"bad derived kind {kind!r}; accepted: a plain folder name such as 'iir_patch'")
        path = confine(self.root, self.root / DERIVED / kind, "derived folder")
        path.mkdir(parents=True, exist_ok=True)
        confine(self.root, path, "derived folder")  # a link made while creating it
        return path

    def table(self, name: str) -> pd.DataFrame:
        """The full (both splits) table of subset ``name``."""
        if name not in self.manifest["subsets"]:
            raise choices_error("subset", name, self.subset_names)
        if name not in self._tables:
            rel = self.manifest["subsets"][name]["file"]
            path = inside(self.root, rel, f"{self.root / MANIFEST} subset {name}")
            raw = path.read_bytes()
            if sha256_bytes(raw) != self.manifest["files"].get(rel):
                raise BamError(f"subset table {path} does not match its manifest hash (changed after the build); "
                               f"run `bam data verify {self.root}` or rebuild")
            frame = pd.read_csv(io.BytesIO(raw), dtype={"image_id": str, "object": str, "scene": str, "split": str,
                                                        "input": str}, keep_default_na=False)
            missing = set(COLUMNS) - set(frame.columns)
            if missing:
                raise BamError(f"subset table {path} lacks column(s) {sorted(missing)} (run `bam data verify`)")
            self._tables[name] = frame
        return self._tables[name]

    def subset(self, name: str, split: str | None = "val") -> BamSubset:
        """Subset ``name`` restricted to ``split`` ("train", "val" or None for both)."""
        if split is not None and split not in SPLITS:
            raise choices_error("split", split, [*SPLITS, "None"])
        frame = self.table(name)
        if split is not None:
            frame = frame[frame["split"] == split]
        return BamSubset(self, name, split, frame)

    def preload(self, progress: bool = False, threads: int = 2) -> None:
        """Decode every image into memory now (e.g. before forking DataLoader workers)."""
        self.store.load_all(progress, threads)


def open_dataset(root: str | os.PathLike[str]) -> BamData:
    """Open a complete build; an incomplete, foreign or inconsistent directory is a one-line BamError.

    The manifest must be self-consistent (:func:`bam.data._layout.check_layout`); image files and
    subset tables are checked against their manifest hashes when first read.
    """
    root = require_dir(root, "dataset dir", "a dataset built by `bam build-data`")
    confine(root, root / MANIFEST, "dataset manifest")
    if not (root / MANIFEST).is_file():
        hint = ("the build was interrupted; re-run the same `bam build-data` command to resume"
                if (root / STATE).is_file() else f"build one with `bam build-data --out {root}`")
        raise BamError(f"{root} is not a complete bam dataset (no {MANIFEST}; {hint})")
    manifest = read_json(root / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BamError(f"{root / MANIFEST} is not a bam dataset manifest (format {manifest.get('format')!r}; "
                       f"accepted: {FORMAT})" if isinstance(manifest, dict) else f"{root / MANIFEST} is malformed")
    check_layout(manifest, root)
    for rel in ("placements.csv", *(s["file"] for s in manifest["subsets"].values())):
        if not inside(root, rel, str(root / MANIFEST)).is_file():
            raise BamError(f"{root} is incomplete: {rel} is missing (run `bam data verify {root}`)")
    return BamData(root, manifest, sha256_file(root / MANIFEST))

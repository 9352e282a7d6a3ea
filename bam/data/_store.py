"""In-memory cache of decoded scenes and cut-outs, filled lazily, gathered with tensor indexing.

Scenes live in one uint8 tensor [S, N, 3, W, W] and cut-outs (top-left aligned, longer side
<= W) in [O, N, 4, W, W] with their sizes in [O, N, 2]; ``torch.empty`` reserves the memory
without touching it, so only decoded images occupy RAM. A batch gather is one indexing op; only
images never seen before are decoded (one PNG read each, once per process). A store opened from a
manifest (:meth:`ImageStore.from_manifest`) checks each file's sha256 against the manifest as it
reads it, so an image swapped after the build is refused, not used under the same manifest hash;
an image whose real path (a symlink) leaves the build root is refused before it is read.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bam._io import sha256_bytes
from bam._paths import confine
from bam.data._subsets import id_width
from bam.errors import BamError


def image_rel(kind: str, cls: str, instance: int, n: int) -> str:
    """Where the build stores instance ``instance`` of class ``cls``, relative to the build root
    (kind: objects | scenes)."""
    return f"{kind}/{cls}/{instance:0{id_width(n)}d}.png"


def image_path(root: Path, kind: str, cls: str, instance: int, n: int) -> Path:
    """Absolute form of :func:`image_rel`."""
    return root / image_rel(kind, cls, instance, n)


def read_png(path: Path, channels: int, expected_sha256: str | None = None) -> np.ndarray:
    """Decode a stored PNG to uint8 HxWxC; a missing/corrupt file is a BamError naming it, and so
    is a file whose sha256 differs from ``expected_sha256`` (when given)."""
    from PIL import Image, UnidentifiedImageError

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BamError(f"cannot read dataset image {path}: {exc.strerror or type(exc).__name__} "
                       "(run `bam data verify`)") from None
    if expected_sha256 is not None and sha256_bytes(raw) != expected_sha256:
        raise BamError(f"dataset image {path} does not match its manifest hash (changed after the build); "
                       f"run `bam data verify {path.parents[2]}` or rebuild")
    try:
        with Image.open(io.BytesIO(raw)) as im:
            arr = np.asarray(im.convert("RGBA" if channels == 4 else "RGB"))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise BamError(f"cannot read dataset image {path}: {type(exc).__name__} (run `bam data verify`)") from None
    return arr


class ImageStore:
    """Lazily decoded scenes and object cut-outs of one build directory."""

    def __init__(self, root: Path, object_classes: list[str], scene_classes: list[str], n: int, size: int) -> None:
        """Reserve (not fill) the caches for ``n`` instances per class at ``size`` px."""
        self.root, self.n, self.size = root, n, size
        self.object_classes, self.scene_classes = object_classes, scene_classes
        #: relative path -> sha256 each file must have when read (None: files are not checked)
        self.hashes: Mapping[str, str] | None = None
        self.scenes = torch.empty(len(scene_classes), n, 3, size, size, dtype=torch.uint8)
        self.objects = torch.empty(len(object_classes), n, 4, size, size, dtype=torch.uint8)
        self.object_hw = torch.zeros(len(object_classes), n, 2, dtype=torch.long)
        self.scene_ok = torch.zeros(len(scene_classes), n, dtype=torch.bool)
        self.object_ok = torch.zeros(len(object_classes), n, dtype=torch.bool)

    @classmethod
    def from_manifest(cls, root: Path, manifest: Mapping[str, Any]) -> ImageStore:
        """The store of a complete build: every file read is checked against ``manifest["files"]``."""
        store = cls(root, list(manifest["object_classes"]), list(manifest["scene_classes"]),
                    int(manifest["instances_per_class"]), int(manifest["image_size"]))
        store.hashes = dict(manifest["files"])
        return store

    def _read(self, kind: str, cls: str, i: int, channels: int) -> np.ndarray:
        """Read and (for a manifest store) verify one stored image."""
        rel = image_rel(kind, cls, i, self.n)
        expected = None
        if self.hashes is not None:
            expected = self.hashes.get(rel)
            if expected is None:
                raise BamError(f"dataset image {rel} is not in the manifest of {self.root} (run `bam data verify`)")
        return read_png(confine(self.root, self.root / rel, "dataset image"), channels, expected)

    def _load_scene(self, s: int, i: int) -> None:
        """Decode scene instance i of scene class s into the cache."""
        arr = self._read("scenes", self.scene_classes[s], i, 3)
        if arr.shape[:2] != (self.size, self.size):
            raise BamError(f"scene {self.scene_classes[s]}/{i} has size {arr.shape[:2]}, expected {self.size}")
        self.scenes[s, i] = torch.from_numpy(arr.copy()).permute(2, 0, 1)
        self.scene_ok[s, i] = True

    def _load_object(self, o: int, i: int) -> None:
        """Decode cut-out instance i of object class o into the cache (top-left aligned)."""
        arr = self._read("objects", self.object_classes[o], i, 4)
        h, w = arr.shape[:2]
        if max(h, w) > self.size:
            raise BamError(f"cut-out {self.object_classes[o]}/{i} is {w}x{h}, larger than {self.size}")
        self.objects[o, i].zero_()
        self.objects[o, i, :, :h, :w] = torch.from_numpy(arr.copy()).permute(2, 0, 1)
        self.object_hw[o, i] = torch.tensor([h, w])
        self.object_ok[o, i] = True

    def ensure(self, scene_idx: Tensor, object_idx: Tensor, instance: Tensor) -> None:
        """Decode every scene (scene_idx, instance) and cut-out (object_idx >= 0) not cached yet."""
        cold = ~self.scene_ok[scene_idx, instance]
        if bool(cold.any()):
            for s, i in sorted(set(zip(scene_idx[cold].tolist(), instance[cold].tolist()))):
                self._load_scene(s, i)
        has = object_idx >= 0
        if bool(has.any()):
            o, i = object_idx[has], instance[has]
            cold = ~self.object_ok[o, i]
            if bool(cold.any()):
                for a, b in sorted(set(zip(o[cold].tolist(), i[cold].tolist()))):
                    self._load_object(a, b)

    def gather(self, scene_idx: Tensor, object_idx: Tensor, instance: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """uint8 scenes [B,3,W,W], cut-outs [B,4,W,W] (zeros where object_idx < 0) and sizes [B,2]."""
        self.ensure(scene_idx, object_idx, instance)
        size = self.size
        scenes = self.scenes.view(-1, 3, size, size).index_select(0, scene_idx * self.n + instance)
        flat = object_idx.clamp_min(0) * self.n + instance
        objects = self.objects.view(-1, 4, size, size).index_select(0, flat)
        hw = self.object_hw.view(-1, 2).index_select(0, flat)
        none = object_idx < 0
        if bool(none.any()):
            objects[none] = 0
            hw[none] = 1
        return scenes, objects, hw

    def load_all(self, progress: bool = False, threads: int = 2) -> None:
        """Decode everything now (e.g. before forking DataLoader workers), ``threads`` PNG decoders
        at a time (PIL releases the GIL while decoding)."""
        from concurrent.futures import ThreadPoolExecutor

        from bam._progress import progress_bar

        jobs = [("scenes", s, i) for s in range(len(self.scene_classes)) for i in range(self.n)
                if not self.scene_ok[s, i]]
        jobs += [("objects", o, i) for o in range(len(self.object_classes)) for i in range(self.n)
                 if not self.object_ok[o, i]]

        def load(job: tuple[str, int, int]) -> None:
            kind, c, i = job
            (self._load_scene if kind == "scenes" else self._load_object)(c, i)

        with ThreadPoolExecutor(max(1, threads)) as pool:
            for _ in progress_bar(pool.map(load, jobs), total=len(jobs), desc="decode", enabled=progress, leave=False):
                pass

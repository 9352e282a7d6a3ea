"""Concept, random and target image sets for TCAV, drawn from a build by the data contract.

The original BAM copied image folders by hand (``scripts/construct_bim_dataset.py``,
``save_tcav_images``): ``dog_scene`` = 100 random val composites of the common object (on any
scene, the common scene included, so some were also targets), ``random500_0/1`` = two halves of
200 random val scene-only images, ``random_counter_part`` = 100 COCO val photographs, targets
``dog_bedroom`` = the common-object-in-common-scene val composites. ``bam`` draws the same kinds
of sets from the subsets, seeded, from the train split by default so that no target shares a
pixel with them (see docs/tcav.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bam._io import hash_json
from bam.concepts.config import TcavConfig
from bam.errors import BamError

#: Subsets whose rows are the same composite pixels for the same image id.
_COMPOSITE_SUBSETS = ("obj", "scene", "common_in_scene")
#: Per-stream seeds, so that resizing one set does not redraw the others.
_CONCEPT_STREAM, _RANDOM_STREAM = 1, 2


@dataclass(frozen=True)
class ImageSet:
    """A named, ordered set of images: rows ``image_ids`` of ``subset`` (``split``) of dataset ``source``."""

    name: str
    subset: str
    split: str | None
    image_ids: tuple[str, ...]
    #: the dataset's manifest hash (the same ids in another build are other pixels)
    source: str = ""

    def __len__(self) -> int:
        """Number of images."""
        return len(self.image_ids)

    @property
    def content_hash(self) -> str:
        """sha256 of what identifies the pixels, in order (cache keys use it)."""
        return hash_json({"source": self.source, "subset": self.subset, "split": self.split,
                          "ids": list(self.image_ids)})

    @property
    def pixel_keys(self) -> frozenset[str]:
        """One key per distinct image: composites share keys across obj/scene/common_in_scene."""
        space = "composite" if self.subset in _COMPOSITE_SUBSETS else self.subset
        return frozenset(f"{self.source}:{space}:{i}" for i in self.image_ids)


@dataclass(frozen=True)
class ConceptSets:
    """The sets of one TCAV experiment: concept vs each random set, counterpart vs each random set.

    Checked on construction: at least two random sets; every set has >= 2 images; the concept
    set equals no random set; random sets and the counterpart are pairwise disjoint; no target
    is in any training set.
    """

    concept: ImageSet
    randoms: tuple[ImageSet, ...]
    counterpart: ImageSet
    targets: ImageSet

    def __post_init__(self) -> None:
        if len(self.randoms) < 2:
            raise BamError(f"tcav needs >= 2 random sets, got {len(self.randoms)}; accepted: num_random >= 2")
        training = (self.concept, *self.randoms, self.counterpart)
        names = [s.name for s in (*training, self.targets)]
        if len(set(names)) != len(names):
            raise BamError(f"tcav set names {names} repeat; accepted: distinct names")
        for s in training:
            if len(s) < 2:
                raise BamError(f"tcav set {s.name!r} has {len(s)} image(s); accepted: >= 2")
        if len(self.targets) < 1:
            raise BamError("tcav target set is empty; accepted: >= 1 image")
        for other in (*self.randoms, self.counterpart):
            if self.concept.pixel_keys == other.pixel_keys:
                raise BamError(f"tcav concept set {self.concept.name!r} has the same {len(other)} images as random "
                               f"set {other.name!r}; accepted: a concept set that differs from every random set")
        nulls = (*self.randoms, self.counterpart)
        for i, a in enumerate(nulls):
            for b in nulls[i + 1:]:
                common = len(a.pixel_keys & b.pixel_keys)
                if common:
                    raise BamError(f"tcav random sets {a.name!r} and {b.name!r} share {common} image(s); "
                                   "accepted: disjoint random sets")
        for s in training:
            common = len(s.pixel_keys & self.targets.pixel_keys)
            if common:
                raise BamError(f"tcav set {s.name!r} contains {common} target image(s); accepted: sets "
                               "disjoint from the targets")

    @property
    def all_sets(self) -> tuple[ImageSet, ...]:
        """Concept, randoms, counterpart, targets."""
        return (self.concept, *self.randoms, self.counterpart, self.targets)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary (names, subsets, sizes, content hashes) for provenance."""
        return {s.name: {"subset": s.subset, "split": s.split, "n": len(s), "sha256": s.content_hash}
                for s in self.all_sets}


def _too_few(what: str, found: int, need: int, field: str) -> BamError:
    return BamError(f"too few {what}: found {found}, need {need}; accepted: a smaller tcav {field} "
                    f"(at most {found} images in all)")


def build_concept_sets(data: Any, config: TcavConfig) -> ConceptSets:
    """The sets of the original protocol from a build (``data`` follows the data contract).

    * concept (``<object>_scene``): composites of the common object on random scenes, from
      ``config.split``;
    * random sets (``random500_<i>``) and the counterpart (``random_counter_part``): disjoint
      draws of distinct scene-only images (one per scene image: the scene-only rows of all objects
      on one scene image are the same pixels), from ``config.split``;
    * targets: the common_in_scene val composites, a seeded permutation cut at
      ``config.target_images`` (the permutation of ``bam.evaluate`` for the same seed).

    From ``train`` (the default) every scene is drawn in proportion, as in the original, and no
    target pixels can occur (targets, their scene images and object instances are val). From
    ``val`` the common scene is left out of all sets: its val composites of the common object are
    the targets and its val scene images their backgrounds.
    """
    obj, scene = data.common_object, data.common_scene
    skip = scene if config.split == "val" else None
    where = f"{config.split} split" + (f", scenes other than {scene}" if skip else "")
    table = data.subset("obj", config.split).table.sort_values("image_id", kind="stable")
    cand = table[(table["object"] == obj) & (table["scene"] != skip)]["image_id"].astype(str).tolist()
    if len(cand) < config.concept_size:
        raise _too_few(f"concept images ({obj} composites, {where})", len(cand), config.concept_size,
                       "concept_size")
    pick = np.random.default_rng([config.seed, _CONCEPT_STREAM]).permutation(len(cand))[:config.concept_size]
    concept = ImageSet(f"{obj}_scene", "obj", config.split, tuple(cand[i] for i in pick), data.manifest_hash)

    so = data.subset("scene_only", config.split).table.sort_values("image_id", kind="stable")
    so = so[so["scene"] != skip].drop_duplicates(["scene", "instance"], keep="first")
    ids = so["image_id"].astype(str).tolist()
    need = (config.num_random + 1) * config.random_size
    if len(ids) < need:
        raise _too_few(f"random images (distinct scene-only images, {where}; {config.num_random} random sets + "
                       f"the counterpart of random_size {config.random_size})", len(ids), need,
                       "random_size/num_random")
    order = np.random.default_rng([config.seed, _RANDOM_STREAM]).permutation(len(ids))[:need]
    chunks = [tuple(ids[i] for i in order[j * config.random_size:(j + 1) * config.random_size])
              for j in range(config.num_random + 1)]
    randoms = tuple(ImageSet(f"random500_{j}", "scene_only", config.split, c, data.manifest_hash)
                    for j, c in enumerate(chunks[:-1]))
    counterpart = ImageSet("random_counter_part", "scene_only", config.split, chunks[-1], data.manifest_hash)

    tid = [str(i) for i in data.subset("common_in_scene", "val").table["image_id"]]
    if not tid:
        raise BamError(f"no common_in_scene val images ({obj} on {scene}) in {data.root}; accepted: a build with them")
    chosen = [tid[i] for i in np.random.default_rng(config.seed).permutation(len(tid))]
    chosen = chosen if config.target_images is None else chosen[:config.target_images]
    targets = ImageSet(f"{obj}_{scene}", "common_in_scene", "val", tuple(chosen), data.manifest_hash)
    return ConceptSets(concept, randoms, counterpart, targets)


class ImageSource(Protocol):
    """Loads the pixels of an :class:`ImageSet` (RGB in [0, 1], [B, 3, H, W], CPU)."""

    def load(self, image_set: ImageSet, rows: Sequence[int]) -> Tensor: ...


class DataImageSource:
    """Images of a build through ``data.subset(name, split)`` and ``load_batch``."""

    def __init__(self, data: Any) -> None:
        """Wrap a :class:`bam.data.BamData` (or anything with the same ``subset``)."""
        self.data = data
        self._subsets: dict[tuple[str, str | None], tuple[Any, dict[str, int]]] = {}

    def load(self, image_set: ImageSet, rows: Sequence[int]) -> Tensor:
        """Rows ``rows`` of ``image_set`` (BamError for an id that is not in its subset)."""
        key = (image_set.subset, image_set.split)
        if key not in self._subsets:
            sub = self.data.subset(*key)
            self._subsets[key] = (sub, {str(i): n for n, i in enumerate(sub.table["image_id"])})
        sub, pos = self._subsets[key]
        wanted = [image_set.image_ids[r] for r in rows]
        missing = [i for i in wanted if i not in pos]
        if missing:
            raise BamError(f"tcav set {image_set.name!r}: image id {missing[0]!r} is not in subset "
                           f"{image_set.subset!r} ({image_set.split}); accepted: ids of that subset")
        images, _, _ = sub.load_batch([pos[i] for i in wanted])
        return images


class TensorImageSource:
    """Images given as tensors, one [N, 3, H, W] tensor per set name (tests, custom concepts)."""

    def __init__(self, images: Mapping[str, Tensor]) -> None:
        """``images[name][i]`` is image i of the set called ``name``."""
        self.images = dict(images)

    def load(self, image_set: ImageSet, rows: Sequence[int]) -> Tensor:
        """Rows ``rows`` of the tensor registered under ``image_set.name``."""
        if image_set.name not in self.images:
            raise BamError(f"no images for tcav set {image_set.name!r}; accepted: {', '.join(sorted(self.images))}")
        return self.images[image_set.name][torch.as_tensor(list(rows), dtype=torch.long)]


def sets_table(sets: ConceptSets) -> pd.DataFrame:
    """One row per (set, image): set name, role in the experiment, subset, split, image id."""
    kinds = {sets.concept.name: "concept", sets.counterpart.name: "counterpart", sets.targets.name: "target"}
    rows = [{"set": s.name, "kind": kinds.get(s.name, "random"), "subset": s.subset, "split": s.split,
             "image_id": i} for s in sets.all_sets for i in s.image_ids]
    return pd.DataFrame(rows, columns=["set", "kind", "subset", "split", "image_id"])

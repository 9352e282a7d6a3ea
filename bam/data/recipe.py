"""Dataset recipes: what to build (classes, sources, sizes, splits), as a frozen dataclass.

A recipe is the YAML in ``datasets/<name>.yaml`` (or any path) loaded with
:func:`bam.config.load_config`. Class lists are stored sorted: the label of a class is its index
in sorted order (SPEC §2.1, Yang & Kim 2019).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bam.config import load_config, resolve_named, short_repr, to_dict
from bam.errors import BamError

#: Names that are safe as folder names and CSV values.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: upper bound of instances_per_class (keeps ids, tables and the in-memory image cache sane)
MAX_INSTANCES = 100_000


@dataclass(frozen=True)
class Recipe:
    """What a build produces. Validated on construction; class lists are sorted."""

    name: str
    object_classes: tuple[str, ...]
    scene_classes: tuple[str, ...]
    common_object: str
    common_scene: str
    iir_scene: str
    object_source: str = "synthetic"
    scene_source: str = "synthetic"
    image_size: int = 64
    instances_per_class: int = 100
    val_instances: int = 10
    #: class -> COCO category name (default: the class name), e.g. stop_sign -> "stop sign"
    coco_categories: Mapping[str, str] = field(default_factory=dict)
    #: class -> folder under the scene root (default: the class name), e.g. track -> t/track/outdoor
    scene_folders: Mapping[str, str] = field(default_factory=dict)
    #: a class whose unreadable/corrupt items exceed this fraction of those examined is an error
    max_corrupt_fraction: float = 0.05
    #: synthetic source: objects are rotated uniformly in [-x, x] degrees (180 = any orientation)
    synthetic_max_rotation: float = 180.0
    #: commonality-k training sets: rows per train scene image, each with the common object at another
    #: of its placements (its boxes in the other scene classes, same instance); val keeps one row
    commonality_placements: int = 1
    description: str = ""

    def __post_init__(self) -> None:
        """Sort class lists and mappings, then validate."""
        object.__setattr__(self, "object_classes", tuple(sorted(self.object_classes)))
        object.__setattr__(self, "scene_classes", tuple(sorted(self.scene_classes)))
        object.__setattr__(self, "coco_categories", dict(sorted(dict(self.coco_categories).items())))
        object.__setattr__(self, "scene_folders", dict(sorted(dict(self.scene_folders).items())))
        self._validate()

    def _validate(self) -> None:
        """Raise a one-line BamError on the first inconsistent field."""
        where = f"recipe {short_repr(self.name)}"
        if not _NAME.match(self.name):
            raise BamError(f"{where}: bad name; accepted: letters, digits, '_', '.', '-'")
        for kind, classes in (("object_classes", self.object_classes), ("scene_classes", self.scene_classes)):
            if len(classes) < 2:
                raise BamError(f"{where}: {kind} needs at least 2 classes, got {list(classes)}")
            if len(set(classes)) != len(classes):
                raise BamError(f"{where}: duplicate names in {kind}: {list(classes)}")
            bad = [c for c in classes if not _NAME.match(c)]
            if bad:
                raise BamError(f"{where}: bad class name(s) {bad} in {kind}; accepted: letters, digits, '_', '.', '-'")
        for fld, value, classes in (("common_object", self.common_object, self.object_classes),
                                    ("common_scene", self.common_scene, self.scene_classes),
                                    ("iir_scene", self.iir_scene, self.scene_classes)):
            if value not in classes:
                raise BamError(f"{where}: {fld} {short_repr(value)} is not a class; accepted: {', '.join(classes)}")
        from bam.data.sources import source_names

        for kind, source in (("object", self.object_source), ("scene", self.scene_source)):
            if source not in source_names(kind):
                raise BamError(f"{where}: unknown {kind}_source {short_repr(source)}; "
                               f"accepted: {', '.join(source_names(kind))}")
        if not 16 <= self.image_size <= 1024:
            raise BamError(f"{where}: image_size {self.image_size} out of range; accepted: 16..1024")
        if not 2 <= self.instances_per_class <= MAX_INSTANCES:
            raise BamError(f"{where}: instances_per_class {self.instances_per_class} out of range; "
                           f"accepted: 2..{MAX_INSTANCES}")
        if not 1 <= self.val_instances < self.instances_per_class:
            raise BamError(f"{where}: val_instances {self.val_instances} out of range; "
                           f"accepted: 1..{self.instances_per_class - 1}")
        for fld, mapping, classes in (("coco_categories", self.coco_categories, self.object_classes),
                                      ("scene_folders", self.scene_folders, self.scene_classes)):
            extra = sorted(set(mapping) - set(classes))
            if extra:
                raise BamError(f"{where}: {fld} names unknown class(es) {extra}; accepted: {', '.join(classes)}")
        for fld, folder in self.scene_folders.items():
            parts = folder.replace("\\", "/").split("/")
            if not folder or folder.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts or "" in parts:
                raise BamError(f"{where}: scene_folders.{fld} {folder!r} is not a plain relative folder; "
                               "accepted: a path inside the --scenes folder such as t/track/outdoor (no '..')")
        if not 0.0 <= self.max_corrupt_fraction <= 1.0:
            raise BamError(f"{where}: max_corrupt_fraction {self.max_corrupt_fraction} out of range; accepted: 0..1")
        if not 0.0 <= self.synthetic_max_rotation <= 180.0:
            raise BamError(f"{where}: synthetic_max_rotation {self.synthetic_max_rotation} out of range; "
                           "accepted: 0..180 (degrees)")
        if not 1 <= self.commonality_placements <= len(self.scene_classes):
            raise BamError(f"{where}: commonality_placements {self.commonality_placements} out of range; "
                           f"accepted: 1..{len(self.scene_classes)} (the number of scene classes)")

    # --- derived quantities -------------------------------------------------------------------

    @property
    def train_instances(self) -> int:
        """Instances 0..train_instances-1 of every class are train, the rest val (SPEC §2.3)."""
        return self.instances_per_class - self.val_instances

    def scale_range(self) -> tuple[int, int]:
        """Half-open range [int(W/sqrt3), int(W/sqrt2)) of the pasted object's longer side (SPEC §2.3)."""
        w = self.image_size
        return int(w / math.sqrt(3)), int(w / math.sqrt(2))

    def coco_category(self, cls: str) -> str:
        """COCO category name of object class ``cls``."""
        return self.coco_categories.get(cls, cls)

    def scene_folder(self, cls: str) -> str:
        """Folder of scene class ``cls`` relative to the scene root."""
        return self.scene_folders.get(cls, cls)

    def to_dict(self) -> dict[str, Any]:
        """Plain form (for the manifest and recipe.yaml)."""
        return to_dict(self)


def load_recipe(name_or_path: str | os.PathLike[str] | Mapping[str, Any],
                overrides: Mapping[str, Any] | None = None) -> Recipe:
    """Load a built-in recipe by name (``datasets/<name>.yaml``), a YAML path, or a mapping."""
    if isinstance(name_or_path, Mapping):
        return load_config(Recipe, name_or_path, overrides)
    path: Path = resolve_named(name_or_path, "datasets", "recipe")
    return load_config(Recipe, path, overrides)

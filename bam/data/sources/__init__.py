"""Image sources: where object cut-outs and scene images come from.

A source is a class registered in :data:`SOURCES` with the :class:`Source` interface. The build
calls :meth:`Source.prepare` once in the main process (fast checks: paths, category names,
folders; returns a small picklable plan per class) and :meth:`Source.produce` once per class,
possibly in a worker process. ``produce`` yields :class:`Item` objects in source order; the build
keeps the first ``instances_per_class`` usable ones (SPEC §2.2: "first N usable").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from bam.registry import Registry

if TYPE_CHECKING:
    from bam.data.recipe import Recipe


@dataclass(frozen=True)
class SourceInputs:
    """Paths of real data given on the command line (None where not given)."""

    coco_images: Path | None = None
    coco_annotations: Path | None = None
    scenes: Path | None = None


@dataclass
class Item:
    """One candidate from a source: pixels, or a skip reason.

    ``pixels`` is uint8 HxWx4 (object cut-out, alpha = exact mask in {0, 255}) or HxWx3 (scene).
    ``corrupt`` marks skips that count towards ``Recipe.max_corrupt_fraction`` (unreadable or
    missing files), as opposed to ordinary exclusions (e.g. an empty mask).
    """

    name: str
    pixels: np.ndarray | None = None
    reason: str = ""
    corrupt: bool = False
    source_sha256: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ClassPlan:
    """What :meth:`Source.produce` needs for one class (picklable, small)."""

    kind: str  # "object" | "scene"
    class_name: str
    class_index: int
    data: Any = None


class Source(Protocol):
    """Interface of a registered source."""

    #: which kinds this source provides: "object", "scene" or both
    kinds: tuple[str, ...]
    #: identifies the generator/reader version (goes into the manifest)
    version: str

    def prepare(self, recipe: Recipe, kind: str, inputs: SourceInputs) -> tuple[list[ClassPlan], dict[str, Any]]:
        """Validate inputs; return one plan per class (recipe order) and manifest info."""
        ...

    def produce(self, recipe: Recipe, plan: ClassPlan, seed: int) -> Iterator[Item]:
        """Yield candidates for one class in source order (pure given plan and seed)."""
        ...


SOURCES: Registry[type] = Registry("source")


def get_source(name: str) -> Source:
    """Instantiate the registered source ``name``."""
    return SOURCES.get(name)()


def source_names(kind: str) -> list[str]:
    """Registered sources that provide ``kind`` ("object" or "scene"), sorted."""
    return [n for n in SOURCES.names() if kind in getattr(SOURCES.get(n), "kinds", ())]


# built-in sources register themselves on import (after SOURCES exists)
from bam.data.sources import coco, scenes, synthetic  # noqa: E402,F401

__all__ = ["SOURCES", "ClassPlan", "Item", "Source", "SourceInputs", "get_source", "source_names"]

"""The procedural source (SPEC §2.5): works offline, exact masks, same structure as COCO+MiniPlaces.

Class names must be names of procedural families (:data:`SHAPES` for objects, :data:`TEXTURES`
for scenes). Generation is vectorised in fixed chunks of :data:`CHUNK` images, each seeded from
(seed, kind, class name, chunk index), so the output does not depend on the number of workers.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from bam.data.sources import SOURCES, ClassPlan, Item, SourceInputs
from bam.data.sources._procedural import GENERATOR_VERSION, SHAPES, TEXTURES, make_objects, make_scenes
from bam.errors import BamError

if TYPE_CHECKING:
    from bam.data.recipe import Recipe

CHUNK = 64
_KIND_ID = {"object": 1, "scene": 2}


@SOURCES.register("synthetic")
class SyntheticSource:
    """Procedural shapes (objects) and textures (scenes) with random colours and geometry."""

    kinds = ("object", "scene")
    version = GENERATOR_VERSION

    def prepare(self, recipe: Recipe, kind: str, inputs: SourceInputs) -> tuple[list[ClassPlan], dict[str, Any]]:
        """Check that every class names a procedural family."""
        families = SHAPES if kind == "object" else TEXTURES
        classes = recipe.object_classes if kind == "object" else recipe.scene_classes
        unknown = [c for c in classes if c not in families]
        if unknown:
            raise BamError(f"synthetic {kind} class(es) {unknown} unknown; accepted: {', '.join(sorted(families))}")
        plans = [ClassPlan(kind, c, i) for i, c in enumerate(classes)]
        return plans, {"source": "synthetic", "generator_version": GENERATOR_VERSION}

    def produce(self, recipe: Recipe, plan: ClassPlan, seed: int) -> Iterator[Item]:
        """Yield generated images in chunks (never skips anything)."""
        size, total = recipe.image_size, recipe.instances_per_class
        salt = zlib.crc32(plan.class_name.encode())
        for chunk, start in enumerate(range(0, total, CHUNK)):
            n = min(CHUNK, total - start)
            rng = np.random.default_rng(np.random.SeedSequence([seed, _KIND_ID[plan.kind], salt, chunk]))
            if plan.kind == "object":
                images = make_objects(rng, plan.class_name, n, size, recipe.synthetic_max_rotation)
            else:
                images = list(make_scenes(rng, plan.class_name, n, size))
            for k, img in enumerate(images):
                yield Item(name=f"{plan.class_name}/{start + k}", pixels=img)

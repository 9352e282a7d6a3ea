"""Self-consistency of a dataset manifest: every field the layout depends on is checked against
the recipe it records and against the file table (so an edited ``instances_per_class``, class
list or subset count is caught by ``open_dataset`` and ``bam data verify``, not silently used).

The manifest bytes themselves are the dataset's identity (``manifest_hash``), and every file it
lists is hashed in it, so a manifest that passes these checks describes exactly one layout.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bam.config import SEED_MAX, from_dict
from bam.data._subsets import id_width, subset_names
from bam.data.recipe import Recipe
from bam.errors import BamError

_SHA = re.compile(r"^[0-9a-f]{64}$")
#: subset -> (train rows, val rows) as a function of (O, S, n, val)
_BASE_SUBSETS = ("obj", "scene", "scene_only")


def expected_files(recipe: Recipe, n: int, export: bool) -> set[str]:
    """Relative paths a build of ``recipe`` with ``n`` instances per class must list."""
    w = id_width(n)
    files = {f"objects/{c}/{i:0{w}d}.png" for c in recipe.object_classes for i in range(n)}
    files |= {f"scenes/{s}/{i:0{w}d}.png" for s in recipe.scene_classes for i in range(n)}
    files |= {"placements.csv", "recipe.yaml"}
    files |= {f"subsets/{name}.csv" for name in subset_names(len(recipe.scene_classes))}
    if export:
        files |= {f"composites/{o}__{s}__{i:0{w}d}.png" for o in recipe.object_classes
                  for s in recipe.scene_classes for i in range(n)}
    return files


def _subset_counts(name: str, o: int, s: int, n: int, val: int, p: int) -> tuple[int, int]:
    """(train, val) rows of subset ``name`` (SPEC §2.4); ``p`` = the recipe's commonality_placements."""
    if name in _BASE_SUBSETS:
        return (n - val) * o * s, val * o * s
    if name in ("common_in_scene", "iir_scene"):
        return 0, val
    return (n - val) * s * p, val * s  # commonality-k: p rows per train scene image, one per val image


def layout_problems(manifest: Any) -> list[str]:
    """Every inconsistency between the manifest's fields, its recipe and its file table."""
    from bam.data.build import FORMAT

    if not isinstance(manifest, dict):
        return [f"manifest is not a JSON object ({type(manifest).__name__})"]
    if manifest.get("format") != FORMAT:
        return [f"manifest format {manifest.get('format')!r}; accepted: {FORMAT}"]
    try:
        recipe = from_dict(Recipe, manifest.get("recipe") or {}, "manifest.recipe")
    except BamError as exc:
        return [f"manifest recipe is invalid: {exc}"]
    problems: list[str] = []

    def expect(key: str, value: Any) -> None:
        if manifest.get(key) != value:
            problems.append(f"manifest {key} is {manifest.get(key)!r}; its recipe implies {value!r}")

    for key in ("object_classes", "scene_classes"):
        expect(key, list(getattr(recipe, key)))
    for key in ("image_size", "val_instances", "common_object", "common_scene", "iir_scene"):
        expect(key, getattr(recipe, key))
    seed = manifest.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        problems.append(f"manifest seed {seed!r}; accepted: an integer in 0..{SEED_MAX}")
    export = manifest.get("export_composites")
    if not isinstance(export, bool):
        problems.append(f"manifest export_composites {export!r}; accepted: true or false")
    n = manifest.get("instances_per_class")
    if isinstance(n, bool) or not isinstance(n, int) or not recipe.val_instances < n <= recipe.instances_per_class:
        problems.append(f"manifest instances_per_class {n!r}; accepted: an integer in "
                        f"{recipe.val_instances + 1}..{recipe.instances_per_class} (the recipe's)")
        return problems
    expect("train_instances", n - recipe.val_instances)
    o, s, val = len(recipe.object_classes), len(recipe.scene_classes), recipe.val_instances
    files = manifest.get("files")
    if not isinstance(files, dict):
        return [*problems, "manifest has no 'files' table"]
    bad_sha = sorted(str(k) for k, v in files.items() if not isinstance(v, str) or not _SHA.match(v))
    if bad_sha:
        problems.append(f"manifest files table has malformed sha256 values for {bad_sha[:3]}")
    want = expected_files(recipe, n, bool(export))
    missing, extra = sorted(want - set(files)), sorted(set(files) - want)
    if missing:
        problems.append(f"manifest files table lacks {len(missing)} file(s) of the layout, e.g. {missing[0]}")
    if extra:
        problems.append(f"manifest files table lists {len(extra)} file(s) outside the layout, e.g. {extra[0]}")
    subsets = manifest.get("subsets")
    names = subset_names(s)
    if not isinstance(subsets, dict) or sorted(subsets) != sorted(names):
        problems.append(f"manifest subsets are {sorted(subsets) if isinstance(subsets, dict) else subsets!r}; "
                        f"the layout has {', '.join(names)}")
    else:
        for name in names:
            train, v = _subset_counts(name, o, s, n, val, recipe.commonality_placements)
            entry = {"file": f"subsets/{name}.csv", "label_kind": "object" if name == "obj" else "scene",
                     "train": train, "val": v}
            if subsets[name] != entry:
                problems.append(f"manifest subset {name} is {subsets[name]!r}; the layout implies {entry!r}")
    counts = manifest.get("counts")
    want_counts = {"objects": n * o, "scenes": n * s, "composites": n * o * s, "files": len(files)}
    if not isinstance(counts, dict) or any(counts.get(k) != v for k, v in want_counts.items()):
        problems.append(f"manifest counts {counts!r} do not match the layout {want_counts!r}")
    return problems


def check_layout(manifest: Any, root: Path) -> None:
    """BamError naming the first layout problem of the manifest of the build in ``root``."""
    problems = layout_problems(manifest)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise BamError(f"{root / 'manifest.json'} is not self-consistent: {problems[0]}{more}; "
                       f"run `bam data verify {root}` or rebuild")

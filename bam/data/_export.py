"""Optional export of composite PNGs (``bam build-data --export-composites``).

The Dataset renders composites on the fly; this writes the very same pixels (uint8, rounded from
the float rendering) to ``composites/<image_id>.png`` for inspection or other tools.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bam._io import sha256_bytes, write_bytes
from bam._paths import confine
from bam.data._compose import compose
from bam.data._store import ImageStore
from bam.data.recipe import Recipe

BATCH = 128


def _export_object(args: tuple[str, Recipe, int, pd.DataFrame]) -> dict[str, str]:
    """Worker: write the composites of one object class; return {relative path: sha256}."""
    from bam.data.build import png_bytes

    root, recipe, n, rows = args
    torch.set_num_threads(1)
    store = ImageStore(Path(root), list(recipe.object_classes), list(recipe.scene_classes), n, recipe.image_size)
    files: dict[str, str] = {}
    for start in range(0, len(rows), BATCH):
        part = rows.iloc[start:start + BATCH]
        inst = torch.tensor(part["instance"].to_numpy())
        obj = torch.tensor(part["object_label"].to_numpy())
        scenes, objects, hw = store.gather(torch.tensor(part["scene_label"].to_numpy()), obj, inst)
        boxes = torch.tensor(part[["x0", "y0", "w", "h"]].to_numpy())
        images, _ = compose(scenes, objects, hw, boxes, torch.ones(len(part), dtype=torch.bool))
        pixels = (images * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for image_id, px in zip(part["image_id"], pixels):
            data = png_bytes(np.ascontiguousarray(px))
            rel = f"composites/{image_id}.png"
            write_bytes(confine(root, Path(root) / rel, "composite image"), data)
            files[rel] = sha256_bytes(data)
    return files


def export_composites(out: Path, recipe: Recipe, n: int, placements: pd.DataFrame, workers: int,
                      progress: bool) -> dict[str, str]:
    """Write every composite as PNG (one job per object class); return their hashes."""
    from bam._progress import progress_bar
    from bam.data.build import _map

    jobs: list[Any] = [(str(out), recipe, n, placements[placements["object"] == o].reset_index(drop=True))
                       for o in recipe.object_classes]
    files: dict[str, str] = {}
    for res in progress_bar(_map(_export_object, jobs, workers), total=len(jobs), desc="composites", enabled=progress,
                            unit="class"):
        files.update(res)
    return files

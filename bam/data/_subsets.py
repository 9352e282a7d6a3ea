"""Placement and subset tables (SPEC §2.4 and the data contract in docs/architecture.md).

Every subset table has the columns of :data:`COLUMNS`; ``input`` says whether row i is rendered
as the composite (object pasted) or as the scene-only image (mask = where the object would be,
or empty when ``x0 == -1``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bam.data.recipe import Recipe
from bam.roles import commonality, commonality_roles

COLUMNS = ["image_id", "object", "scene", "object_label", "scene_label", "label", "split", "instance",
           "x0", "y0", "w", "h", "input"]
BOX = ["x0", "y0", "w", "h"]


def id_width(n: int) -> int:
    """Zero-padding width of instance numbers in ids and file names."""
    return max(4, len(str(n - 1)))


def placement_table(recipe: Recipe, n: int, boxes: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per (object, scene, instance), object-major, with split and placement box."""
    objs, scenes = recipe.object_classes, recipe.scene_classes
    grid = np.meshgrid(np.arange(len(objs)), np.arange(len(scenes)), np.arange(n), indexing="ij")
    o, s, i = (g.ravel() for g in grid)
    width = id_width(n)
    obj_names, scene_names = np.array(objs, dtype=object)[o], np.array(scenes, dtype=object)[s]
    frame = pd.DataFrame({
        "image_id": [f"{a}__{b}__{k:0{width}d}" for a, b, k in zip(obj_names, scene_names, i)],
        "object": obj_names, "scene": scene_names, "object_label": o, "scene_label": s,
        "split": np.where(i >= n - recipe.val_instances, "val", "train"), "instance": i,
    })
    for key in BOX:
        frame[key] = boxes[key].ravel()
    return frame


def _labelled(frame: pd.DataFrame, label: str, input_kind: str) -> pd.DataFrame:
    """A subset table: ``frame`` with ``label`` taken from column ``label`` and ``input`` set."""
    out = frame.copy()
    out["label"] = out[label]
    out["input"] = input_kind
    return out[COLUMNS].reset_index(drop=True)


def commonality_order(recipe: Recipe) -> list[str]:
    """Scene classes in the order they receive the common object: common scene, then index order."""
    return [recipe.common_scene] + [s for s in recipe.scene_classes if s != recipe.common_scene]


def _placement_copies(recipe: Recipe, common: pd.DataFrame) -> pd.DataFrame:
    """Train rows p = 1..P-1 of each scene image (P = ``recipe.commonality_placements``): the common
    object's box from its placement of the same instance in the p-th other scene class (in
    :func:`commonality_order` after the image's own scene); ids get ``__p<p>``. P = 1: no rows."""
    train = common[common["split"] == "train"]
    boxes = train.set_index(["scene", "instance"])[BOX]
    order = commonality_order(recipe)
    copies = []
    for p in range(1, recipe.commonality_placements):
        c = train.copy()
        others = [[s for s in order if s != own][p - 1] for own in c["scene"]]
        c[BOX] = boxes.loc[list(zip(others, c["instance"]))].to_numpy()
        c["image_id"] = c["image_id"] + f"__p{p}"
        copies.append(c)
    return pd.concat(copies) if copies else train.iloc[:0]


def commonality_table(recipe: Recipe, placements: pd.DataFrame, k: int, n: int) -> pd.DataFrame:
    """commonality-k: the common object pasted in every image of k scene classes, the others
    scene-only; ``recipe.commonality_placements`` rows per train scene image (the common object at
    that many of its placements, as the scene labelling sees each scene image under ten objects),
    one row per val scene image."""
    with_object = set(commonality_order(recipe)[:k])
    common = placements[placements["object"] == recipe.common_object]
    common = pd.concat([common, _placement_copies(recipe, common)], ignore_index=True)
    plain = ~common["scene"].isin(with_object)
    width = id_width(n)
    suffix = common["image_id"].str.extract(r"(__p\d+)$", expand=False).fillna("")
    common.loc[plain, "image_id"] = [f"{sc}__{i:0{width}d}{sfx}" for sc, i, sfx in
                                     zip(common.loc[plain, "scene"], common.loc[plain, "instance"], suffix[plain])]
    common.loc[plain, "object"] = ""
    common.loc[plain, "object_label"] = -1
    for key in BOX:
        common.loc[plain, key] = -1
    common["label"] = common["scene_label"]
    common["input"] = np.where(plain, "scene_only", "composite")
    return common.sort_values(["scene_label", "instance", "image_id"], kind="stable")[COLUMNS].reset_index(drop=True)


def subset_tables(recipe: Recipe, placements: pd.DataFrame, n: int) -> dict[str, pd.DataFrame]:
    """Every subset of SPEC §2.4 except iir_patch (written later by evaluation under derived/)."""
    tables = {
        "obj": _labelled(placements, "object_label", "composite"),
        "scene": _labelled(placements, "scene_label", "composite"),
        "scene_only": _labelled(placements, "scene_label", "scene_only"),
    }
    common = (placements["object"] == recipe.common_object) & (placements["split"] == "val")
    tables["common_in_scene"] = _labelled(placements[common & (placements["scene"] == recipe.common_scene)],
                                          "scene_label", "composite")
    tables["iir_scene"] = _labelled(placements[common & (placements["scene"] == recipe.iir_scene)],
                                    "scene_label", "scene_only")
    for k in range(1, len(recipe.scene_classes) + 1):
        tables[commonality(k)] = commonality_table(recipe, placements, k, n)
    return tables


def subset_names(num_scenes: int) -> list[str]:
    """All subset names of a dataset with ``num_scenes`` scene classes."""
    base = ["obj", "scene", "scene_only", "common_in_scene", "iir_scene"]
    return base + list(commonality_roles(num_scenes))

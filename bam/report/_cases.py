"""Per-image material for the report: worst MCS cases from records.csv and example attributions.

``examples.safetensors`` (optional, beside results.csv) holds fixed example images:

* ``images``: float [E,3,H,W] in [0, 1];
* ``masks``: float [E,1,H,W] of {0, 1} (the pasted-object mask), optional;
* ``attr/<method>/<role>``: float [E,C,H,W], the attribution of image e by ``method`` under the
  model of ``role`` (e.g. ``attr/gradcam/obj``, ``attr/gradcam/scene``);
* metadata ``image_ids`` (optional): a JSON list of E image ids used as row labels.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bam.errors import BamError

EXAMPLES_FILE = "examples.safetensors"


@dataclass(frozen=True)
class Examples:
    """Example images, masks and attributions keyed by role then method."""

    images: np.ndarray
    masks: np.ndarray | None
    attrs: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # role -> method -> [E,C,H,W]
    image_ids: tuple[str, ...] | None = None


def load_examples(path: str | os.PathLike[str]) -> Examples:
    """Read and check an ``examples.safetensors`` file (layout in the module docstring)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    expected = "expected keys images [E,3,H,W], masks [E,1,H,W] and attr/<method>/<role> [E,C,H,W]"
    try:
        with safe_open(str(path), framework="numpy") as fh:
            keys = list(fh.keys())
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in keys}
    except (SafetensorError, OSError, ValueError) as exc:
        raise BamError(f"cannot read examples file {path}: {str(exc).splitlines()[0]}; {expected}") from None
    images = tensors.get("images")
    if images is None or images.ndim != 4 or images.shape[1] != 3:
        shape = None if images is None else list(images.shape)
        raise BamError(f"bad examples file {path}: 'images' is {shape}; {expected}")
    e, _, h, w = images.shape
    masks = tensors.get("masks")
    if masks is not None and tuple(masks.shape) != (e, 1, h, w):
        raise BamError(f"bad examples file {path}: 'masks' is {list(masks.shape)}, expected {[e, 1, h, w]}")
    attrs: dict[str, dict[str, np.ndarray]] = {}
    for key in sorted(keys):
        if not key.startswith("attr/"):
            continue
        parts = key.split("/")
        arr = tensors[key]
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise BamError(f"bad examples file {path}: key {key!r}; {expected}")
        if arr.ndim != 4 or arr.shape[0] != e or tuple(arr.shape[2:]) != (h, w):
            raise BamError(f"bad examples file {path}: {key!r} is {list(arr.shape)}, expected [{e}, C, {h}, {w}]")
        attrs.setdefault(parts[2], {})[parts[1]] = arr.astype(np.float32)
    ids = None
    if "image_ids" in meta:
        try:
            parsed = json.loads(meta["image_ids"])
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list) and len(parsed) == e:
            ids = tuple(str(x) for x in parsed)
    return Examples(images=images.astype(np.float32), masks=None if masks is None else masks.astype(np.float32),
                    attrs=attrs, image_ids=ids)


def worst_mcs_cases(records: pd.DataFrame, n: int = 5, obj_role: str = "obj",
                    scene_role: str = "scene") -> pd.DataFrame:
    """Per method, the ``n`` composites with the lowest g(f_obj, x) - g(f_scene, x) (SPEC §4.3).

    Uses records with ``input == "composite"`` of the two roles, valid, finite g, and classified
    correctly by both models (the MCS filter, SPEC §4.2). Ties are broken by image_id. Returns
    columns method, image_id, g_obj, g_scene, difference.
    """
    cols = ["method", "image_id", "g_obj", "g_scene", "difference"]
    r = records[(records["input"] == "composite") & records["model_role"].isin([obj_role, scene_role])]
    r = r[r["valid"] & np.isfinite(r["g"].to_numpy(dtype=float))]
    r = r.drop_duplicates(["method", "image_id", "model_role"], keep="first")
    if r.empty:
        return pd.DataFrame(columns=cols)
    g = r.pivot(index=["method", "image_id"], columns="model_role", values="g")
    ok = r.pivot(index=["method", "image_id"], columns="model_role", values="correct")
    if obj_role not in g.columns or scene_role not in g.columns:
        return pd.DataFrame(columns=cols)
    both = ok[obj_role].eq(True) & ok[scene_role].eq(True)
    g = g[both & g[obj_role].notna() & g[scene_role].notna()]
    out = pd.DataFrame({"g_obj": g[obj_role].astype(float), "g_scene": g[scene_role].astype(float)})
    out["difference"] = out["g_obj"] - out["g_scene"]
    out = out.reset_index().sort_values(["method", "difference", "image_id"], kind="stable")
    out = out.groupby("method", sort=True, group_keys=False).head(n)
    return out[cols].reset_index(drop=True)

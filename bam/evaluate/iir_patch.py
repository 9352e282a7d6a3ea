"""The IIR patch set (SPEC §4.6; Yang & Kim 2019, §3.3): functionally insignificant patches.

For every iir_scene val image x (a scene-only image of the IIR scene, with the mask of where the
common object is in its composite) a patch d confined to that mask is found by plain gradient
descent on ``||f(x+d) - f(x)||_2 - alpha*||255 d||_2 + beta*255*P(x+d)`` (P = L1 distance to the
pixel box [0, 1]), d initialised to the common-object composite's pixels inside the mask and
re-masked after every step. The terms are in the original's 0-255 units, so its step size 500
becomes ``500/255**2`` on the [0, 1] gradient (an exact change of variables). The final image
is clipped to [0, 1]; per image we record ||f(x+d) - f(x)||_2, ||d||_2 (in [0, 1] units) and
whether the prediction is unchanged. Only unchanged images enter IIR.

Built once per scene_only model and cached under
``data.derived_dir("iir_patch")/<weights sha256[:16]>/`` (patch.safetensors + table.csv +
meta.json); a cache built with other parameters or for other images is rebuilt. meta.json records
the sha256 of patch.safetensors and of table.csv (``files``) and of its own content
(``meta_sha256``): a cache whose files do not match (an edited table, a damaged patch file, an
edited meta record) is rebuilt with a warning naming the file, never used. A cache folder or file
that a symlink takes outside the dataset root is refused (BamError), not read or written.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bam._io import csv_bytes, hash_json, read_json, sha256_bytes, tensors_bytes, write_bytes, write_json
from bam._paths import confine
from bam.errors import BamError
from bam.evaluate.config import PatchConfig

log = logging.getLogger("bam.evaluate")

_SCALE = 255.0


@dataclass(frozen=True)
class PatchSet:
    """Patched images (clipped to [0, 1]) and their per-image records, row i <-> image_ids[i]."""

    image_ids: tuple[str, ...]
    patched: Tensor
    table: pd.DataFrame

    def rows(self, ids: list[str]) -> list[int]:
        """Row positions of ``ids`` (BamError naming the first one that is absent)."""
        pos = {i: n for n, i in enumerate(self.image_ids)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise BamError(f"image {missing[0]!r} is not in the IIR patch set; delete the patch cache to rebuild it")
        return [pos[i] for i in ids]


def patch_objective(model: torch.nn.Module, x: Tensor, delta: Tensor, base_logits: Tensor,
                    alpha: float, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per-image objective of SPEC §4.6 and its logit change and patch norm ([N] each)."""
    z = x + delta
    change = (model(z) - base_logits).flatten(1).norm(dim=1)
    dnorm = delta.flatten(1).norm(dim=1)
    outside = (torch.relu(z - 1.0) + torch.relu(-z)).flatten(1).sum(dim=1)
    loss = change - alpha * _SCALE * dnorm + beta * _SCALE * outside
    return loss, change, dnorm


def optimise_patch(model: torch.nn.Module, x: Tensor, init: Tensor, mask: Tensor,
                   cfg: PatchConfig) -> dict[str, Tensor]:
    """Plain gradient descent on a batch (SPEC §4.6). ``init``: the composite; ``mask``: [N, 1, H, W].

    Returns ``patched`` (x + d clipped to [0, 1]), ``logit_change``, ``delta_norm`` (of the final,
    clipped d) and ``unchanged`` (bool), all computed on the clipped image.
    """
    mask = (mask > 0.5).to(x.dtype)
    with torch.no_grad():
        base = model(x)
    delta = ((init - x) * mask).detach()
    for _ in range(cfg.steps):
        delta.requires_grad_(True)
        loss, _c, _n = patch_objective(model, x, delta, base, cfg.alpha, cfg.beta)
        (grad,) = torch.autograd.grad(loss.sum(), delta)
        with torch.no_grad():
            delta = ((delta - cfg.step_size * grad) * mask).detach()
    with torch.no_grad():
        patched = (x + delta).clamp(0.0, 1.0)
        logits = model(patched)
        change = (logits - base).flatten(1).norm(dim=1)
        dnorm = (patched - x).flatten(1).norm(dim=1)
        unchanged = logits.argmax(1) == base.argmax(1)
    return {"patched": patched, "logit_change": change, "delta_norm": dnorm, "unchanged": unchanged,
            "pred_before": base.argmax(1), "pred_after": logits.argmax(1)}


def _composite_rows(data: Any, ids: list[str]) -> list[int]:
    """Rows of the val composites (subset obj) with the given image ids."""
    table = data.subset("obj", split="val").table
    pos = {str(i): n for n, i in enumerate(table["image_id"].astype(str))}
    missing = [i for i in ids if i not in pos]
    if missing:
        raise BamError(f"iir_scene image {missing[0]!r} has no composite in the obj val subset; "
                       "the dataset is incomplete")
    return [pos[i] for i in ids]


def build_patch_set(data: Any, model: torch.nn.Module, model_sha256: str, cfg: PatchConfig,
                    device: torch.device, progress: bool = False) -> PatchSet:
    """Load the cached patch set of this scene_only model, or build (and cache) it for every iir_scene val image."""
    sub = data.subset("iir_scene", split="val")
    ids = [str(i) for i in sub.table["image_id"]]
    base = Path(data.derived_dir("iir_patch"))
    folder = confine(base, base / model_sha256[:16], "IIR patch cache folder")
    meta_want = {"params": {"steps": cfg.steps, "alpha": cfg.alpha, "beta": cfg.beta, "step_size": cfg.step_size},
                 "manifest_hash": data.manifest_hash, "model_sha256": model_sha256, "ids_hash": hash_json(ids)}
    cached = _load(folder, meta_want)
    if cached is not None:
        return cached
    log.info("building the IIR patch set (%d images, %d steps) in %s", len(ids), cfg.steps, folder)
    comp = data.subset("obj", split="val")
    crow = _composite_rows(data, ids)
    outs: list[dict[str, Tensor]] = []
    model.eval()
    from bam._progress import progress_bar

    starts = range(0, len(ids), cfg.batch_size)
    for s in progress_bar(starts, desc="iir patch", enabled=progress, unit="batch"):
        idx = list(range(s, min(len(ids), s + cfg.batch_size)))
        x, _y, m = sub.load_batch(idx)
        init, _y2, _m2 = comp.load_batch(crow[s:s + len(idx)])
        res = optimise_patch(model, x.to(device), init.to(device), m.to(device), cfg)
        outs.append({k: v.detach().cpu() for k, v in res.items()})
    cat = {k: torch.cat([o[k] for o in outs]) if outs else torch.empty(0) for k in
           ("patched", "logit_change", "delta_norm", "unchanged", "pred_before", "pred_after")}
    table = pd.DataFrame({
        "image_id": ids, "logit_change": cat["logit_change"].double().numpy(),
        "delta_norm": cat["delta_norm"].double().numpy(), "unchanged": cat["unchanged"].numpy().astype(bool),
        "pred_before": cat["pred_before"].numpy().astype(int), "pred_after": cat["pred_after"].numpy().astype(int),
    })
    patched = cat["patched"].float().contiguous()
    blobs = {PATCH_FILE: tensors_bytes({"patched": patched}), TABLE_FILE: csv_bytes(table)}
    for name, blob in blobs.items():
        write_bytes(_file(folder, name), blob)
    meta = {**meta_want, "image_ids": ids, "files": {n: sha256_bytes(b) for n, b in blobs.items()},
            "n_unchanged": int(table["unchanged"].sum())}
    write_json(_file(folder, META_FILE), {**meta, META_KEY: hash_json(meta)})
    log.info("IIR patch set: %d of %d images keep their prediction", int(table["unchanged"].sum()), len(ids))
    return PatchSet(tuple(ids), patched, table)


PATCH_FILE, TABLE_FILE, META_FILE = "patch.safetensors", "table.csv", "meta.json"
#: meta.json's hash of its own content (every other key)
META_KEY = "meta_sha256"


def _file(folder: Path, name: str) -> Path:
    """``folder / name``, refused when a symlink takes it outside ``folder``."""
    return confine(folder, folder / name, "IIR patch cache file")


def _load(folder: Path, meta_want: dict[str, Any]) -> PatchSet | None:
    """The cached set in ``folder`` if complete, intact (every file matches meta.json's hashes) and
    built with ``meta_want``; else None (logged: rebuilt by the caller)."""
    meta_path = _file(folder, META_FILE)
    paths = {name: _file(folder, name) for name in (PATCH_FILE, TABLE_FILE)}  # a link out: refused, not rebuilt
    if not meta_path.is_file():
        return None
    try:
        meta = read_json(meta_path)
        if not isinstance(meta, dict) or meta.get(META_KEY) != hash_json({k: v for k, v in meta.items()
                                                                           if k != META_KEY}):
            raise ValueError(f"{META_FILE} does not match its own hash (edited or damaged, or written by an "
                             "older bam)")
        if any(meta.get(k) != v for k, v in meta_want.items()):
            log.info("IIR patch cache in %s was built with other parameters; rebuilding", folder)
            return None
        raw = {}
        for name, path in paths.items():
            raw[name] = path.read_bytes()
            if sha256_bytes(raw[name]) != meta["files"][name]:
                raise ValueError(f"{name} does not match its sha256 in {META_FILE} (edited or damaged)")
        from safetensors.torch import load as load_tensors

        patched = load_tensors(raw[PATCH_FILE])["patched"]
        table = pd.read_csv(io.BytesIO(raw[TABLE_FILE]), dtype={"image_id": str})
        table["unchanged"] = table["unchanged"].astype(str).str.lower().isin(["true", "1"])
        if list(table["image_id"]) != list(meta["image_ids"]) or patched.shape[0] != len(table):
            raise ValueError("inconsistent")
    except (OSError, ValueError, KeyError, TypeError, BamError) as exc:
        log.warning("IIR patch cache in %s is not intact (%s); rebuilding it", folder, exc)
        return None
    return PatchSet(tuple(meta["image_ids"]), patched, table.reset_index(drop=True))


def patch_summary(ps: PatchSet) -> dict[str, Any]:
    """Aggregate records of a patch set for provenance.json."""
    t = ps.table
    return {"n_images": len(t), "n_unchanged": int(t["unchanged"].sum()),
            "mean_logit_change": float(np.mean(t["logit_change"])) if len(t) else None,
            "mean_delta_norm": float(np.mean(t["delta_norm"])) if len(t) else None}

"""Example heatmaps for the report: a few fixed val composites, every method, obj and scene models.

Written to ``OUT/examples.safetensors`` (keys ``images``, ``masks``, ``attr/<method>/<role>``; read by
:func:`bam.report._cases.load_examples`). Each attribution is tagged in the file's metadata with the
model hash and method-parameter hash that produced it, so a re-run recomputes only what changed.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bam._io import save_tensors
from bam.errors import BamError

log = logging.getLogger("bam.evaluate")

ROLES = ("obj", "scene")


def _previous(path: Path, ids: list[str]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Attributions of an earlier examples file for the same images (else nothing)."""
    if not path.is_file():
        return {}, {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            if json.loads(meta.get("image_ids", "[]")) != ids:
                return {}, {}
            return {k: fh.get_tensor(k) for k in fh.keys() if k.startswith("attr/")}, meta  # noqa: SIM118 - safe_open is not iterable
    except (SafetensorError, OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s (%s); recomputing examples", path, str(exc).splitlines()[0])
        return {}, {}


def write_examples(runner: Any, n: int) -> Path | None:
    """Attribute ``n`` evenly spaced obj/val composites with every planned method on obj and scene models."""
    if n <= 0:
        return None
    from bam.methods import attribute

    sub = runner.data.subset("obj", split="val")
    idx = sorted({int(i) for i in np.linspace(0, len(sub) - 1, num=min(n, len(sub))).round()})
    ids = [str(sub.table["image_id"].iloc[i]) for i in idx]
    images, _, masks = sub.load_batch(idx)
    images = images.to(runner.device)
    path = runner.out / "examples.safetensors"
    old, old_meta = _previous(path, ids)
    tensors: dict[str, torch.Tensor] = {"images": images.cpu(), "masks": masks.cpu()}
    meta = {"image_ids": json.dumps(ids)}
    targets: dict[str, torch.Tensor] = {}  # model sha256 -> predicted classes (one forward per model)
    for plan in runner.methods.values():
        for role in ROLES:
            entry = runner.by_family.get(plan.family, {}).get(role)
            if entry is None:
                continue
            seed = runner.seed if plan.info.stochastic else ""  # like the record cache: seed only where it matters
            key, tag = f"attr/{plan.name}/{role}", f"{entry.sha256}:{plan.params_hash}:{seed}"
            if old_meta.get(key) == tag and key in old:
                tensors[key], meta[key] = old[key], tag
                continue
            if entry.sha256 not in targets:
                with torch.no_grad():
                    targets[entry.sha256] = entry.model(images).argmax(1)
            target = targets[entry.sha256]
            params = dict(plan.params)
            if runner.config.micro_batch:
                params.setdefault("micro_batch", runner.config.micro_batch)
            if plan.info.stochastic:
                params.setdefault("seed", runner.seed)
            try:
                attr = attribute(plan.name, entry.model, images, target, **params)
            except BamError as exc:
                log.warning("examples: %s on the %s model failed: %s", plan.name, role, exc)
                continue
            tensors[key], meta[key] = attr.float().cpu(), tag
    save_tensors(path, tensors, metadata=meta)
    return path

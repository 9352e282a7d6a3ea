"""Example heatmaps for the report: a few fixed val composites, every method, obj and scene models.

Saved as ``examples.safetensors`` in the output set (keys ``images``, ``masks``,
``attr/<method>/<role>``; read by :func:`bam.report._cases.load_examples`). Each attribution is
tagged in the file's metadata with the model hash and method-parameter hash that produced it, so a
re-run recomputes only what changed. A method that raises is recorded and left out, never fatal.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bam.evaluate._guard import ModelGuard, StateChanged, call_guarded, failure_line
from bam.evaluate.plan import EvalPlan
from bam.roles import OBJ, SCENE

log = logging.getLogger("bam.evaluate")

ROLES = (OBJ, SCENE)
EXAMPLES_FILE = "examples.safetensors"


@dataclass(frozen=True)
class Examples:
    """The tensors and metadata of an examples file, and the methods that failed on them."""

    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    failures: dict[str, str]


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
            keys = [k for k in fh.keys() if k.startswith("attr/")]  # noqa: SIM118 - safe_open is not iterable
            return {k: fh.get_tensor(k) for k in keys}, meta
    except (SafetensorError, OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s (%s); recomputing examples", path, str(exc).splitlines()[0])
        return {}, {}


def _attribute(name: str, model: torch.nn.Module, params: Mapping[str, Any], inputs: torch.Tensor,
               target: torch.Tensor) -> torch.Tensor:
    """:func:`bam.methods.attribute` with the parameters as a mapping (bound once per method and model)."""
    from bam.methods import attribute

    return attribute(name, model, inputs, target, **params)


def _guards(guards: dict[int, list[ModelGuard]], model: torch.nn.Module,
            view: torch.nn.Module) -> list[ModelGuard]:
    """The guards of ``model`` (snapshot on first use) and of its model-space ``view`` when that is another module."""
    mine = guards.setdefault(id(model), [ModelGuard(model.eval())])
    if view is not model and all(g.model is not view for g in mine):
        mine.append(ModelGuard(view, covered=mine[0]))
    return mine


def examples(plan: EvalPlan, device: torch.device, previous: Path | None) -> Examples | None:
    """Attribute ``config.examples`` evenly spaced obj/val composites with every planned method, obj and
    scene models of the method's kind; attributions already in ``previous`` (same images, model and
    parameters) are reused. None when no examples are configured."""
    n = plan.config.examples
    if n <= 0:
        return None
    from bam.methods import to_space
    from bam.methods._call import takes

    sub = plan.data.subset("obj", split="val")
    idx = sorted({int(i) for i in np.linspace(0, len(sub) - 1, num=min(n, len(sub))).round()})
    ids = [str(sub.table["image_id"].iloc[i]) for i in idx]
    images, _, masks = sub.load_batch(idx)
    images = images.to(device)
    old, old_meta = _previous(previous, ids) if previous is not None else ({}, {})
    tensors: dict[str, torch.Tensor] = {"images": images.cpu().clone(), "masks": masks.cpu()}
    meta = {"image_ids": json.dumps(ids)}
    failures: dict[str, str] = {}
    targets: dict[str, torch.Tensor] = {}  # model sha256 -> predicted classes (one forward per model)
    guards: dict[int, list[ModelGuard]] = {}  # id(model) -> its isolation guards (:mod:`bam.evaluate._guard`)
    for method in plan.methods:
        for role in ROLES:
            entry = plan.models[method.kind].get(role)
            if entry is None:
                continue
            seed = plan.seed if method.info.stochastic else ""  # like the record cache: seed only where it matters
            key, tag = f"attr/{method.name}/{role}", f"{entry.sha256}:{method.params_hash}:{seed}"
            if old_meta.get(key) == tag and key in old:
                tensors[key], meta[key] = old[key], tag
                continue
            if entry.sha256 not in targets:
                with torch.no_grad():
                    targets[entry.sha256] = entry.model(images).argmax(1)
            params = dict(method.params)
            if plan.config.micro_batch and takes(method.info, "micro_batch"):
                params.setdefault("micro_batch", plan.config.micro_batch)
            if method.info.stochastic and takes(method.info, "seed"):
                params.setdefault("seed", plan.seed)
            try:
                view = to_space(entry.model, images, masks.to(images.device), method.space, plan.config.mask_mode)
                attr = call_guarded(_guards(guards, entry.model, view.model), method.name,
                                    functools.partial(_attribute, method.name, view.model, params), view.inputs,
                                    targets[entry.sha256], private=not method.info.reads_inputs_only)
                if attr.shape[-2:] != images.shape[-2:]:  # model space: shown on the image's pixel grid
                    attr = torch.nn.functional.interpolate(attr, size=tuple(images.shape[-2:]), mode="bilinear",
                                                           align_corners=False)
            except (Exception, SystemExit) as exc:  # a failing method (a plug-in above all) is left out, never fatal
                msg = failure_line(exc)
                if isinstance(exc, StateChanged) and exc.inputs_changed:  # a method wrote into the shared images
                    images = sub.load_batch(idx)[0].to(device)
                log.warning("examples: %s on the %s model failed: %s", method.name, role, msg)
                failures.setdefault(method.name, msg)
                continue
            tensors[key], meta[key] = attr.float().cpu(), tag
    return Examples(tensors=tensors, metadata=meta, failures=failures)

"""provenance.json: everything needed to reproduce or compare a results.csv (SPEC §6)."""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import torch

from bam._threads import thread_settings
from bam.config import to_dict
from bam.evaluate.execute import Execution
from bam.evaluate.plan import EvalPlan
from bam.schema import SCHEMA_VERSION

_PACKAGES = ("bam", "torch", "torchvision", "captum", "numpy", "pandas", "safetensors", "PyYAML", "click")


def versions() -> dict[str, str]:
    """Installed versions of the packages that shape the numbers."""
    out = {"python": platform.python_version()}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


@dataclass(frozen=True)
class RunFacts:
    """Facts about the run that the plan does not hold."""

    device: torch.device
    world_size: int
    wall_time_s: float
    #: model kind -> skip reasons (worded with the commands that fix them)
    skipped: tuple[Mapping[str, str], ...] = ()


def provenance(plan: EvalPlan, execution: Execution, facts: RunFacts) -> dict[str, Any]:
    """The provenance document of one evaluation."""
    ckpts = {f"{kind}:{role}": {"path": e.path, "weights_sha256": e.sha256, "arch": str(e.card.arch)}
             for kind, roles in plan.models.items() for role, e in sorted(roles.items())}
    dev = facts.device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    return {
        "schema_version": SCHEMA_VERSION, "config": to_dict(plan.config), "seed": plan.seed,
        "dataset": {"root": str(plan.data.root), "manifest_hash": plan.data.manifest_hash},
        "checkpoints": ckpts, "versions": versions(), "device": str(dev),
        "device_name": name,
        "world_size": facts.world_size, "wall_time_s": round(facts.wall_time_s, 3), "threads": thread_settings(),
        "methods": {m.name: {"title": m.info.title, "params": dict(m.params), "params_hash": m.params_hash,
                             "kind": m.kind, "stochastic": bool(m.info.stochastic), "version": m.info.version,
                             "code_sha256": m.info.code_sha256 or None} for m in plan.methods},
        "metrics": [{"name": m.name, "kind": m.kind, "params": dict(m.params), "images": len(m.image_ids)}
                    for m in plan.metrics],
        "skipped": list(facts.skipped), "failures": dict(execution.failures),
        "iir_patch": {k: dict(v) for k, v in execution.patches.items()}, "method_calls": execution.method_calls,
        "cache": dict(execution.cache_stats), "isolation": dict(execution.isolation),
        "cost_columns_note": "images_per_s, passes_per_image (measured model rows per image) and peak_memory_mb "
                             "vary between runs; bam compare ignores them",
    }

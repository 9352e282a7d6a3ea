"""Planning an evaluation: methods, model families, metric feasibility, image selection, units."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bam._io import hash_json
from bam.errors import BamError
from bam.evaluate.config import EvalConfig
from bam.metrics import METRICS, Need, get_metric_info, list_metrics

log = logging.getLogger("bam.evaluate")

#: The two model families: methods requiring "invertible" run on iresnet models, the others not.
FAMILIES = ("standard", "invertible")


@dataclass(frozen=True)
class ModelEntry:
    """A loaded model and its card (``role``, ``invertible``, ``weights_sha256``, ``dataset_manifest_hash``)."""

    model: torch.nn.Module
    card: Any
    path: str = ""

    @property
    def sha256(self) -> str:
        """The checkpoint's weights sha256 (identifies the model in cache keys and reports)."""
        return str(self.card.weights_sha256)


@dataclass(frozen=True)
class MethodPlan:
    """A method to evaluate: its name, metadata, resolved parameters and their hash."""

    name: str
    info: Any
    params: Mapping[str, Any]
    params_hash: str
    family: str


@dataclass
class Unit:
    """One (model, subset, input) whose records are computed over ``ids`` for ``methods``."""

    family: str
    need: Need
    entry: ModelEntry
    ids: list[str] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)


def family_of(info: Any) -> str:
    """"invertible" when the method requires an invertible model, else "standard"."""
    return "invertible" if "invertible" in tuple(info.requires) else "standard"


def plan_methods(config: EvalConfig, names: Sequence[str]) -> list[MethodPlan]:
    """Resolve every method (built-in or plug-in) and its parameters (paper defaults + overrides)."""
    from bam.methods import resolve_method, resolve_params

    plans = []
    for name in names:
        _fn, info = resolve_method(name)
        params = resolve_params(info, config.params_for(name))
        params.pop("micro_batch", None)
        params.pop("seed", None)
        plans.append(MethodPlan(name, info, params, hash_json([name, params])[:16], family_of(info)))
    unknown = set(dict(config.method_params)) - set(names)
    if unknown:
        log.debug("method_params given for methods not evaluated: %s", ", ".join(sorted(unknown)))
    return plans


def plan_metrics(names: Sequence[str]) -> list[str]:
    """Validate metric names (BamError listing the registered ones)."""
    for n in names:
        METRICS.get(n)
    order = list_metrics()
    return sorted(set(names), key=order.index)


def models_by_family(models: Sequence[ModelEntry]) -> dict[str, dict[str, ModelEntry]]:
    """{family: {role: entry}}; two models with the same (role, invertible) raise a BamError."""
    out: dict[str, dict[str, ModelEntry]] = {f: {} for f in FAMILIES}
    for e in models:
        fam = "invertible" if bool(getattr(e.card, "invertible", False)) else "standard"
        role = str(e.card.role)
        if role in out[fam]:
            raise BamError(f"two {fam} models with role {role!r}: {out[fam][role].path} and {e.path}; "
                           "keep one per role in the models directory")
        out[fam][role] = e
    return out


def check_manifest(entry: ModelEntry, manifest_hash: str) -> None:
    """BamError when a model was trained on another dataset build than the one evaluated."""
    got = str(getattr(entry.card, "dataset_manifest_hash", ""))
    if got != manifest_hash:
        raise BamError(f"model {entry.path or entry.card.role} was trained on dataset manifest {got[:16]}..., "
                       f"but the data has manifest {manifest_hash[:16]}... (full: {got} vs {manifest_hash}); "
                       "evaluate with the dataset it was trained on or retrain it")


def missing_role_message(metric: str, family: str, roles: Sequence[str], models_root: str, data_root: str) -> str:
    """The one-line skip/error text for a metric whose model roles are absent."""
    inv = " --arch iresnet" if family == "invertible" else ""
    cmds = "; ".join(f"bam train --data {data_root} --role {r}{inv} --out {models_root}/"
                     f"{'iresnet-' if inv else ''}{r}" for r in roles[:2])
    more = f" (and {len(roles) - 2} more roles)" if len(roles) > 2 else ""
    return (f"metric {metric} needs {family} model role(s) {', '.join(roles)} not found in {models_root}; "
            f"train with: {cmds}{more}")


def select_ids(data: Any, subset: str, limit: int | None, selection_seed: int) -> list[str]:
    """The val image ids of ``subset`` a metric uses: a fixed seeded permutation, first ``limit``.

    The permutation depends only on ``selection_seed`` and the ids, so a smaller limit selects a
    prefix of a larger one and the chunks (and their cache entries) are shared.
    """
    ids = [str(i) for i in data.subset(subset, split="val").table["image_id"]]
    order = np.random.default_rng(selection_seed).permutation(len(ids))
    chosen = [ids[i] for i in order]
    return chosen if limit is None else chosen[:limit]


def metric_needs(metric: str, num_k: int) -> tuple[Need, ...]:
    """The (role, subset, input) triples ``metric`` reads."""
    return tuple(get_metric_info(metric).needs(num_k))


def needed_roles(config: EvalConfig, num_k: int) -> set[str]:
    """Every model role the config's metrics can read (so that only those models are loaded)."""
    names = list(config.metrics) or list_metrics()
    return {n.role for m in names if m in METRICS for n in metric_needs(m, num_k)}

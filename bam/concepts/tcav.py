"""TCAV, the concept-based row of the original BAM study (``bam/run_tcav.py``; Kim et al., ICML 2018).

>>> result = tcav_records({"obj": (obj_model, sha_obj), "scene": (scene_model, sha_scene)}, data,
...                       TcavConfig(), cache_dir, device="cpu")
>>> result.records   # one row per (role, layer, run, target image): sign of the directional derivative
>>> result.summary   # one row per (role, layer): TCAV score, spread, random null, p-value

The concept is the common object ("dog") on other scenes, the targets are the common object in
the common scene ("dog_bedroom"), scored for the object model's common-object class and for the
scene (and commonality-k) models' common-scene class.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from bam._progress import progress_bar
from bam.concepts._cache import CavCache
from bam.concepts._capture import resolve_layers, summary_layer
from bam.concepts._engine import (
    Counters,
    SetPool,
    TcavJob,
    Work,
    experiment_runs,
    load_images,
    model_cavs,
    target_derivatives,
)
from bam.concepts._registry import ConceptMethodInfo, register_concept_method
from bam.concepts._stats import ttest_ind
from bam.concepts.config import TcavConfig
from bam.concepts.sets import ConceptSets, DataImageSource, build_concept_sets
from bam.config import from_dict
from bam.errors import BamError
from bam.roles import BASE_ROLES, OBJ, SCENE, SCENE_ONLY, commonality_k

PAPER = ("Kim et al., Interpretability Beyond Feature Attribution: Quantitative Testing with Concept "
         "Activation Vectors (TCAV), ICML 2018")
RECORD_COLUMNS = ["model_role", "model_hash", "layer", "summary", "target_class", "target_name", "kind", "run",
                  "concept", "negative", "image_id", "prediction", "correct", "derivative", "positive"]
SUMMARY_COLUMNS = ["model_role", "model_hash", "layer", "summary", "target_class", "target_name", "score",
                   "score_sd", "random_score", "random_sd", "t", "p_value", "significant", "cav_accuracy",
                   "random_cav_accuracy", "n_images", "n_runs"]
CAV_COLUMNS = ["model_role", "model_hash", "layer", "kind", "run", "concept", "negative", "accuracy", "n_train",
               "n_test", "error_bound", "iterations", "cached"]


class ModelSpec(NamedTuple):
    """One model to score: its role, weights hash and target class."""

    role: str
    model: nn.Module
    sha256: str
    target: int
    target_name: str


@dataclass(frozen=True)
class TcavResult:
    """Per-image records, per-(role, layer) summary, per-CAV diagnostics, the sets, work counters."""

    records: pd.DataFrame
    summary: pd.DataFrame
    cavs: pd.DataFrame
    sets: ConceptSets
    counts: Mapping[str, int]


def target_class(data: Any, role: str) -> tuple[int, str]:
    """(class index, name) a role is scored for: obj -> the common object, scene-labelled roles ->
    the common scene (the original mapped both through ``*_categories.txt``)."""
    k = commonality_k(role)
    if role == OBJ:
        return data.object_classes.index(data.common_object), data.common_object
    if role in (SCENE, SCENE_ONLY) or (k is not None and 1 <= k <= len(data.scene_classes)):
        return data.scene_classes.index(data.common_scene), data.common_scene
    raise BamError(f"unknown tcav model role {role!r}; accepted: {', '.join(BASE_ROLES)}, commonality-1.."
                   f"commonality-{len(data.scene_classes)}")


def _model_frames(spec: ModelSpec, work: Work, targets: torch.Tensor) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Records and CAV diagnostics of one model."""
    job = work.job
    layers = resolve_layers(spec.model, job.config.layers)
    best = summary_layer(list(layers), job.config.summary_layer)
    cavs = model_cavs(work, spec.model, spec.sha256, layers)
    derivs, preds = target_derivatives(work, spec.model, layers, {n: v for n, (v, _) in cavs.items()}, targets,
                                       spec.target)
    runs = experiment_runs(job.sets)
    ids = np.asarray(job.sets.targets.image_ids, dtype=object)
    n = len(ids)
    short = spec.sha256[:16]
    rec_parts, cav_rows = [], []
    for name in layers:
        d = derivs[name]
        for j, run in enumerate(runs):
            rec_parts.append(pd.DataFrame({
                "model_role": spec.role, "model_hash": short, "layer": name, "summary": name == best,
                "target_class": spec.target, "target_name": spec.target_name, "kind": run.kind, "run": run.run,
                "concept": run.positive.name, "negative": run.negative.name, "image_id": ids,
                "prediction": preds, "correct": preds == spec.target, "derivative": d[:, j],
                "positive": d[:, j] > 0}, index=range(n)))
            info = cavs[name][1][j]
            cav_rows.append({"model_role": spec.role, "model_hash": short, "layer": name, "kind": run.kind,
                             "run": run.run, "concept": run.positive.name, "negative": run.negative.name,
                             **{c: info.get(c) for c in CAV_COLUMNS[7:]}})
    return pd.concat(rec_parts, ignore_index=True), pd.DataFrame(cav_rows, columns=CAV_COLUMNS)


def summarize(records: pd.DataFrame, cavs: pd.DataFrame, p_threshold: float) -> pd.DataFrame:
    """One row per (role, layer): mean and spread (population sd, as tcav prints) of the concept
    runs' TCAV scores and of the random runs', the t-test between them and its verdict."""
    rows = []
    keys = ["model_role", "layer", "kind", "run"]
    per_run = records.groupby(keys, sort=False)["positive"].mean().reset_index()
    per_run = per_run.merge(cavs[[*keys, "accuracy"]], on=keys, how="left")
    images = records.groupby(["model_role", "layer"], sort=False)["image_id"].nunique()
    for (role, layer), grp in per_run.groupby(["model_role", "layer"], sort=False):
        is_concept = (grp["kind"] == "concept").to_numpy()
        concept = grp["positive"].to_numpy(dtype=float)[is_concept]
        null = grp["positive"].to_numpy(dtype=float)[~is_concept]
        acc = grp["accuracy"].to_numpy(dtype=float)
        t, p = ttest_ind(list(concept), list(null))
        first = records[(records["model_role"] == role) & (records["layer"] == layer)].iloc[0]
        rows.append({"model_role": role, "model_hash": first["model_hash"], "layer": layer,
                     "summary": bool(first["summary"]), "target_class": int(first["target_class"]),
                     "target_name": first["target_name"], "score": float(concept.mean()),
                     "score_sd": float(concept.std()), "random_score": float(null.mean()),
                     "random_sd": float(null.std()), "t": t, "p_value": p,
                     "significant": bool(math.isfinite(p) and p < p_threshold),
                     "cav_accuracy": float(np.nanmean(acc[is_concept])) if np.isfinite(acc[is_concept]).any()
                     else math.nan,
                     "random_cav_accuracy": float(np.nanmean(acc[~is_concept])) if np.isfinite(acc[~is_concept]).any()
                     else math.nan,
                     "n_images": int(images[(role, layer)]), "n_runs": len(concept)})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def run_tcav(job: TcavJob, specs: Sequence[ModelSpec], progress: bool = False) -> TcavResult:
    """TCAV of every model in ``specs`` on ``job``'s sets (each model in eval mode, restored after)."""
    if not specs:
        raise BamError("tcav got no models; accepted: a mapping role -> (model, weights sha256)")
    counters = Counters()
    work = Work(job, SetPool(job), counters)
    targets = load_images(job.source, job.sets.targets, job.config.batch_size)
    records, cavs = [], []
    for spec in progress_bar(specs, desc="tcav", enabled=progress, leave=False):
        was_training = spec.model.training
        spec.model.eval()
        try:
            rec, cav = _model_frames(spec, work, targets)
        finally:
            spec.model.train(was_training)
        records.append(rec)
        cavs.append(cav)
    rec_all = pd.concat(records, ignore_index=True)[RECORD_COLUMNS]
    cav_all = pd.concat(cavs, ignore_index=True)
    counts = {**asdict(counters), "cache_corrupt": job.cache.corrupt}
    return TcavResult(records=rec_all, summary=summarize(rec_all, cav_all, job.config.p_threshold), cavs=cav_all,
                      sets=job.sets, counts=counts)


def _as_config(config: TcavConfig | Mapping[str, Any] | None) -> TcavConfig:
    if config is None:
        return TcavConfig()
    if isinstance(config, TcavConfig):
        return config
    return from_dict(TcavConfig, config, "tcav")


@register_concept_method(ConceptMethodInfo(
    name="tcav", title="Testing with Concept Activation Vectors", paper=PAPER, config_type=TcavConfig,
    defaults=asdict(TcavConfig()), roles=("obj", "scene", "commonality-k"),
    subsets=("obj", "scene_only", "common_in_scene"), requires=("bottlenecks",),
    description="fraction of common-object-in-common-scene images whose target-class objective increases "
                "along the common-object CAV, per bottleneck; t-test against random-vs-random CAVs",
))
def tcav_records(models: Mapping[str, tuple[nn.Module, str]], data: Any,
                 config: TcavConfig | Mapping[str, Any] | None = None, cache_dir: str | Path | None = None, *,
                 device: str | torch.device | None = None, progress: bool = False) -> TcavResult:
    """TCAV of every ``role -> (model, weights sha256)`` in ``models`` on a build ``data``.

    Sets come from :func:`bam.concepts.build_concept_sets`; CAVs are cached under ``cache_dir``
    (None: not cached). ``device``: where to run (None: each model's own device; otherwise the
    models are moved there).
    """
    cfg = _as_config(config)
    specs = []
    for role, pair in models.items():
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise BamError(f"tcav models[{role!r}] is {type(pair).__name__}; accepted: (model, weights sha256)")
        model, sha = pair
        if device is not None:
            model.to(torch.device(device))
        specs.append(ModelSpec(role, model, str(sha), *target_class(data, role)))
    job = TcavJob(build_concept_sets(data, cfg), DataImageSource(data), cfg, CavCache(cache_dir))
    return run_tcav(job, specs, progress)

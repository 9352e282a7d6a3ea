"""Results table (schema v1), provenance and the top-level :func:`evaluate` (SPEC §6)."""

from __future__ import annotations

import json
import logging
import math
import platform
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bam._io import write_csv, write_json
from bam.config import save_config, to_dict
from bam.evaluate._bootstrap import bootstrap_ci, row_rng
from bam.evaluate._plan import ModelEntry
from bam.evaluate.config import EvalConfig
from bam.evaluate.runner import DistInfo, Runner, RunState, gather, records_frame
from bam.metrics import METRICS, MetricValue, get_metric_info

log = logging.getLogger("bam.evaluate")

SCHEMA_VERSION = 1
RESULTS_COLUMNS: tuple[str, ...] = (
    "schema_version", "dataset", "manifest_hash", "model_pair", "model_hashes", "method", "method_params",
    "metric", "k", "value", "ci_low", "ci_high", "n_used", "n_excluded", "excluded_reasons", "direction",
    "chance", "images_per_s", "passes_per_image", "peak_memory_mb", "seed",
)
#: Columns that measure cost; they vary between runs and `bam compare` ignores them.
COST_COLUMNS: tuple[str, ...] = ("images_per_s", "passes_per_image", "peak_memory_mb")
RECORD_COLUMNS: tuple[str, ...] = (
    "image_id", "subset", "input", "model_role", "model_hash", "method", "method_hash", "prediction", "label",
    "correct", "g", "valid", "status",
)
_PACKAGES = ("bam", "torch", "torchvision", "captum", "numpy", "pandas", "safetensors", "PyYAML", "click")


def _num(x: float | None, nd: int = 12) -> float:
    """Round for a stable CSV (None/NaN -> NaN, written as an empty cell)."""
    if x is None or not math.isfinite(float(x)):
        return math.nan
    return round(float(x), nd)


def _cost(runner: Runner, state: RunState, method: str, roles: Sequence[str]) -> tuple[float | None, float | None]:
    """(images/s, peak MiB) of ``method`` over the inputs of the given roles."""
    secs, n, peak = 0.0, 0, 0.0
    for key, c in state.costs.items():
        m, role, _inp = key.split("|")
        if m == method and role in roles:
            secs += c["seconds"]
            n += c["n"]
            peak = max(peak, c["peak_mb"])
    return (n / secs if secs > 0 else None), (peak or None)


def result_rows(runner: Runner, state: RunState, records: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, metric[, k]) with value, bootstrap CI, counts and costs."""
    rows: list[dict[str, Any]] = []
    cfg = runner.config
    dataset = str(getattr(getattr(runner.data, "recipe", None), "name", "") or Path(str(runner.data.root)).name)
    for (fam, metric), _needs in runner.active.items():
        info = get_metric_info(metric)
        fn = METRICS.get(metric)
        roles = runner.by_family[fam]
        for plan in (p for p in runner.methods.values() if p.family == fam):
            recs = records[(records["method"] == plan.name) & records["image_id"].isin(runner.selected[metric])]
            kwargs: dict[str, Any] = {}
            if metric == "iir":
                kwargs["threshold"] = cfg.iir_threshold
            if metric == "rmcs":
                kwargs["num_k"] = runner.num_k
            value: MetricValue = fn(recs, **kwargs)
            passes = float(plan.info.passes(dict(plan.params)))
            for v in (*value.curve, value):
                ips, peak = _cost(runner, state, plan.name, v.roles)
                lo, hi = bootstrap_ci(v.per_image, v.statistic, cfg.bootstrap, cfg.confidence,
                                      row_rng(runner.seed, plan.name, v.metric, v.k, fam))
                if v.n_used == 0:
                    log.warning("%s for %s: no image passed the filters (%s)", v.metric, plan.name,
                                json.dumps(dict(v.excluded), sort_keys=True))
                rows.append({
                    "schema_version": SCHEMA_VERSION, "dataset": dataset, "manifest_hash": runner.data.manifest_hash,
                    "model_pair": "|".join(v.roles),
                    "model_hashes": "|".join(roles[r].sha256[:16] for r in v.roles if r in roles),
                    "method": plan.name, "method_params": json.dumps(dict(plan.params), sort_keys=True, default=str),
                    "metric": v.metric, "k": "" if v.k is None else int(v.k), "value": _num(v.value),
                    "ci_low": _num(lo), "ci_high": _num(hi), "n_used": v.n_used, "n_excluded": v.n_excluded,
                    "excluded_reasons": json.dumps(dict(v.excluded), sort_keys=True),
                    "direction": "none" if v.k is not None else info.direction, "chance": _num(info.chance), "images_per_s": _num(ips, 3),
                    "passes_per_image": passes, "peak_memory_mb": _num(peak, 1), "seed": runner.seed,
                })
    order = {m: i for i, m in enumerate(["mcs", "idr", "iir", "rmcs_curve", "rmcs"])}
    df = pd.DataFrame(rows, columns=list(RESULTS_COLUMNS))
    if df.empty:
        return df
    df["_o"] = df["metric"].map(lambda m: order.get(m, 99))
    df["_k"] = df["k"].map(lambda k: -1 if k == "" else int(k))
    df = df.sort_values(["method", "_o", "metric", "_k"], kind="stable").drop(columns=["_o", "_k"])
    return df.reset_index(drop=True)


def versions() -> dict[str, str]:
    """Installed versions of the packages that shape the numbers."""
    out = {"python": platform.python_version()}
    for p in _PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def provenance(runner: Runner, state: RunState, wall_s: float) -> dict[str, Any]:
    """Everything needed to reproduce or compare a results.csv."""
    ckpts = {f"{fam}:{role}": {"path": e.path, "weights_sha256": e.sha256, "arch": str(getattr(e.card, "arch", ""))}
             for fam, roles in runner.by_family.items() for role, e in sorted(roles.items())}
    return {
        "schema_version": SCHEMA_VERSION, "config": to_dict(runner.config), "seed": runner.seed,
        "dataset": {"root": str(getattr(runner.data, "root", "")), "manifest_hash": runner.data.manifest_hash},
        "checkpoints": ckpts, "versions": versions(), "device": str(runner.device),
        "device_name": torch.cuda.get_device_name(runner.device) if runner.device.type == "cuda" else platform.processor() or platform.machine(),
        "world_size": runner.dist.world_size, "wall_time_s": round(wall_s, 3),
        "methods": {p.name: {"title": p.info.title, "params": dict(p.params), "params_hash": p.params_hash,
                             "family": p.family, "stochastic": bool(p.info.stochastic)} for p in runner.methods.values()},
        "metrics": sorted({m for (_f, m) in runner.active}), "skipped": state.skipped, "failures": state.failures,
        "iir_patch": state.patches, "method_calls": state.method_calls,
        "cache": {"hits": runner.cache.hits, "misses": runner.cache.misses, "corrupt": runner.cache.corrupt},
        "cost_columns_note": "images_per_s and peak_memory_mb vary between runs; bam compare ignores them",
    }


def evaluate(data: Any, models: Sequence[ModelEntry], config: EvalConfig, out: str | Path, *, seed: int = 0,
             device: torch.device | str = "cpu", progress: bool = False, explicit_metrics: bool = False,
             explicit_methods: bool = False, dist: DistInfo | None = None, models_root: str = "MODELS") -> dict[str, Any]:
    """Evaluate ``config.methods`` x ``config.metrics`` on ``data`` with ``models``; write OUT/*.

    Writes ``results.csv``, ``records.csv``, ``provenance.json`` and ``config.yaml`` under ``out``
    (rank 0 only under torch.distributed); cached per-image records live in ``out/cache``.
    Returns the provenance dict plus ``results`` (the DataFrame) on rank 0, ``{}`` elsewhere.
    """
    t0 = time.perf_counter()
    dist = dist or DistInfo()
    out = Path(out)
    runner = Runner(data, models, config, out, seed=seed, device=torch.device(device), progress=progress,
                    explicit_metrics=explicit_metrics, explicit_methods=explicit_methods, dist=dist,
                    models_root=models_root)
    state = gather(runner.run(), dist)
    if state is None:
        return {}
    records = records_frame(state.records)
    results = result_rows(runner, state, records)
    write_csv(out / "records.csv", records)
    write_csv(out / "results.csv", results)
    save_config(runner.config, out / "config.yaml")
    from bam.evaluate.examples import write_examples

    write_examples(runner, runner.config.examples)
    prov = provenance(runner, state, time.perf_counter() - t0)
    write_json(out / "provenance.json", prov)
    for p in sorted(state.failures):
        n_fail = int(((records["method"] == p) & (records["status"] == "method_failed")).sum())
        if n_fail and n_fail == int((records["method"] == p).sum()):
            log.warning("method %s failed on every image: %s", p, state.failures[p])
    return {**prov, "results": results, "records": records}



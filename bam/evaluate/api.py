"""The evaluation entry points: :func:`evaluate` (loaded data and models) and :func:`evaluate_dir` (folders).

plan -> execute (cached, sharded) -> gather -> summarise -> examples -> provenance -> one output set.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from bam._dist import DistInfo, barrier, current, local_device
from bam._io import csv_bytes, dumps_json, tensors_bytes
from bam._lock import output_lock
from bam._paths import confine
from bam.config import dump_yaml
from bam.data.protocols import DatasetLike
from bam.errors import BamError
from bam.evaluate._cache import RecordCache
from bam.evaluate._records import records_frame
from bam.evaluate.concepts import execute_concepts
from bam.evaluate.config import EvalConfig
from bam.evaluate.examples import EXAMPLES_FILE, examples
from bam.evaluate.execute import ExecContext, execute, gather
from bam.evaluate.plan import EvalPlan, ModelEntry, Skip, needed_roles, plan
from bam.evaluate.provenance import RunFacts, provenance
from bam.evaluate.summarise import summarise
from bam.outputs import write_output_set

log = logging.getLogger("bam.evaluate")

#: The files of an evaluation's output set.
OUTPUT_FILES = ("results.csv", "comparisons.csv", "records.csv", "config.yaml", "provenance.json", EXAMPLES_FILE,
                "tcav_records.csv", "tcav_summary.csv", "tcav_cavs.csv")

#: Words a skip: the metric, the kind, the missing roles and how to train them.
SkipWording = Callable[[Skip], str]

#: The arch `bam train` is told to use for a missing invertible model.
INVERTIBLE_ARCH = "irevnet"


@dataclass(frozen=True)
class EvalResult:
    """What an evaluation produced (on rank 0)."""

    out: Path
    results: pd.DataFrame
    comparisons: pd.DataFrame
    records: pd.DataFrame
    provenance: Mapping[str, object]
    skipped: tuple[Skip, ...]
    #: methods that produced no valid record at all -> their first error
    failed_everywhere: Mapping[str, str]


def train_hint(skip: Skip, data_root: str, models_root: str) -> str:
    """The one-line skip reason with the `bam train` commands that provide the missing models."""
    inv = skip.kind == "invertible"
    arch = f" --arch {INVERTIBLE_ARCH}" if inv else ""
    prefix = "invertible-" if inv else ""
    roles = skip.missing_roles
    cmds = "; ".join(f"bam train --data {data_root} --role {r}{arch} --out {models_root}/{prefix}{r}"
                     for r in roles[:2])
    more = f" (and {len(roles) - 2} more roles)" if len(roles) > 2 else ""
    return (f"metric {skip.metric} needs {skip.kind} model role(s) {', '.join(roles)} not found in {models_root}; "
            f"train with: {cmds}{more}")


def _check_skips(p: EvalPlan, word: SkipWording) -> tuple[dict[str, str], ...]:
    """Raise for a required skip; log the others; returns the skip records for provenance."""
    for s in p.skipped:
        if s.required:
            raise BamError(word(s))
    out = []
    for s in p.skipped:
        reason = word(s)
        log.warning("skipping %s for %s: %s", s.metric, ", ".join(s.methods), reason)
        out.append({"metric": s.metric, "kind": s.kind, "methods": ",".join(s.methods), "reason": reason})
    if not p.metrics and not p.concepts:
        found = sorted(r for roles in p.models.values() for r in roles)
        raise BamError("nothing to evaluate: every requested metric lacks its models (see the messages above); "
                       f"models found: {', '.join(found) or 'none'}")
    return tuple(out)


def _failed_everywhere(records: pd.DataFrame, failures: Mapping[str, str]) -> dict[str, str]:
    """Methods with at least one failure whose every record is method_failed."""
    out = {}
    for m, msg in sorted(failures.items()):
        mine = records["method"] == m
        if mine.any() and bool((records.loc[mine, "status"] == "method_failed").all()):
            out[m] = msg
    return out


def models_root(models: Sequence[ModelEntry]) -> str:
    """The folder that holds the checkpoints (their common parent), for hints; "MODELS" if unknown."""
    parents = {str(Path(e.path).parent) for e in models if e.path}
    return parents.pop() if len(parents) == 1 else "MODELS"


def evaluate(data: DatasetLike, models: Sequence[ModelEntry], config: EvalConfig, out: str | os.PathLike[str], *,
             ctx: ExecContext | None = None) -> EvalResult | None:
    """Evaluate ``config`` on ``data`` with ``models``; write the output set to ``out``.

    Writes results.csv, records.csv, config.yaml, provenance.json and examples.safetensors as one
    set (:mod:`bam.outputs`; rank 0 only under torch.distributed); cached per-image records live in
    ``out/cache``. Returns the results on rank 0, None elsewhere. A metric that lacks models is
    skipped with a hint naming the `bam train` commands (an error when the config names it). Rank 0
    holds an exclusive lock on ``out`` (:mod:`bam._lock`): a second evaluation into it is refused.
    """
    t0 = time.perf_counter()
    ctx = ctx or ExecContext(device=torch.device("cpu"))
    out = Path(out)
    p = plan(data, models, config)  # bad input is refused before the output folder is touched
    skipped = _check_skips(p, lambda s: train_hint(s, str(data.root), models_root(models)))
    if not ctx.dist.is_main:
        return _run(p, skipped, out, ctx, t0)
    with output_lock(out, "bam evaluate"):
        return _run(p, skipped, out, ctx, t0)


def _run(p: EvalPlan, skipped: tuple[dict[str, str], ...], out: Path, ctx: ExecContext,
         t0: float) -> EvalResult | None:
    """:func:`evaluate` after planning, once ``out`` is locked (on rank 0)."""
    config = p.config
    cache_dir = confine(out, out / "cache", "evaluation cache folder")
    cache = RecordCache(cache_dir)
    if ctx.dist.is_main:
        cache.remove_stale_temps()
    barrier(ctx.dist)
    merged = gather(execute(p, cache, ctx), ctx.dist)
    if merged is None:
        return None
    records = records_frame(merged.batches)
    concepts = execute_concepts(p, cache_dir, ctx)
    summary = summarise(p, records, merged.costs, concepts)
    ex = examples(p, ctx.device, confine(out, out / EXAMPLES_FILE, "evaluation output"))
    failures = {**(ex.failures if ex else {}), **merged.failures}
    facts = RunFacts(device=ctx.device, world_size=ctx.dist.world_size, wall_time_s=time.perf_counter() - t0,
                     skipped=skipped)
    prov = provenance(p, merged, facts) | {"failures": failures, "concepts": {
        r.plan.method: {"params": dict(r.plan.params), "models": {k: e.sha256 for k, e in r.plan.models.items()},
                        "sets": r.sets, "counts": dict(r.counts), "seconds": round(r.seconds, 3)} for r in concepts}}
    files = {"results.csv": csv_bytes(summary.results), "comparisons.csv": csv_bytes(summary.comparisons),
             "records.csv": csv_bytes(records),
             "config.yaml": dump_yaml(config).encode(), "provenance.json": dumps_json(prov).encode()}
    if ex is not None:
        files[EXAMPLES_FILE] = tensors_bytes(ex.tensors, metadata=ex.metadata)
    for run in concepts:
        for part in ("records", "summary", "cavs"):
            files[f"{run.plan.method}_{part}.csv"] = csv_bytes(getattr(run, part))
    write_output_set(out, files)
    failed = _failed_everywhere(records, merged.failures)
    for m, msg in failed.items():
        log.warning("method %s failed on every image: %s", m, msg)
    return EvalResult(out=out, results=summary.results, comparisons=summary.comparisons, records=records,
                      provenance=prov, skipped=p.skipped, failed_everywhere=failed)


def evaluate_dir(data_dir: str | os.PathLike[str], models_dir: str | os.PathLike[str], config: EvalConfig,
                 out: str | os.PathLike[str], *, device: str = "auto", progress: bool = False) -> EvalResult | None:
    """:func:`evaluate` on a built dataset folder and a folder of checkpoints (picked by card role).

    Only the models whose roles the config's metrics read are loaded. Under torch.distributed
    (joined by the caller) every rank takes its share of the chunks and rank 0 writes.
    """
    from bam._device import resolve_device
    from bam.data import open_dataset
    from bam.models import find_models, load

    dist: DistInfo = current()
    dev = local_device(resolve_device(device), dist)
    data = open_dataset(data_dir)
    roles = needed_roles(config, len(data.scene_classes))
    entries = [ModelEntry(load(path, dev), card, str(path)) for path, card in find_models(models_dir)
               if card.role in roles]
    return evaluate(data, entries, config, out, ctx=ExecContext(dev, progress, dist))

"""Executing a plan: per-image records for every unit, from the cache or computed (SPEC §4.1-4.2).

Each unit's image ids are cut into chunks of ``config.batch_size``. Per chunk the images are loaded
once and the model's predictions computed once (and cached), shared by every method; each
method's records for the chunk are one cache entry. Under torch.distributed the chunks are dealt
round-robin to the ranks and :func:`gather` merges the ranks' executions on rank 0.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from bam._device import peak_memory_mb
from bam._dist import DistInfo, barrier, gather_objects
from bam._io import hash_json
from bam.evaluate._cache import RecordCache
from bam.evaluate._counting import count_passes
from bam.evaluate._records import RecordBatch, batch_from_payload
from bam.evaluate.iir_patch import PatchSet, build_patch_set, patch_summary
from bam.evaluate.plan import EvalPlan, MethodPlan, Unit
from bam.metrics import object_attribution

log = logging.getLogger("bam.evaluate")

Batch = tuple[Tensor, Tensor, Tensor]


@dataclass(frozen=True)
class ExecContext:
    """Where and how to run: device, progress bars, this process's distributed identity."""

    device: torch.device
    progress: bool = False
    dist: DistInfo = field(default_factory=DistInfo)


@dataclass(frozen=True)
class Cost:
    """What one method cost on one chunk of one (model role, input): time, images, memory, model rows."""

    method: str
    role: str
    input: str
    seconds: float
    images: int
    peak_mb: float
    forward_rows: int
    backward_rows: int


@dataclass(frozen=True)
class Execution:
    """The outcome of executing a plan (one rank's share, or all of it after :func:`gather`)."""

    batches: tuple[RecordBatch, ...]
    costs: tuple[Cost, ...]
    #: method -> its first error message (a method that raised is recorded, never fatal)
    failures: Mapping[str, str]
    #: "kind:model hash prefix" -> summary of the IIR patch set built for that scene_only model
    patches: Mapping[str, Mapping[str, Any]]
    method_calls: int
    cache_stats: Mapping[str, int]


@dataclass
class _Run:
    """One rank's execution in progress: its inputs and what it has produced so far (module-private)."""

    plan: EvalPlan
    cache: RecordCache
    ctx: ExecContext
    batches: list[RecordBatch] = field(default_factory=list)
    costs: list[Cost] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    calls: int = 0
    rows: dict[str, dict[str, int]] = field(default_factory=dict)

    def row_index(self, subset: str) -> dict[str, int]:
        """image_id -> row of the val split of ``subset`` (built once per run)."""
        if subset not in self.rows:
            table = self.plan.data.subset(subset, split="val").table
            self.rows[subset] = {str(i): n for n, i in enumerate(table["image_id"])}
        return self.rows[subset]


def _patch_sets(plan: EvalPlan, ctx: ExecContext) -> tuple[dict[str, PatchSet], dict[str, Mapping[str, Any]]]:
    """Build (rank 0 first) or load the IIR patch set of every scene_only model with an iir_patch unit."""
    sets: dict[str, PatchSet] = {}
    summaries: dict[str, Mapping[str, Any]] = {}
    if ctx.dist.active and not ctx.dist.is_main:
        barrier(ctx.dist)
    for u in plan.units:
        if u.need.input != "iir_patch" or u.model.sha256 in sets:
            continue
        ps = build_patch_set(plan.data, u.model.model, u.model.sha256, plan.config.iir_patch, ctx.device,
                             ctx.progress)
        sets[u.model.sha256] = ps
        summaries[f"{u.kind}:{u.model.sha256[:16]}"] = patch_summary(ps)
    if ctx.dist.active and ctx.dist.is_main:
        barrier(ctx.dist)
    return sets, summaries


def _key(plan: EvalPlan, unit: Unit, ids: Sequence[str], method: MethodPlan | None) -> dict[str, Any]:
    """The cache key of a chunk: predictions (``method`` None) or one method's records."""
    key: dict[str, Any] = {"model": unit.model.sha256, "manifest": plan.data.manifest_hash,
                           "subset": unit.need.subset, "input": unit.need.input, "ids": hash_json(list(ids))}
    if unit.need.input == "iir_patch":
        p = plan.config.iir_patch
        key["patch"] = hash_json([p.steps, p.alpha, p.beta, p.step_size])
    if method is not None:
        key.update(method=method.name, params=method.params_hash,
                   seed=plan.seed if method.info.stochastic else None)
    return key


class _Chunk:
    """One chunk of one unit: loads its images lazily, once, for every method."""

    def __init__(self, run: _Run, unit: Unit, ids: Sequence[str], patch: PatchSet | None) -> None:
        self.run, self.plan, self.unit, self.ids, self.patch = run, run.plan, unit, list(ids), patch
        self._batch: Batch | None = None
        self._views: dict[str, Any] = {}

    def view(self, space: str) -> Any:
        """The chunk as a method in ``space`` sees it (bam.methods.to_space: model, inputs, masks)."""
        if space not in self._views:
            from bam.methods import to_space

            x, _y, m = self.load()
            self._views[space] = to_space(self.unit.model.model, x, m, space, self.plan.config.mask_mode)
        return self._views[space]

    def load(self) -> Batch:
        """Images, labels and masks of the chunk on the device (patched images for iir_patch)."""
        if self._batch is None:
            sub = self.plan.data.subset(self.unit.need.subset, split="val")
            pos = self.run.row_index(self.unit.need.subset)
            x, y, m = sub.load_batch([pos[i] for i in self.ids])
            if self.unit.need.input == "iir_patch":
                assert self.patch is not None
                x = self.patch.patched[self.patch.rows(self.ids)]
            dev = self.run.ctx.device
            self._batch = (x.to(dev), y.to(dev), m.to(dev))
        return self._batch

    def unchanged(self) -> list[bool] | None:
        """Per image: did the IIR patch keep the prediction (None for other inputs)."""
        if self.patch is None:
            return None
        t = self.patch.table.set_index("image_id")
        return [bool(t.loc[i, "unchanged"]) for i in self.ids]


def _predictions(chunk: _Chunk) -> dict[str, Any]:
    """The model's predicted classes and the labels of the chunk (cached)."""
    cache = chunk.run.cache
    key = _key(chunk.plan, chunk.unit, chunk.ids, None)
    preds = cache.get("pred", key)
    if preds is None:
        x, y, _m = chunk.load()
        with torch.no_grad():
            p = chunk.unit.model.model.eval()(x).argmax(1).cpu()
        preds = {"prediction": p.tolist(), "label": y.cpu().tolist()}
        cache.put("pred", key, preds)
    return preds


def _stochastic_seed(plan: EvalPlan, key: Mapping[str, Any]) -> int:
    """A method seed from the run seed and the chunk's identity (model, subset, input, ids)."""
    return int(hash_json([plan.seed, key["model"], key["subset"], key["input"], key["ids"]])[:7], 16)


def _failure(exc: BaseException) -> str:
    """One line: exception type and first line of its message."""
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _compute(chunk: _Chunk, method: MethodPlan, preds: Mapping[str, Any], key: Mapping[str, Any]) -> dict[str, Any]:
    """Run the method on the chunk and return its payload (cached unless the method raised)."""
    from bam.methods import attribute_full

    x, _y, _m = chunk.load()
    view = chunk.view(method.space)
    m = view.masks
    target = torch.tensor(preds["prediction"], dtype=torch.long, device=x.device)
    params = dict(method.params)
    if chunk.plan.config.micro_batch is not None:
        params["micro_batch"] = chunk.plan.config.micro_batch
    if method.info.stochastic:
        params["seed"] = _stochastic_seed(chunk.plan, key)
    if x.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(x.device)
    run = chunk.run
    run.calls += 1
    model = view.model
    t0 = time.perf_counter()
    try:
        with count_passes(model if method.info.uses_model else None) as count:
            res = attribute_full(method.name, model, view.inputs, target, **params)
        g = object_attribution(res.attributions, m)
    except Exception as exc:  # a failing method (a plug-in above all) is recorded, never fatal
        msg = _failure(exc)
        log.warning("method %s failed on %s/%s (%d images): %s", method.name, chunk.unit.need.role,
                    chunk.unit.need.input, len(chunk.ids), msg)
        run.failures.setdefault(method.name, msg)
        n = len(chunk.ids)
        return {"g": [math.nan] * n, "valid": [False] * n, "extras": {"nonfinite": [0.0] * n}, "seconds": 0.0,
                "peak_mb": 0.0, "error": msg}
    assert res.valid is not None
    payload = {"g": g.cpu().tolist(), "valid": res.valid.cpu().tolist(),
               "empty_mask": (m.flatten(1).sum(1) == 0).cpu().tolist(),
               "extras": {k: v.detach().float().cpu().tolist() for k, v in sorted(res.extras.items())},
               "seconds": time.perf_counter() - t0, "peak_mb": peak_memory_mb(x.device),
               "forward_rows": count.forward_rows, "backward_rows": count.backward_rows}
    run.cache.put("records", dict(key), payload)
    return payload


def _run_chunk(chunk: _Chunk) -> None:
    """Records of every method of the chunk's unit (from cache or computed)."""
    run = chunk.run
    preds = _predictions(chunk)
    unchanged = chunk.unchanged()
    u = chunk.unit
    for name in u.methods:
        ids = u.ids_for(name, chunk.ids)
        if len(ids) == len(chunk.ids):
            _run_method(chunk, name, preds, unchanged)
        elif ids:  # a method capped to fewer images (method_images): the part of the chunk it needs
            pos = [chunk.ids.index(i) for i in ids]
            part = _Chunk(run, u, ids, chunk.patch)
            part_preds = {k: [v[p] for p in pos] for k, v in preds.items()}
            _run_method(part, name, part_preds, None if unchanged is None else [unchanged[p] for p in pos])


def _run_method(chunk: _Chunk, name: str, preds: Mapping[str, Any], unchanged: list[bool] | None) -> None:
    """Records of one method on the chunk (from cache or computed)."""
    run, u = chunk.run, chunk.unit
    method = chunk.plan.method(name)
    key = _key(chunk.plan, u, chunk.ids, method)
    payload = run.cache.get("records", key)
    if payload is None:
        payload = _compute(chunk, method, preds, key)
    fields = {"method": name, "method_hash": method.params_hash, "model_role": u.need.role,
              "model_hash": u.model.sha256[:16], "subset": u.need.subset, "input": u.need.input}
    run.batches.append(batch_from_payload(fields, chunk.ids, preds, payload, unchanged))
    failed = "error" in payload
    run.costs.append(Cost(method=name, role=u.need.role, input=u.need.input,
                          seconds=float(payload.get("seconds", 0.0)), images=0 if failed else len(chunk.ids),
                          peak_mb=float(payload.get("peak_mb", 0.0)),
                          forward_rows=int(payload.get("forward_rows", -1)),
                          backward_rows=int(payload.get("backward_rows", -1))))


def execute(plan: EvalPlan, cache: RecordCache, ctx: ExecContext,
            on_chunk: Callable[[int, int], None] | None = None) -> Execution:
    """Compute (or read from ``cache``) every record this rank owns; ``on_chunk(done, total)`` reports progress."""
    from bam._progress import progress_bar

    patches, summaries = _patch_sets(plan, ctx)
    bs = plan.config.batch_size
    tasks = [(u, s) for u in plan.units for s in range(0, len(u.image_ids), bs)]
    mine = [t for i, t in enumerate(tasks) if i % ctx.dist.world_size == ctx.dist.rank]
    run = _Run(plan, cache, ctx)
    for done, (unit, start) in enumerate(progress_bar(mine, desc="evaluate", enabled=ctx.progress, unit="chunk")):
        _run_chunk(_Chunk(run, unit, unit.image_ids[start:start + bs], patches.get(unit.model.sha256)))
        if on_chunk is not None:
            on_chunk(done + 1, len(mine))
    return Execution(batches=tuple(run.batches), costs=tuple(run.costs), failures=dict(run.failures),
                     patches=summaries, method_calls=run.calls,
                     cache_stats={"hits": cache.hits, "misses": cache.misses, "corrupt": cache.corrupt})


def gather(execution: Execution, dist: DistInfo) -> Execution | None:
    """Merge the executions of all ranks on rank 0 (None on the other ranks)."""
    parts = gather_objects(execution, dist)
    if parts is None:
        return None
    if len(parts) == 1:
        return parts[0]
    failures: dict[str, str] = {}
    patches: dict[str, Mapping[str, Any]] = {}
    stats: dict[str, int] = {}
    for p in parts:
        for k, v in p.failures.items():
            failures.setdefault(k, v)
        patches.update(p.patches)
        for k, n in p.cache_stats.items():
            stats[k] = stats.get(k, 0) + n
    return Execution(batches=tuple(b for p in parts for b in p.batches), costs=tuple(c for p in parts for c in p.costs),
                     failures=failures, patches=patches, method_calls=sum(p.method_calls for p in parts),
                     cache_stats=stats)

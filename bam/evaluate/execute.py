"""Executing a plan: per-image records for every unit, from the cache or computed (SPEC §4.1-4.2).

Each unit's image ids are cut into chunks of ``config.batch_size``. Per chunk the images are loaded
once and the model's predictions computed once (and cached), shared by every method; each
method's records for the chunk are one cache entry. Under torch.distributed the chunks are dealt
round-robin to the ranks and :func:`gather` merges the ranks' executions on rank 0.
"""

from __future__ import annotations

import dataclasses
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
from bam.evaluate._counting import PassCount, count_passes
from bam.evaluate._guard import StateChanged, call_guarded, failure_line
from bam.evaluate._records import RecordBatch, batch_from_payload
from bam.evaluate._unit import UnitState
from bam.evaluate.iir_patch import PatchSet, build_patch_set, patch_summary
from bam.evaluate.plan import EvalPlan, MethodPlan, Unit
from bam.methods import AttributionResult
from bam.methods._space import ModelSpaceModel
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
    #: the isolation checks (:mod:`bam.evaluate._guard`): method calls checked and the seconds they took
    isolation: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What one method produced on one chunk: its records, its cost, and where they came from."""

    batch: RecordBatch
    cost: Cost
    #: the first line of the error when the method failed on the chunk (its records are then method_failed)
    error: str | None = None
    #: True when the records were read from the cache
    cached: bool = False
    #: True when the method was called (False for cached records)
    called: bool = False


@dataclass
class _Run:
    """One rank's inputs and the per-run lookups (module-private)."""

    plan: EvalPlan
    cache: RecordCache
    ctx: ExecContext
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    state: UnitState | None = None
    guard_seconds: float = 0.0
    guard_checks: int = 0

    def row_index(self, subset: str) -> dict[str, int]:
        """image_id -> row of the val split of ``subset`` (built once per run)."""
        if subset not in self.rows:
            table = self.plan.data.subset(subset, split="val").table
            self.rows[subset] = {str(i): n for n, i in enumerate(table["image_id"])}
        return self.rows[subset]

    def unit_state(self, unit: Unit) -> UnitState:
        """The state of ``unit`` (a new snapshot when the unit changes)."""
        if self.state is None or self.state.unit is not unit:
            self.close_unit()
            self.state = UnitState(unit)
        return self.state

    def close_unit(self) -> None:
        """Account the finished unit's isolation cost and drop its state."""
        if self.state is not None:
            self.guard_seconds += sum(g.seconds for g in self.state.guards)
            self.guard_checks += self.state.guards[0].checks
        self.state = None


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
    """The cache key of a chunk: predictions (``method`` None) or one method's records (with the method's
    version, and a plug-in's code hash: an edited plug-in or a bumped built-in is recomputed)."""
    key: dict[str, Any] = {"model": unit.model.sha256, "manifest": plan.data.manifest_hash,
                           "subset": unit.need.subset, "input": unit.need.input, "ids": hash_json(list(ids))}
    if unit.need.input == "iir_patch":
        p = plan.config.iir_patch
        key["patch"] = hash_json([p.steps, p.alpha, p.beta, p.step_size])
    if method is not None:
        key.update(method=method.name, params=method.params_hash,
                   seed=plan.seed if method.info.stochastic else None, version=method.info.version,
                   code=method.info.code_sha256 or None)
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
            view = self.run.unit_state(self.unit).model_for(space)
            self._views[space] = to_space(self.unit.model.model, x, m, space, self.plan.config.mask_mode,
                                          view=view if isinstance(view, ModelSpaceModel) else None)
        return self._views[space]

    def reload(self) -> None:
        """Forget the loaded batch and its views (a method wrote into them)."""
        self._batch = None
        self._views.clear()

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


def _call_params(chunk: _Chunk, method: MethodPlan, key: Mapping[str, Any]) -> dict[str, Any]:
    """The method's parameters for this chunk (micro-batch and seed where the method takes them)."""
    from bam.methods._call import takes

    params = dict(method.params)
    if chunk.plan.config.micro_batch is not None and takes(method.info, "micro_batch"):
        params["micro_batch"] = chunk.plan.config.micro_batch
    if method.info.stochastic and takes(method.info, "seed"):
        params["seed"] = _stochastic_seed(chunk.plan, key)
    return params


def _compute(chunk: _Chunk, method: MethodPlan, preds: Mapping[str, Any], key: Mapping[str, Any],
             unchanged: list[bool] | None) -> Outcome:
    """Run the method on the chunk under the isolation guard: its records (cached unless it failed)."""
    from bam.methods._call import call_method, check_model, resolve_params

    x, _y, _m = chunk.load()
    view = chunk.view(method.space)
    m = view.masks
    target = torch.tensor(preds["prediction"], dtype=torch.long, device=x.device)
    params = _call_params(chunk, method, key)
    if x.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(x.device)
    state = chunk.run.unit_state(chunk.unit)
    model = view.model
    counted = model if method.info.uses_model else None
    count = PassCount()

    def call(xs: Tensor, ts: Tensor) -> AttributionResult:
        check_model(method.info, model)
        fn = state.method_fn(method)
        with count_passes(counted) as c:  # its hooks are gone again when the guard looks at the model
            res = call_method(method.name, fn, model, xs, ts, resolve_params(method.info, params))
        count.forward_rows, count.backward_rows = c.forward_rows, c.backward_rows
        return res

    t0 = time.perf_counter()
    try:
        res = call_guarded(state.guards, method.name, call, view.inputs, target,
                           private=not method.info.reads_inputs_only)
        g = object_attribution(res.attributions, m)
    except (Exception, SystemExit) as exc:  # a failing method (a plug-in above all) is recorded, never fatal
        if isinstance(exc, StateChanged) and exc.inputs_changed:
            chunk.reload()
        msg = failure_line(exc)
        log.warning("method %s failed on %s/%s (%d images): %s", method.name, chunk.unit.need.role,
                    chunk.unit.need.input, len(chunk.ids), msg)
        n = len(chunk.ids)
        failed = {"g": [math.nan] * n, "valid": [False] * n, "extras": {"nonfinite": [0.0] * n}}
        return _outcome(chunk, method, preds, unchanged, failed, msg)
    assert res.valid is not None
    payload = {"g": g.cpu().tolist(), "valid": res.valid.cpu().tolist(),
               "empty_mask": (m.flatten(1).sum(1) == 0).cpu().tolist(),
               "extras": {k: v.detach().float().cpu().tolist() for k, v in sorted(res.extras.items())},
               "seconds": time.perf_counter() - t0, "peak_mb": peak_memory_mb(x.device),
               "forward_rows": count.forward_rows, "backward_rows": count.backward_rows}
    chunk.run.cache.put("records", dict(key), payload)
    return _outcome(chunk, method, preds, unchanged, payload)


def _outcome(chunk: _Chunk, method: MethodPlan, preds: Mapping[str, Any], unchanged: list[bool] | None,
             payload: Mapping[str, Any], error: str | None = None) -> Outcome:
    """The typed records and cost of one method on the chunk from its (computed or cached) payload."""
    u = chunk.unit
    fields = {"method": method.name, "method_hash": method.params_hash, "model_role": u.need.role,
              "model_hash": u.model.sha256[:16], "subset": u.need.subset, "input": u.need.input}
    batch = batch_from_payload(fields, chunk.ids, preds, payload, unchanged, method.info.version)
    cost = Cost(method=method.name, role=u.need.role, input=u.need.input, seconds=float(payload.get("seconds", 0.0)),
                images=0 if error else len(chunk.ids), peak_mb=float(payload.get("peak_mb", 0.0)),
                forward_rows=int(payload.get("forward_rows", -1)), backward_rows=int(payload.get("backward_rows", -1)))
    return Outcome(batch=batch, cost=cost, error=error, called=True)


def _run_chunk(chunk: _Chunk) -> list[Outcome]:
    """Records of every method of the chunk's unit (from cache or computed)."""
    run = chunk.run
    preds = _predictions(chunk)
    unchanged = chunk.unchanged()
    u = chunk.unit
    out = []
    for name in u.methods:
        ids = u.ids_for(name, chunk.ids)
        if len(ids) == len(chunk.ids):
            out.append(_run_method(chunk, name, preds, unchanged))
        elif ids:  # a method capped to fewer images (method_images): the part of the chunk it needs
            pos = [chunk.ids.index(i) for i in ids]
            part = _Chunk(run, u, ids, chunk.patch)
            part_preds = {k: [v[p] for p in pos] for k, v in preds.items()}
            out.append(_run_method(part, name, part_preds, None if unchanged is None else [unchanged[p] for p in pos]))
    return out


def _run_method(chunk: _Chunk, name: str, preds: Mapping[str, Any], unchanged: list[bool] | None) -> Outcome:
    """Records of one method on the chunk (from cache or computed)."""
    method = chunk.plan.method(name)
    key = _key(chunk.plan, chunk.unit, chunk.ids, method)
    payload = chunk.run.cache.get("records", key)
    if payload is None:
        return _compute(chunk, method, preds, key, unchanged)
    return dataclasses.replace(_outcome(chunk, method, preds, unchanged, payload), cached=True, called=False)


def execute(plan: EvalPlan, cache: RecordCache, ctx: ExecContext,
            on_chunk: Callable[[int, int], None] | None = None) -> Execution:
    """Compute (or read from ``cache``) every record this rank owns; ``on_chunk(done, total)`` reports progress."""
    from bam._progress import progress_bar

    patches, summaries = _patch_sets(plan, ctx)
    bs = plan.config.batch_size
    tasks = [(u, s) for u in plan.units for s in range(0, len(u.image_ids), bs)]
    mine = [t for i, t in enumerate(tasks) if i % ctx.dist.world_size == ctx.dist.rank]
    run = _Run(plan, cache, ctx)
    outcomes: list[Outcome] = []
    for done, (unit, start) in enumerate(progress_bar(mine, desc="evaluate", enabled=ctx.progress, unit="chunk")):
        outcomes += _run_chunk(_Chunk(run, unit, unit.image_ids[start:start + bs], patches.get(unit.model.sha256)))
        if on_chunk is not None:
            on_chunk(done + 1, len(mine))
    run.close_unit()
    failures: dict[str, str] = {}
    for o in outcomes:
        if o.error is not None:
            failures.setdefault(o.batch.method, o.error)
    return Execution(batches=tuple(o.batch for o in outcomes), costs=tuple(o.cost for o in outcomes),
                     failures=failures, patches=summaries, method_calls=sum(o.called for o in outcomes),
                     cache_stats={"hits": cache.hits, "misses": cache.misses, "corrupt": cache.corrupt,
                                  "records_from_cache": sum(len(o.batch.image_ids) for o in outcomes if o.cached),
                                  "records_computed": sum(len(o.batch.image_ids) for o in outcomes if not o.cached)},
                     isolation={"checks": run.guard_checks, "seconds": round(run.guard_seconds, 4)})


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
    iso: dict[str, float] = {}
    for p in parts:
        for k, v in p.failures.items():
            failures.setdefault(k, v)
        patches.update(p.patches)
        for k, n in p.cache_stats.items():
            stats[k] = stats.get(k, 0) + n
        for k, amount in p.isolation.items():
            iso[k] = iso.get(k, 0.0) + float(amount)
    return Execution(batches=tuple(b for p in parts for b in p.batches), costs=tuple(c for p in parts for c in p.costs),
                     failures=failures, patches=patches, method_calls=sum(p.method_calls for p in parts),
                     cache_stats=stats, isolation=iso)

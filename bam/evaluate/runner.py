"""The evaluation runner: per-image records (cached, sharded), metrics, reports (SPEC §4, §6).

Work is organised in *units* (model, subset, input) over a list of selected val image ids, cut
into chunks of ``batch_size`` images. For each chunk the images are loaded once, the model's
predictions are computed once (and cached) and shared by every method; each method's records
for the chunk are one cache file. Under torchrun the chunks are dealt round-robin to the ranks
and rank 0 gathers the records and writes the reports.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bam._device import peak_memory_mb
from bam._io import hash_json
from bam.errors import BamError
from bam.evaluate._cache import RecordCache
from bam.evaluate._plan import (
    FAMILIES,
    MethodPlan,
    ModelEntry,
    Unit,
    check_manifest,
    metric_needs,
    missing_role_message,
    models_by_family,
    plan_methods,
    plan_metrics,
    select_ids,
)
from bam.evaluate.config import EvalConfig
from bam.evaluate.iir_patch import PatchSet, build_patch_set, patch_summary
from bam.metrics import Need, get_metric_info, list_metrics, object_attribution

log = logging.getLogger("bam.evaluate")


@dataclass(frozen=True)
class DistInfo:
    """Rank and world size of a torch.distributed run (world_size 1: single process)."""

    rank: int = 0
    world_size: int = 1


@dataclass
class RunState:
    """What a run produced before the reports: records, costs, skips, failures, patch sets."""

    records: list[dict[str, Any]] = field(default_factory=list)
    costs: dict[str, dict[str, float]] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    patches: dict[str, dict[str, Any]] = field(default_factory=dict)
    method_calls: int = 0


def _status(valid: bool, nonfinite: float, g: float, empty_mask: bool) -> str:
    """The record status: ok, method_failed, nonfinite, empty_mask or constant_map."""
    if not valid:
        return "nonfinite" if nonfinite > 0 else "method_failed"
    if not math.isfinite(g):
        return "empty_mask" if empty_mask else "constant_map"
    return "ok"


class Runner:
    """One evaluation: plan, compute (with cache), gather. Build with :func:`evaluate`."""

    def __init__(self, data: Any, models: Sequence[ModelEntry], config: EvalConfig, out: Path, *, seed: int,
                 device: torch.device, progress: bool, explicit_metrics: bool, explicit_methods: bool,
                 dist: DistInfo, models_root: str) -> None:
        self.data, self.config, self.out, self.seed = data, config, Path(out), int(seed)
        self.device, self.progress, self.dist = device, progress, dist
        self.cache = RecordCache(self.out / "cache")
        self.state = RunState()
        self.by_family = models_by_family(models)
        self.num_k = len(data.scene_classes)
        from bam.methods import list_methods

        names = list(config.methods) or list_methods()
        self.methods = {p.name: p for p in plan_methods(config, names)}
        self.metrics = plan_metrics(list(config.metrics) or list_metrics())
        self.active: dict[tuple[str, str], tuple[Need, ...]] = {}  # (family, metric) -> needs
        self.selected: dict[str, list[str]] = {}  # metric -> the val image ids it uses
        self._subsets: dict[str, tuple[Any, dict[str, int]]] = {}  # subset -> (val split, id -> row)
        self._plan_feasible(explicit_metrics, explicit_methods, models_root)

    # ---------------------------------------------------------------- planning
    def _plan_feasible(self, explicit_metrics: bool, explicit_methods: bool, models_root: str) -> None:
        """Decide which (family, metric) pairs can run; skip (or raise) when model roles are missing."""
        for fam in FAMILIES:
            fam_methods = [m for m in self.methods.values() if m.family == fam]
            if not fam_methods:
                continue
            roles = self.by_family[fam]
            for metric in self.metrics:
                needs = metric_needs(metric, self.num_k)
                if metric == "rmcs":
                    needs = self._rmcs_needs(needs, roles)
                missing = sorted({n.role for n in needs if n.role not in roles}) if needs else \
                    [f"commonality-{self.num_k}"]
                if missing:
                    msg = missing_role_message(metric, fam, missing, models_root, str(getattr(self.data, "root", "DATA")))
                    if explicit_metrics and (explicit_methods or fam == "standard"):
                        raise BamError(msg)
                    log.warning("skipping %s for %s: %s", metric, ", ".join(m.name for m in fam_methods), msg)
                    self.state.skipped.append({"metric": metric, "family": fam, "reason": msg,
                                               "methods": ",".join(m.name for m in fam_methods)})
                    continue
                for n in needs:
                    check_manifest(roles[n.role], self.data.manifest_hash)
                self.active[(fam, metric)] = needs
        if not self.active:
            raise BamError("nothing to evaluate: every requested metric lacks its models "
                           f"(see the messages above); models found: "
                           f"{', '.join(sorted(r for f in FAMILIES for r in self.by_family[f])) or 'none'}")

    def _rmcs_needs(self, needs: tuple[Need, ...], roles: dict[str, ModelEntry]) -> tuple[Need, ...]:
        """RMCS runs on the commonality-k models present, if commonality-K and >= 2 curve points exist."""
        ref = f"commonality-{self.num_k}"
        have = tuple(n for n in needs if n.role in roles)
        if ref not in roles or len(have) < 3:
            return ()
        absent = [n.role for n in needs if n.role not in roles]
        if absent:
            log.warning("rmcs: no model for %s; the curve uses the other k", ", ".join(absent))
        return have

    def units(self) -> list[Unit]:
        """The (family, model, subset, input) units with their image ids and methods, in a fixed order."""
        units: dict[tuple[str, Need], Unit] = {}
        for (fam, metric), needs in self.active.items():
            info = get_metric_info(metric)
            ids = select_ids(self.data, info.selection_subset, self.config.image_limit(metric),
                             self.config.selection_seed)
            self.selected[metric] = ids
            for n in needs:
                u = units.setdefault((fam, n), Unit(fam, n, self.by_family[fam][n.role]))
                seen = set(u.ids)
                u.ids.extend(i for i in ids if i not in seen)
                for m in self.methods.values():
                    if m.family == fam and m.name not in u.methods:
                        u.methods.append(m.name)
        return [units[k] for k in sorted(units, key=lambda k: (k[0], k[1].role, k[1].subset, k[1].input))]

    # ---------------------------------------------------------------- computing
    def run(self) -> RunState:
        """Compute every record this rank owns (cached chunks are read, not recomputed)."""
        units = self.units()
        patches = self._patch_sets(units)
        tasks = [(u, s) for u in units for s in range(0, len(u.ids), self.config.batch_size)]
        mine = [t for i, t in enumerate(tasks) if i % self.dist.world_size == self.dist.rank]
        from tqdm import tqdm

        for unit, start in tqdm(mine, desc="evaluate", disable=not self.progress, leave=False):
            ids = unit.ids[start:start + self.config.batch_size]
            self._chunk(unit, ids, patches.get(unit.entry.sha256))
        return self.state

    def _patch_sets(self, units: list[Unit]) -> dict[str, PatchSet]:
        """Build or load the IIR patch set of each scene_only model whose iir_patch input is needed."""
        out: dict[str, PatchSet] = {}
        todo = [u for u in units if u.need.input == "iir_patch"]
        if self.dist.world_size > 1 and self.dist.rank != 0:
            torch.distributed.barrier()
        for u in todo:
            if u.entry.sha256 in out:
                continue
            ps = build_patch_set(self.data, u.entry.model, u.entry.sha256, self.config.iir_patch, self.device,
                                 self.progress)
            out[u.entry.sha256] = ps
            self.state.patches[f"{u.family}:{u.entry.sha256[:16]}"] = patch_summary(ps)
        if self.dist.world_size > 1 and self.dist.rank == 0:
            torch.distributed.barrier()
        return out

    def _key(self, unit: Unit, ids: list[str], method: MethodPlan | None) -> dict[str, Any]:
        """The cache key of a chunk: predictions (``method`` None) or one method's records."""
        key: dict[str, Any] = {"model": unit.entry.sha256, "manifest": self.data.manifest_hash,
                               "subset": unit.need.subset, "input": unit.need.input, "ids": hash_json(ids)}
        if unit.need.input == "iir_patch":
            key["patch"] = hash_json([self.config.iir_patch.steps, self.config.iir_patch.alpha,
                                      self.config.iir_patch.beta, self.config.iir_patch.step_size])
        if method is not None:
            key.update(method=method.name, params=method.params_hash,
                       seed=self.seed if method.info.stochastic else None)
        return key

    def _chunk(self, unit: Unit, ids: list[str], patch: PatchSet | None) -> None:
        """Records of every method of ``unit`` on one chunk of images (from cache or computed)."""
        batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

        def load() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            """Load the chunk's images once, on first use."""
            nonlocal batch
            if batch is None:
                batch = self._load(unit, ids, patch)
            return batch

        pkey = self._key(unit, ids, None)
        preds = self.cache.get("pred", pkey)
        if preds is None:
            x, y, _m = load()
            with torch.no_grad():
                p = unit.entry.model.eval()(x).argmax(1).cpu()
            preds = {"prediction": p.tolist(), "label": y.cpu().tolist()}
            self.cache.put("pred", pkey, preds)
        unchanged = None
        if patch is not None:
            t = patch.table.set_index("image_id")
            unchanged = [bool(t.loc[i, "unchanged"]) for i in ids]
        for name in unit.methods:
            plan = self.methods[name]
            key = self._key(unit, ids, plan)
            payload = self.cache.get("records", key)
            if payload is None:
                payload = self._compute(unit, ids, plan, load, preds, key)
                if payload is None:
                    continue
            self._collect(unit, ids, plan, preds, payload, unchanged)

    def _val_subset(self, name: str) -> tuple[Any, dict[str, int]]:
        """The val split of subset ``name`` and its image_id -> row map, built once per run."""
        if name not in self._subsets:
            sub = self.data.subset(name, split="val")
            self._subsets[name] = (sub, {str(i): n for n, i in enumerate(sub.table["image_id"])})
        return self._subsets[name]

    def _load(self, unit: Unit, ids: list[str], patch: PatchSet | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images, labels and masks of ``ids`` on the device (patched images for iir_patch)."""
        sub, pos = self._val_subset(unit.need.subset)
        x, y, m = sub.load_batch([pos[i] for i in ids])
        if unit.need.input == "iir_patch":
            assert patch is not None
            x = patch.patched[patch.rows(ids)]
        return x.to(self.device), y.to(self.device), m.to(self.device)

    def _compute(self, unit: Unit, ids: list[str], plan: MethodPlan, load: Any, preds: dict[str, Any],
                 key: dict[str, Any]) -> dict[str, Any] | None:
        """Run the method on the chunk; cache and return the payload (None when it raised)."""
        from bam.methods import attribute_full

        x, _y, m = load()
        target = torch.tensor(preds["prediction"], dtype=torch.long, device=x.device)
        params = dict(plan.params)
        if self.config.micro_batch is not None:
            params["micro_batch"] = self.config.micro_batch
        if plan.info.stochastic:
            params["seed"] = int(hash_json([self.seed, key["model"], key["subset"], key["input"], key["ids"]])[:7], 16)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        self.state.method_calls += 1
        try:
            res = attribute_full(plan.name, unit.entry.model, x, target, **params)
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
            log.warning("method %s failed on %s/%s (%d images): %s", plan.name, unit.need.role, unit.need.input,
                        len(ids), msg)
            self.state.failures[plan.name] = msg
            n = len(ids)
            return {"g": [math.nan] * n, "valid": [False] * n, "extras": {"nonfinite": [0.0] * n},
                    "seconds": 0.0, "peak_mb": 0.0, "error": msg}
        seconds = time.perf_counter() - t0
        g = object_attribution(res.attributions, m).cpu().tolist()
        payload = {"g": g, "valid": res.valid.cpu().tolist(),
                   "empty_mask": (m.flatten(1).sum(1) == 0).cpu().tolist(),
                   "extras": {k: v.detach().float().cpu().tolist() for k, v in sorted(res.extras.items())},
                   "seconds": seconds, "peak_mb": peak_memory_mb(self.device)}
        self.cache.put("records", key, payload)
        return payload

    def _collect(self, unit: Unit, ids: list[str], plan: MethodPlan, preds: dict[str, Any],
                 payload: dict[str, Any], unchanged: list[bool] | None) -> None:
        """Turn a chunk payload into per-image records and accumulate costs."""
        extras = payload.get("extras", {})
        nonfinite = extras.get("nonfinite", [0.0] * len(ids))
        for i, iid in enumerate(ids):
            g = payload["g"][i]
            g = math.nan if g is None else float(g)
            valid = bool(payload["valid"][i])
            empty = bool(payload.get("empty_mask", [False] * len(ids))[i])
            status = _status(valid, float(nonfinite[i] or 0.0), g, empty)
            rec = {"image_id": iid, "subset": unit.need.subset, "input": unit.need.input,
                   "model_role": unit.need.role, "model_hash": unit.entry.sha256[:16], "method": plan.name,
                   "method_hash": plan.params_hash, "prediction": int(preds["prediction"][i]),
                   "label": int(preds["label"][i]), "correct": int(preds["prediction"][i]) == int(preds["label"][i]),
                   "g": g if status == "ok" else math.nan, "valid": valid, "status": status}
            if unchanged is not None:
                rec["patch_unchanged"] = unchanged[i]
            for k, v in extras.items():
                rec[k] = float(v[i]) if v[i] is not None else math.nan
            self.state.records.append(rec)
        c = self.state.costs.setdefault(f"{plan.name}|{unit.need.role}|{unit.need.input}",
                                        {"seconds": 0.0, "n": 0, "peak_mb": 0.0})
        c["seconds"] += float(payload.get("seconds", 0.0))
        c["n"] += len(ids) if "error" not in payload else 0
        c["peak_mb"] = max(c["peak_mb"], float(payload.get("peak_mb", 0.0)))


def gather(state: RunState, dist: DistInfo) -> RunState | None:
    """Merge the states of all ranks on rank 0 (None on the other ranks)."""
    if dist.world_size <= 1:
        return state
    parts: list[Any] = [None] * dist.world_size
    torch.distributed.all_gather_object(parts, state)
    if dist.rank != 0:
        return None
    merged = RunState()
    for p in parts:
        merged.records.extend(p.records)
        merged.skipped = p.skipped
        merged.failures.update(p.failures)
        merged.patches.update(p.patches)
        merged.method_calls += p.method_calls
        for k, c in p.costs.items():
            m = merged.costs.setdefault(k, {"seconds": 0.0, "n": 0, "peak_mb": 0.0})
            m["seconds"] += c["seconds"]
            m["n"] += c["n"]
            m["peak_mb"] = max(m["peak_mb"], c["peak_mb"])
    return merged


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """All records as a DataFrame in a deterministic order (method, role, input, subset, image_id)."""
    from bam.evaluate.results import RECORD_COLUMNS

    df = pd.DataFrame.from_records(records)
    if df.empty:
        return pd.DataFrame(columns=list(RECORD_COLUMNS))
    extra = sorted(c for c in df.columns if c not in RECORD_COLUMNS)
    df = df[list(RECORD_COLUMNS) + extra]
    df = df.sort_values(["method", "model_role", "input", "subset", "image_id"], kind="stable")
    return df.reset_index(drop=True)



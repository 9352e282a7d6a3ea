"""TCAV for one model: CAVs per (layer, run), then directional derivatives on the targets.

Kim et al. 2018: a CAV is the unit normal of a linear boundary between a concept's and a random
set's activations at a layer, pointing to the concept; the TCAV score of a class is the fraction
of its images whose class objective increases along the CAV. Runs of one layer share one
activation pass over every set image and one Gram matrix; the target images take one
forward+backward pass per batch for every layer at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from bam._io import hash_json
from bam.concepts._cache import KIND, CavCache
from bam.concepts._capture import layer_activations, model_device, target_gradients
from bam.concepts._classifier import SOLVER, TOL, fit_svm, gram
from bam.concepts.config import TcavConfig
from bam.concepts.sets import ConceptSets, ImageSet, ImageSource
from bam.errors import BamError

#: Cache-key format of a CAV (bump when the key's meaning changes).
CAV_FORMAT = 1


class Run(NamedTuple):
    """One CAV experiment: ``positive`` (concept or counterpart) vs random set ``negative``."""

    kind: str  # "concept" | "random"
    run: int
    positive: ImageSet
    negative: ImageSet


@dataclass(frozen=True)
class TcavJob:
    """What every model of one evaluation shares: sets, their images, config, cache."""

    sets: ConceptSets
    source: ImageSource
    config: TcavConfig
    cache: CavCache


@dataclass
class Counters:
    """Work done (for tests and cost reports)."""

    cavs_trained: int = 0
    cavs_cached: int = 0
    activation_images: int = 0
    gradient_images: int = 0
    solver_iterations: int = 0


def experiment_runs(sets: ConceptSets) -> list[Run]:
    """Concept vs random_i for every i, then the null: counterpart vs random_i (tcav's pairs)."""
    return ([Run("concept", i, sets.concept, r) for i, r in enumerate(sets.randoms)]
            + [Run("random", i, sets.counterpart, r) for i, r in enumerate(sets.randoms)])


def load_images(source: ImageSource, image_set: ImageSet, batch_size: int) -> Tensor:
    """Every image of ``image_set`` as one CPU tensor, loaded in batches."""
    parts = [source.load(image_set, list(range(s, min(s + batch_size, len(image_set)))))
             for s in range(0, len(image_set), batch_size)]
    return torch.cat(parts).float().cpu()


def _split(run: Run, m: int, config: TcavConfig) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of m positives + m negatives -> (train rows, test rows) of the pair."""
    rng = np.random.default_rng([config.seed & 0xFFFFFFFF,
                                 int(hash_json([run.positive.content_hash, run.negative.content_hash])[:8], 16)])
    n_test = min(m - 1, round(config.holdout * m))
    train, test = [], []
    for offset in (0, m):
        order = rng.permutation(m) + offset
        test.append(order[:n_test])
        train.append(order[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def cav_key(model_hash: str, layer: str, run: Run, config: TcavConfig) -> dict[str, Any]:
    """What a CAV depends on (the cache key)."""
    return {"kind": KIND, "format": CAV_FORMAT, "model": model_hash, "layer": layer,
            "positive": run.positive.content_hash, "negative": run.negative.content_hash,
            "alpha": float(config.alpha), "holdout": float(config.holdout), "seed": int(config.seed),
            "solver": SOLVER, "tol": TOL}


class SetPool:
    """Every training-set image in one tensor, with each set's row offset."""

    def __init__(self, job: TcavJob) -> None:
        """Load the concept, random and counterpart images once."""
        sets = (job.sets.concept, *job.sets.randoms, job.sets.counterpart)
        self.offset: dict[str, int] = {}
        parts, n = [], 0
        for s in sets:
            self.offset[s.name] = n
            parts.append(load_images(job.source, s, job.config.batch_size))
            n += len(s)
        self.images = torch.cat(parts)

    def rows(self, run: Run, m: int) -> np.ndarray:
        """Pool rows of the first m positives then the first m negatives of ``run``."""
        return np.concatenate([self.offset[run.positive.name] + np.arange(m),
                               self.offset[run.negative.name] + np.arange(m)])


@dataclass
class Work:
    """One evaluation's shared state: the job, the loaded set images, the counters."""

    job: TcavJob
    pool: SetPool
    counters: Counters


def _train_layer(work: Work, model: nn.Module, name: str, module: nn.Module | None,
                 todo: list[tuple[int, Run]]) -> dict[int, tuple[Tensor, dict[str, Any]]]:
    """Train the CAVs of ``todo`` (index, run) at one layer: {index: (unit CAV [D], diagnostics)}."""
    job, pool, counters = work.job, work.pool, work.counters
    x = layer_activations(model, name, module, pool.images, job.config.batch_size)
    counters.activation_images += len(pool.images)
    k_all = gram(x)
    by_size: dict[int, list[tuple[int, Run]]] = {}
    for idx, run in todo:
        by_size.setdefault(min(len(run.positive), len(run.negative)), []).append((idx, run))
    out: dict[int, tuple[Tensor, dict[str, Any]]] = {}
    for m, group in by_size.items():
        splits = [_split(run, m, job.config) for _, run in group]
        rows = [pool.rows(run, m) for _, run in group]
        y_pair = torch.cat([torch.ones(m), -torch.ones(m)]).double().to(x.device)
        train_rows = [torch.as_tensor(r[tr], device=x.device) for r, (tr, _) in zip(rows, splits)]
        k = torch.stack([k_all[tr][:, tr] for tr in train_rows])
        y = torch.stack([y_pair[torch.as_tensor(tr, device=x.device)] for tr, _ in splits])
        fit = fit_svm(k, y, job.config.alpha)
        counters.solver_iterations += fit.iterations
        coef = torch.zeros(len(group), len(x), dtype=torch.float64, device=x.device)
        for j, tr in enumerate(train_rows):
            coef[j].index_add_(0, tr, fit.beta[j])
        w = coef.float() @ x
        norms = w.norm(dim=1)
        for j, (idx, run) in enumerate(group):
            if not float(norms[j]) > 0:
                raise BamError(f"CAV of {run.positive.name!r} vs {run.negative.name!r} at layer {name!r} is zero: "
                               "their activations are indistinguishable; accepted: sets the layer separates")
            tr_rows, (_, te) = train_rows[j], splits[j]
            acc = float("nan")
            if len(te):  # held-out accuracy, from kernel rows: w.x + b = sum_i beta_i x_i.x + b
                te_rows = torch.as_tensor(rows[j][te], device=x.device)
                scores = k_all[te_rows][:, tr_rows] @ fit.beta[j] + fit.bias[j]
                predicted = torch.where(scores > 0, 1.0, -1.0).double()
                acc = float((predicted == y_pair[torch.as_tensor(te, device=x.device)]).double().mean())
            info = {"accuracy": acc, "n_train": len(tr_rows), "n_test": len(te),
                    "error_bound": float(fit.gap[j]), "iterations": int(fit.iterations)}
            out[idx] = ((w[j] / norms[j]).contiguous(), info)
            counters.cavs_trained += 1
    return out


def model_cavs(work: Work, model: nn.Module, model_hash: str,
               layers: Mapping[str, nn.Module | None]) -> dict[str, tuple[Tensor, list[dict[str, Any]]]]:
    """{layer: (unit CAVs [R, D] in :func:`experiment_runs` order, per-run diagnostics)} (cached)."""
    job, counters = work.job, work.counters
    runs = experiment_runs(job.sets)
    device = model_device(model)
    result: dict[str, tuple[Tensor, list[dict[str, Any]]]] = {}
    for name, module in layers.items():
        keys = [cav_key(model_hash, name, run, job.config) for run in runs]
        found: dict[int, tuple[Tensor, dict[str, Any]]] = {}
        for i, key in enumerate(keys):
            hit = job.cache.get(key, device)
            if hit is not None:
                found[i] = (hit.vector, {**hit.info, "cached": True})
                counters.cavs_cached += 1
        todo = [(i, run) for i, run in enumerate(runs) if i not in found]
        if todo:
            fresh = _train_layer(work, model, name, module, todo)
            for i, (vec, info) in fresh.items():
                job.cache.put(keys[i], vec, info)
                found[i] = (vec, {**info, "cached": False})
        dims = {int(found[i][0].numel()) for i in found}
        if len(dims) != 1:
            raise BamError(f"CAVs of layer {name!r} have different sizes {sorted(dims)} (a stale cache?); "
                           "accepted: delete the cache directory")
        result[name] = (torch.stack([found[i][0] for i in range(len(runs))]),
                        [found[i][1] for i in range(len(runs))])
    return result


def target_derivatives(work: Work, model: nn.Module, layers: Mapping[str, nn.Module | None],
                       cavs: Mapping[str, Tensor], targets: Tensor, target: int
                       ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({layer: directional derivatives [N, R]}, predictions [N]) over the target images."""
    job, counters = work.job, work.counters
    out: dict[str, list[np.ndarray]] = {n: [] for n in layers}
    preds: list[np.ndarray] = []
    bs = job.config.batch_size
    for start in range(0, len(targets), bs):
        grads, logits, scale = target_gradients(model, layers, targets[start:start + bs], target,
                                                job.config.gradient)
        counters.gradient_images += min(bs, len(targets) - start)
        preds.append(logits.argmax(1).cpu().numpy())
        for name, g in grads.items():
            v = cavs[name]
            if v.shape[1] != g.shape[1]:
                raise BamError(f"layer {name!r}: CAV size {v.shape[1]} != activation size {g.shape[1]}; "
                               "accepted: CAVs of this model (delete a stale cache)")
            out[name].append(((g.double() @ v.to(g.device).double().T) * scale[:, None]).cpu().numpy())
    return {n: np.concatenate(v) for n, v in out.items()}, np.concatenate(preds)

"""Planning an evaluation: a pure function from (data, models, config) to a frozen :class:`EvalPlan`.

The plan says everything the evaluation will do before any image is attributed: which methods
(with resolved, validated parameters) run on which model *kind* (``standard`` models, or the
``invertible`` models the invertible methods need), which metrics run with which parameters and
which val images, the *units* of work (one model on one subset/input over a list of images, for a
list of methods), and what is skipped and why.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bam._io import hash_json
from bam.concepts import list_concept_methods
from bam.data.protocols import DatasetLike
from bam.errors import BamError, choices_error
from bam.evaluate.config import EvalConfig
from bam.methods import MethodInfo, list_methods, method_space, resolve_method, resolve_params
from bam.metrics import METRICS, MetricInfo, Need, get_metric_info, list_metrics
from bam.models.checkpoint import ModelCard, check_trained_on

log = logging.getLogger("bam.evaluate")

#: Model kinds: invertible methods run on invertible models, every other method on standard ones.
MODEL_KINDS: tuple[str, ...] = ("standard", "invertible")


@dataclass(frozen=True)
class ModelEntry:
    """A loaded model with its card and checkpoint path."""

    model: torch.nn.Module
    card: ModelCard
    path: str = ""

    @property
    def sha256(self) -> str:
        """The checkpoint's weights sha256 (identifies the model in cache keys and reports)."""
        return str(self.card.weights_sha256)

    @property
    def kind(self) -> str:
        """``invertible`` or ``standard``."""
        return "invertible" if self.card.invertible else "standard"


@dataclass(frozen=True)
class MethodPlan:
    """A method to evaluate: name, metadata, resolved parameters (their hash names the cache entries)."""

    name: str
    info: MethodInfo
    params: Mapping[str, Any]
    params_hash: str
    kind: str
    #: "pixel" or "model" (SPEC §5.8)
    space: str = "pixel"


@dataclass(frozen=True)
class MetricPlan:
    """A metric to compute for the methods of one model kind, on these images, with these parameters.

    ``caps``: method -> how many of ``image_ids`` (a prefix) it uses, for methods with fewer images.
    """

    name: str
    info: MetricInfo
    kind: str
    needs: tuple[Need, ...]
    image_ids: tuple[str, ...]
    params: Mapping[str, Any]
    caps: Mapping[str, int]

    def ids_for(self, method: str) -> tuple[str, ...]:
        """The images ``method`` is scored on for this metric."""
        cap = self.caps.get(method)
        return self.image_ids if cap is None else self.image_ids[:cap]


@dataclass(frozen=True)
class Unit:
    """One model on one (subset, input) over ``image_ids``, for ``methods`` (names).

    ``subsets``: method -> the image ids it needs here, for methods that do not need all of them.
    """

    kind: str
    need: Need
    model: ModelEntry
    image_ids: tuple[str, ...]
    methods: tuple[str, ...]
    subsets: Mapping[str, frozenset[str]]

    def ids_for(self, method: str, ids: Sequence[str]) -> list[str]:
        """The part of ``ids`` that ``method`` needs."""
        want = self.subsets.get(method)
        return list(ids) if want is None else [i for i in ids if i in want]


@dataclass(frozen=True)
class Skip:
    """A metric that cannot run for the methods of one model kind: the model roles it lacks."""

    metric: str
    kind: str
    methods: tuple[str, ...]
    missing_roles: tuple[str, ...]
    #: True when the config names the metric (and the methods) explicitly: the skip is an error
    required: bool


@dataclass(frozen=True)
class ConceptPlan:
    """A concept method (``tcav``) to run once on ``models`` (role -> entry) for ``metrics``."""

    method: str
    metrics: tuple[MetricPlan, ...]
    models: Mapping[str, ModelEntry]
    params: Mapping[str, Any]
    params_hash: str


@dataclass(frozen=True)
class EvalPlan:
    """Everything an evaluation will compute (see the module docstring)."""

    config: EvalConfig
    data: DatasetLike
    seed: int
    methods: tuple[MethodPlan, ...]
    metrics: tuple[MetricPlan, ...]
    units: tuple[Unit, ...]
    skipped: tuple[Skip, ...]
    models: Mapping[str, Mapping[str, ModelEntry]]  # kind -> role -> entry
    concepts: tuple[ConceptPlan, ...] = ()

    def method(self, name: str) -> MethodPlan:
        """The plan of method ``name``."""
        return next(m for m in self.methods if m.name == name)


def _frozen(d: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy."""
    return types.MappingProxyType(dict(d))


def method_kind(info: MethodInfo) -> str:
    """``invertible`` when the method requires an invertible model, else ``standard``."""
    return "invertible" if "invertible" in tuple(info.requires) else "standard"


def plan_methods(config: EvalConfig, names: Sequence[str]) -> tuple[MethodPlan, ...]:
    """Resolve every method (built-in or plug-in) and validate its parameters (defaults + overrides)."""
    plans = []
    for name in names:
        _fn, info = resolve_method(name)
        params = resolve_params(info, config.params_for(name))
        params.pop("micro_batch", None)
        params.pop("seed", None)
        space = method_space(name, config.space)
        ident: list[Any] = [name, params] if space == "pixel" else [name, params, space, config.mask_mode]
        plans.append(MethodPlan(name, info, _frozen(params), hash_json(ident)[:16], method_kind(info), space))
    return tuple(plans)


def check_config_names(config: EvalConfig) -> None:
    """Names in ``images``, ``method_params`` and ``metric_params`` must be registered (typos are errors)."""
    metrics = list_metrics()
    for section in ("images", "metric_params"):
        for key in dict(getattr(config, section)):
            if key not in metrics:
                raise choices_error(f"metric in eval config {section}", key, metrics)
    methods = [*list_methods(), *list_concept_methods()]
    for section in ("method_params", "method_images"):
        for key in dict(getattr(config, section)):
            if key not in methods and ":" not in key:
                raise choices_error(f"method in eval config {section}", key, methods,
                                    "or a plug-in as package.module:callable")
    for metric, overrides in dict(config.metric_params).items():
        info = get_metric_info(metric)
        unknown = sorted(set(overrides) - set(info.defaults))
        if unknown:
            raise BamError(f"unknown parameter(s) {', '.join(unknown)} for metric {metric!r} in eval config "
                           f"metric_params; accepted: {', '.join(sorted(info.defaults)) or '(none)'}")


def models_by_kind(models: Sequence[ModelEntry]) -> dict[str, dict[str, ModelEntry]]:
    """{kind: {role: entry}}; two models of one kind with the same role raise a BamError."""
    out: dict[str, dict[str, ModelEntry]] = {k: {} for k in MODEL_KINDS}
    for e in models:
        role = str(e.card.role)
        if role in out[e.kind]:
            raise BamError(f"two {e.kind} models with role {role!r}: {out[e.kind][role].path} and {e.path}; "
                           "keep one per role in the models directory")
        out[e.kind][role] = e
    return out


def select_ids(data: DatasetLike, subset: str, limit: int | None, selection_seed: int) -> tuple[str, ...]:
    """The val image ids of ``subset`` a metric uses: a fixed seeded permutation, first ``limit``.

    The permutation depends only on ``selection_seed`` and the ids, so a smaller limit selects a
    prefix of a larger one and the chunks (and their cache entries) are shared.
    """
    ids = [str(i) for i in data.subset(subset, split="val").table["image_id"]]
    order = np.random.default_rng(selection_seed).permutation(len(ids))
    chosen = tuple(ids[i] for i in order)
    return chosen if limit is None else chosen[:limit]


def needed_roles(config: EvalConfig, num_k: int) -> set[str]:
    """Every model role the config's metrics can read (so that only those models are loaded)."""
    names = list(config.metrics) or list_metrics()
    return {n.role for m in names if m in METRICS
            for n in (*get_metric_info(m).needs(num_k), *get_metric_info(m).optional_needs(num_k))}


def _feasible(info: MetricInfo, num_k: int,
              roles: Mapping[str, ModelEntry]) -> tuple[tuple[Need, ...], tuple[str, ...]]:
    """(the needs the metric reads with these models, the roles it lacks); lacking roles = not runnable."""
    required = info.needs(num_k)
    optional = info.optional_needs(num_k)
    missing = tuple(sorted({n.role for n in required if n.role not in roles}))
    have = tuple(n for n in optional if n.role in roles)
    if not missing and len(have) < info.min_optional:
        missing = tuple(n.role for n in optional if n.role not in roles)
    if missing:
        return (), missing
    absent = [n.role for n in optional if n.role not in roles]
    if absent:
        log.warning("%s: no model for %s; it uses the others", info.name, ", ".join(absent))
    return (*required, *have), ()


def _units(metrics: Sequence[MetricPlan], methods: Sequence[MethodPlan],
           models: Mapping[str, Mapping[str, ModelEntry]]) -> tuple[Unit, ...]:
    """The (kind, model, subset, input) units with their image ids and methods, in a fixed order."""
    ids: dict[tuple[str, Need], list[str]] = {}
    per_method: dict[tuple[str, Need], dict[str, set[str]]] = {}
    for mp in metrics:
        for n in mp.needs:
            have = ids.setdefault((mp.kind, n), [])
            seen = set(have)
            have.extend(i for i in mp.image_ids if i not in seen)
            sets = per_method.setdefault((mp.kind, n), {})
            for m in methods:
                if m.kind == mp.kind:
                    sets.setdefault(m.name, set()).update(mp.ids_for(m.name))
    units = []
    for kind, need in sorted(ids, key=lambda k: (k[0], k[1].role, k[1].subset, k[1].input)):
        everything = set(ids[(kind, need)])
        subsets = {m: frozenset(s) for m, s in per_method[(kind, need)].items() if s != everything}
        units.append(Unit(kind, need, models[kind][need.role], tuple(ids[(kind, need)]),
                          tuple(m.name for m in methods if m.kind == kind), _frozen(subsets)))
    return tuple(units)


def plan(data: DatasetLike, models: Sequence[ModelEntry], config: EvalConfig) -> EvalPlan:
    """Decide what an evaluation computes (pure: no model is run, nothing is written).

    A metric whose model roles are missing is skipped for that model kind (:class:`Skip`); it is
    ``required`` when ``config.metrics`` names it and ``config.methods`` names methods of that kind
    (or the kind is ``standard``). Concept methods (``tcav``) run for their metrics when
    ``config.methods`` is empty or names them. A model trained on another dataset build raises a BamError.
    """
    check_config_names(config)
    by_kind = models_by_kind(models)
    num_k = len(data.scene_classes)
    concept_names = set(list_concept_methods())
    methods = plan_methods(config, [m for m in config.methods if m not in concept_names] if config.methods
                           else list_methods())
    wanted_concepts = {m for m in config.methods if m in concept_names} if config.methods else concept_names
    for name in config.metrics:
        METRICS.get(name)
    names = sorted(set(config.metrics) or set(list_metrics()), key=list_metrics().index)
    ctx = _PlanContext(data=data, config=config, by_kind=by_kind, num_k=num_k, selections={})
    metric_plans: list[MetricPlan] = []
    skipped: list[Skip] = []
    concept_metrics: list[MetricPlan] = []
    for name in names:
        info = get_metric_info(name)
        if info.concept_method is None or info.concept_method not in wanted_concepts:
            continue
        got = _metric_plan(ctx, info, "standard", (), name in config.metrics)
        if isinstance(got, Skip):
            skipped.append(got)
        else:
            concept_metrics.append(got)
    for kind in MODEL_KINDS:
        kind_methods = tuple(m for m in methods if m.kind == kind)
        if not kind_methods:
            continue
        for name in names:
            info = get_metric_info(name)
            if info.concept_method is not None:
                continue
            required = name in config.metrics and (bool(config.methods) or kind == "standard")
            got = _metric_plan(ctx, info, kind, kind_methods, required)
            if isinstance(got, Skip):
                skipped.append(got)
            else:
                metric_plans.append(got)
    return EvalPlan(config=config, data=data, seed=int(config.seed), methods=methods, metrics=tuple(metric_plans),
                    units=_units(metric_plans, methods, by_kind), skipped=tuple(skipped),
                    models=_frozen({k: _frozen(v) for k, v in by_kind.items()}),
                    concepts=_concepts(concept_metrics, by_kind["standard"], config))


@dataclass(frozen=True, kw_only=True)
class _PlanContext:
    """What every metric plan of one evaluation reads; ``selections`` caches metric -> image ids."""

    data: DatasetLike
    config: EvalConfig
    by_kind: Mapping[str, Mapping[str, ModelEntry]]
    num_k: int
    selections: dict[str, tuple[str, ...]]


def _metric_plan(ctx: _PlanContext, info: MetricInfo, kind: str, methods: Sequence[MethodPlan],
                 required: bool) -> MetricPlan | Skip:
    """The plan of one metric for the models of ``kind`` (scoring ``methods``, or its concept method
    when it has one), or the Skip naming the roles it lacks."""
    scored = (info.concept_method,) if info.concept_method is not None else tuple(m.name for m in methods)
    needs, missing = _feasible(info, ctx.num_k, ctx.by_kind[kind])
    if missing:
        return Skip(info.name, kind, scored, missing, required)
    for n in needs:
        entry = ctx.by_kind[kind][n.role]
        check_trained_on(entry.card, ctx.data.manifest_hash, entry.path or entry.card.role)
    context = {"num_k": ctx.num_k}
    params = {**info.defaults, **ctx.config.metric_params_for(info.name), **{c: context[c] for c in info.context}}
    if info.concept_method is not None:
        return MetricPlan(info.name, info, kind, needs, (), _frozen(params), _frozen({}))
    if info.name not in ctx.selections:
        ctx.selections[info.name] = select_ids(ctx.data, info.selection_subset, ctx.config.image_limit(info.name),
                                               ctx.config.selection_seed)
    ids = ctx.selections[info.name]
    caps = {m.name: c for m in methods if (c := ctx.config.method_image_cap(m.name)) is not None and c < len(ids)}
    return MetricPlan(info.name, info, kind, needs, ids, _frozen(params), _frozen(caps))


def _concepts(metrics: Sequence[MetricPlan], roles: Mapping[str, ModelEntry],
              config: EvalConfig) -> tuple[ConceptPlan, ...]:
    """One concept plan per concept method of the runnable concept metrics (the models they need)."""
    from bam.config import to_dict

    out = []
    for method in sorted({m.info.concept_method for m in metrics if m.info.concept_method}):
        mine = tuple(m for m in metrics if m.info.concept_method == method)
        models = {n.role: roles[n.role] for m in mine for n in m.needs}
        params = to_dict(getattr(config, method))
        out.append(ConceptPlan(method, mine, _frozen(dict(sorted(models.items()))), _frozen(params),
                               hash_json([method, params])[:16]))
    return tuple(out)

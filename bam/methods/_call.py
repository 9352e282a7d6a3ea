"""The uniform call: resolve a method (built-in or plug-in), merge defaults, check, run."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import torch
from torch import Tensor

from bam.config import from_dict, params_of
from bam.errors import BamError
from bam.methods._base import METHODS, AttributionResult, MethodFn, MethodInfo

ENTRY_POINT_GROUP = "bam.methods"
_loaded_entry_points = False


def _load_entry_points() -> None:
    global _loaded_entry_points
    if _loaded_entry_points:
        return
    _loaded_entry_points = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in METHODS:
            continue
        fn = ep.load()
        METHODS.add(ep.name, fn, _plugin_info(ep.name, fn))


def _plugin_info(name: str, fn: Any) -> MethodInfo:
    info = getattr(fn, "bam_info", None)
    if isinstance(info, MethodInfo):
        return info
    if not callable(fn):
        raise BamError(f"plug-in method {name!r} is not callable")
    sig = inspect.signature(fn)
    defaults = {k: p.default for k, p in sig.parameters.items()
                if p.kind is p.KEYWORD_ONLY and p.default is not inspect.Parameter.empty}
    doc = (inspect.getdoc(fn) or "").splitlines()
    return MethodInfo(name=name, title=doc[0] if doc else name, paper="(user plug-in)", family="plugin",
                      defaults=defaults, description=" ".join(doc))


def _load_plugin(spec: str) -> tuple[MethodFn, MethodInfo]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise BamError(f"bad plug-in method {spec!r}; expected package.module:callable")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BamError(f"cannot import plug-in module {module_name!r} for method {spec!r}: {exc}") from None
    fn: Any = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise BamError(f"plug-in module {module_name!r} has no attribute {part!r} (method {spec!r})")
        fn = getattr(fn, part)
    info = _plugin_info(spec, fn)
    if info.name != spec:  # a decorated plug-in keeps its metadata but is addressed by its spec
        info = MethodInfo(**{**{f: getattr(info, f) for f in info.__dataclass_fields__}, "name": spec})
    return fn, info


def resolve_method(name: str) -> tuple[MethodFn, MethodInfo]:
    """Find a method by registry name, entry point, or ``package.module:callable``."""
    if ":" in name and name not in METHODS:
        return _load_plugin(name)
    if name not in METHODS:
        _load_entry_points()
    fn = METHODS.get(name)
    return fn, METHODS.meta(name)  # type: ignore[return-value]


def list_methods() -> list[str]:
    """Names of all registered methods (built-ins and entry-point plug-ins)."""
    _load_entry_points()
    return METHODS.names()


def get_info(name: str) -> MethodInfo:
    return resolve_method(name)[1]


#: Parameters of the call rather than of the method (how to batch, which noise), passed through.
CALL_PARAMS = ("micro_batch", "seed")


def resolve_params(info: MethodInfo, params: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overridden by ``params``: a built-in's through its parameter dataclass
    (:func:`bam.config.from_dict`: unknown names, types and ranges are one-line errors); a
    plug-in's over the defaults of its signature (it accepts anything)."""
    call = {k: v for k, v in params.items() if k in CALL_PARAMS}
    own = {k: v for k, v in params.items() if k not in CALL_PARAMS}
    unknown = set(own) - set(info.defaults)
    if unknown and info.family != "plugin":
        raise BamError(f"unknown parameter(s) {', '.join(sorted(unknown))} for method {info.name!r}; "
                       f"accepted: {', '.join(sorted(info.defaults)) or '(none)'}, {', '.join(CALL_PARAMS)}")
    if info.params is None:
        return {**info.defaults, **params}
    try:
        typed: Any = from_dict(info.params, own)
    except BamError as exc:
        raise BamError(f"method {info.name!r}: {exc}") from None
    return {**params_of(typed), **call}


def check_model(info: MethodInfo, model: torch.nn.Module | None) -> None:
    """Raise a clear error when ``model`` lacks a capability the method needs."""
    from bam.models.protocols import is_invertible

    if info.uses_model and model is None:
        raise BamError(f"method {info.name!r} needs a model")
    for cap in info.requires:
        if cap == "conv_layer" and getattr(model, "gradcam_layer", None) is None:
            raise BamError(f"method {info.name!r} needs a model with a convolutional stage "
                           f"(model.gradcam_layer); {type(model).__name__} has none")
        if cap == "invertible" and not is_invertible(model):
            raise BamError(f"method {info.name!r} needs an invertible model (e.g. arch irevnet: features/inverse/"
                           f"affine_head); {type(model).__name__} is not invertible")


def attribute_full(name: str, model: torch.nn.Module | None, inputs: Tensor, target: Tensor | int,
                   **params: Any) -> AttributionResult:
    """Run method ``name`` on a batch; returns attributions and per-image records.

    ``inputs``: [N, C, H, W] pixels in [0, 1] on the model's device; ``target``: class per image
    (or one int for all). Runs in ``model.eval()`` and restores the previous mode.
    """
    fn, info = resolve_method(name)
    check_model(info, model)
    if not isinstance(inputs, Tensor) or inputs.dim() != 4:
        raise BamError(f"inputs must be a [N, C, H, W] tensor, got {getattr(inputs, 'shape', type(inputs))}")
    if isinstance(target, int):
        target = torch.full((inputs.shape[0],), target, dtype=torch.long, device=inputs.device)
    target = torch.as_tensor(target, device=inputs.device).long().view(-1)
    if target.shape[0] != inputs.shape[0]:
        raise BamError(f"target has {target.shape[0]} entries for {inputs.shape[0]} inputs")
    resolved = resolve_params(info, params)
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    try:
        out = fn(model, inputs, target, **resolved)
    finally:
        if model is not None and was_training:
            model.train()
    result = out if isinstance(out, AttributionResult) else AttributionResult(out)
    attr = result.attributions
    if not isinstance(attr, Tensor) or tuple(attr.shape) != tuple(inputs.shape):
        raise BamError(f"method {name!r} returned shape {tuple(getattr(attr, 'shape', ()))}, "
                       f"expected the input shape {tuple(inputs.shape)}")
    result.attributions = attr.detach()
    finite = torch.isfinite(result.attributions.flatten(1)).all(1)
    result.extras.setdefault("nonfinite", (~finite).to(torch.float32))
    valid = result.valid if result.valid is not None else torch.ones_like(finite)
    result.valid = valid.to(attr.device) & finite
    return result


def attribute(name: str, model: torch.nn.Module | None, inputs: Tensor, target: Tensor | int,
              **params: Any) -> Tensor:
    """Attributions shaped like ``inputs``; rows where the method failed are NaN."""
    res = attribute_full(name, model, inputs, target, **params)
    attr = res.attributions.clone()
    assert res.valid is not None  # set by attribute_full
    attr[~res.valid] = float("nan")
    return attr

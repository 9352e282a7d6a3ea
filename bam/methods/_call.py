"""The uniform call: resolve a method (built-in or plug-in), merge defaults, check, run."""

from __future__ import annotations

from collections.abc import Mapping
from importlib import metadata
from typing import Any

import torch
from torch import Tensor

from bam.errors import BamError
from bam.methods._base import METHODS, AttributionResult, MethodFn, MethodInfo
from bam.methods._plugin import load_plugin, plugin_info

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
        METHODS.add(ep.name, fn, plugin_info(ep.name, fn))


def resolve_method(name: str) -> tuple[MethodFn, MethodInfo]:
    """Find a method by registry name, entry point, or ``package.module:callable``."""
    if ":" in name and name not in METHODS:
        return load_plugin(name)
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


def resolve_params(info: MethodInfo, params: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults overridden by ``params``, validated by ``info.check``; unknown names raise (a plug-in
    accepts the keyword parameters of its signature, anything with ``**kwargs``)."""
    if info.accepts is not None:
        unknown = set(params) - set(info.accepts)
        accepted = ", ".join(sorted(info.accepts)) or "(none)"
        if unknown:
            raise BamError(f"unknown parameter(s) {', '.join(sorted(unknown))} for plug-in method {info.name!r}; "
                           f"accepted (from its signature): {accepted}")
    elif info.family != "plugin":
        unknown = set(params) - set(info.defaults) - {"micro_batch", "seed"}
        if unknown:
            raise BamError(f"unknown parameter(s) {', '.join(sorted(unknown))} for method {info.name!r}; "
                           f"accepted: {', '.join(sorted(info.defaults)) or '(none)'}, micro_batch, seed")
    resolved = {**info.defaults, **params}
    info.check({k: v for k, v in resolved.items() if k not in ("micro_batch", "seed")})
    return resolved


def takes(info: MethodInfo, param: str) -> bool:
    """Whether the method takes keyword parameter ``param`` (``micro_batch``, ``seed``): every built-in does."""
    return info.accepts is None or param in info.accepts


def _describe(value: Any) -> str:
    """What a method returned, in a few words."""
    if isinstance(value, Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)} on {value.device}"
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"a {type(value).__module__}.{type(value).__name__} of shape {tuple(shape)}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} item(s)"
    return "None" if value is None else f"a {type(value).__name__}"


def check_result(name: str, out: Any, inputs: Tensor) -> AttributionResult:
    """The method's return value as an AttributionResult, or one BamError naming the method, what it
    returned and what is accepted (a floating tensor of the input's shape on its device)."""
    attr = out.attributions if isinstance(out, AttributionResult) else out
    ok = (isinstance(attr, Tensor) and attr.is_floating_point() and tuple(attr.shape) == tuple(inputs.shape)
          and attr.device == inputs.device)
    if not ok:
        raise BamError(f"method {name!r} returned {_describe(attr)}; accepted: a floating tensor of the input's shape "
                       f"{tuple(inputs.shape)} on {inputs.device} (or an AttributionResult holding one)")
    n = inputs.shape[0]
    result = out if isinstance(out, AttributionResult) else AttributionResult(attr)
    parts = {"valid": result.valid, **{f"extras[{k!r}]": v for k, v in result.extras.items()}}
    for what, t in parts.items():
        if not isinstance(t, Tensor) or t.dim() != 1 or t.shape[0] != n or t.device != inputs.device or t.is_complex():
            raise BamError(f"method {name!r} returned {what} as {_describe(t)}; accepted: a real tensor of "
                           f"shape ({n},) on {inputs.device}")
    return result


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
    bound = info.prepare(model) if info.prepare is not None and model is not None else fn
    return call_method(name, bound, model, inputs, target, resolved)


def call_method(name: str, fn: MethodFn, model: torch.nn.Module | None, inputs: Tensor, target: Tensor,
                params: Mapping[str, Any]) -> AttributionResult:
    """Call method ``fn`` (the registered function, or the one its ``prepare`` bound to ``model``) with resolved
    ``params`` in ``model.eval()`` (the previous mode restored); its return value checked (:func:`check_result`),
    non-finite rows marked invalid."""
    was_training = model.training if model is not None else False
    if model is not None:
        model.eval()
    try:
        out = fn(model, inputs, target, **params)
    finally:
        if model is not None and was_training:
            model.train()
    result = check_result(name, out, inputs)
    attr = result.attributions = result.attributions.detach()
    finite = torch.isfinite(attr.flatten(1)).all(1)
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

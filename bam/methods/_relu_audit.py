"""Audit how a model applies ReLU: module calls per ``nn.ReLU`` and functional calls.

Hook-based methods (guided backprop, DeepLIFT) only see ReLUs applied through ``nn.ReLU``
modules: a functional ``F.relu`` would silently get a plain gradient. DeepLIFT also requires one
module per call site (SPEC §5; a reused module is how torchvision ResNets defeat captum's
``DeepLift``, which stores one reference activation per module). This module runs one forward on
one input row (once per model and module tree: the result is cached) and counts both kinds of
call, so methods can refuse such models with a clear error instead of returning wrong numbers.
A :class:`ReluAuditor` remembers its last audit (the state a method prepared for one model keeps one,
so the forward runs once per model and input shape, not per call); nothing module-level remembers models.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.overrides import TorchFunctionMode

from bam.errors import BamError

_RELU_FUNCS = {F.relu, F.relu_, torch.relu, torch.relu_, Tensor.relu, Tensor.relu_}


class _CountRelu(TorchFunctionMode):
    """Counts functional ReLU calls (``nn.ReLU.forward`` itself calls ``F.relu`` once)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        """Count ``func`` when it is a ReLU, then run it unchanged."""
        if func in _RELU_FUNCS:
            self.count += 1
        return func(*args, **(kwargs or {}))


@dataclass(frozen=True)
class ReluAudit:
    """ReLU usage of one forward pass: calls per ``nn.ReLU`` module and functional calls outside them."""

    module_calls: dict[str, int] = field(default_factory=dict)
    functional_calls: int = 0

    @property
    def reused(self) -> list[str]:
        """Names of ``nn.ReLU`` modules called more than once per forward."""
        return sorted(name for name, n in self.module_calls.items() if n > 1)


def module_tree_key(model: torch.nn.Module) -> tuple[object, ...]:
    """Identity of the module tree: each module's id, type and train/eval mode (for per-model caches)."""
    return tuple((id(m), type(m), m.training) for m in model.modules())


class ReluAuditor:
    """Audits models, keeping the last audit: reused while the model, its module tree and the input shape
    stay the same (the audit is a property of the model's code and modules)."""

    def __init__(self) -> None:
        self._last: tuple[tuple[object, ...], ReluAudit] | None = None

    def audit(self, model: torch.nn.Module, inputs: Tensor) -> ReluAudit:
        """Count the ReLU calls of one forward of ``model`` (or return the last audit, if still valid)."""
        key = (id(model), module_tree_key(model), tuple(inputs.shape[1:]), inputs.dtype, inputs.device)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        audit = _run_audit(model, inputs)
        self._last = (key, audit)
        return audit

    def require(self, model: torch.nn.Module, inputs: Tensor, method: str, once: bool) -> None:
        """:func:`require_relu_modules` with this auditor's audit."""
        _require(self.audit(model, inputs), type(model).__name__, method, once)


def audit_relus(model: torch.nn.Module, inputs: Tensor) -> ReluAudit:
    """Count the ReLU calls of one forward of ``model``."""
    return _run_audit(model, inputs)


def _run_audit(model: torch.nn.Module, inputs: Tensor) -> ReluAudit:
    """Run ``model`` once on the first row of ``inputs`` and count ReLU calls (no gradients)."""
    counts: dict[str, int] = {}
    names = {id(m): name or "<root>" for name, m in model.named_modules() if isinstance(m, torch.nn.ReLU)}
    handles = []

    def hook(module: torch.nn.Module, args: object, output: object) -> None:
        key = names[id(module)]
        counts[key] = counts.get(key, 0) + 1

    for m in model.modules():
        if isinstance(m, torch.nn.ReLU):
            handles.append(m.register_forward_hook(hook))
    mode = _CountRelu()
    try:
        with torch.no_grad(), mode:
            model(inputs[:1])
    finally:
        for h in handles:
            h.remove()
    module_total = sum(counts.values())
    return ReluAudit(module_calls=counts, functional_calls=max(0, mode.count - module_total))


def require_relu_modules(model: torch.nn.Module, inputs: Tensor, method: str, once: bool) -> None:
    """Raise a BamError unless every ReLU of ``model`` is an ``nn.ReLU`` module (used once if ``once``)."""
    _require(audit_relus(model, inputs), type(model).__name__, method, once)


def _require(audit: ReluAudit, name: str, method: str, once: bool) -> None:
    """The BamError of :func:`require_relu_modules` for ``audit`` of a model of class ``name``."""
    if audit.functional_calls:
        raise BamError(f"method {method!r} cannot run on {name}: it applies {audit.functional_calls} functional "
                       f"ReLU(s) (F.relu/torch.relu); accepted: models whose ReLUs are nn.ReLU modules")
    if once and audit.reused:
        shown = ", ".join(audit.reused[:5]) + (" ..." if len(audit.reused) > 5 else "")
        raise BamError(f"method {method!r} cannot run on {name}: nn.ReLU module(s) {shown} are called more than "
                       f"once per forward; accepted: one nn.ReLU module per call site (DeepLIFT-safe models)")

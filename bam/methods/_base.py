"""Method metadata, the result type, and the method registry.

Every method is a function ``fn(model, inputs, target, **params) -> Tensor | AttributionResult``
registered with :func:`register_method` and a frozen :class:`MethodInfo`. The CLI, reports and
tests read the metadata; nothing lists methods by hand.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from bam.registry import Registry

#: Model capabilities a method may require (checked before it runs).
#: "conv_layer": the model exposes ``model.gradcam_layer`` (last convolutional stage);
#: "invertible": the model implements :class:`bam.models.protocols.InvertibleClassifier`.
CAPABILITIES = ("conv_layer", "invertible")


def _one_pass(params: Mapping[str, Any]) -> int:
    """One forward+backward per image."""
    return 1


def _no_check(params: Mapping[str, Any]) -> None:
    """Accept any parameters (the method validates them itself, if at all)."""


@dataclass(frozen=True)
class MethodInfo:
    """Metadata of one attribution method (read by the CLI, reports and tests)."""

    name: str
    title: str
    paper: str
    family: str  # gradient | path | cam | guided | boundary | invertible | inversion | control | plugin
    defaults: Mapping[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    stochastic: bool = False
    #: forward+backward passes per image for given (resolved) params
    passes: Callable[[Mapping[str, Any]], int] = _one_pass
    #: True when the method expands the batch (steps, samples, restarts) and micro-batches it
    expands_batch: bool = False
    #: False for controls that never call the model
    uses_model: bool = True
    #: validates resolved params (one-line BamError), called before any work is done
    check: Callable[[Mapping[str, Any]], None] = _no_check
    description: str = ""
    #: the version of the method's computation: a change of a built-in's outputs must bump it (it keys
    #: the record cache and is the ``method_version`` column of results.csv and records.csv)
    version: int = 1
    #: plug-ins: sha256 of the callable's code and its module's source (keys the record cache); "" for built-ins
    code_sha256: str = ""
    #: plug-ins: the keyword parameters the callable takes (from its signature); None: any (``**kwargs``,
    #: and built-ins, whose ``defaults`` list them)
    accepts: frozenset[str] | None = None
    #: True when the method never writes into its ``inputs``/``target`` tensors (every built-in); other
    #: methods get a private copy of the batch from the evaluation
    reads_inputs_only: bool = True
    #: per-model state (like captum's ``Attribution(forward_func)``): ``prepare(model)`` returns the method bound
    #: to that model, called like the function (``fn(model, inputs, target, **params)``) and free to keep what it
    #: computed for the model (DeepLIFT's reference activations, the ReLU audit). Whoever calls it owns it: the
    #: evaluation prepares once per unit of work (the model unchanged throughout), a plain call once per call.
    #: None: the function itself is called.
    prepare: Callable[[torch.nn.Module], MethodFn] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", types.MappingProxyType(dict(self.defaults)))
        if isinstance(self.version, bool) or not isinstance(self.version, int) or self.version < 1:
            raise ValueError(f"method {self.name}: version={self.version!r}; accepted: an integer >= 1")
        bad = set(self.requires) - set(CAPABILITIES)
        if bad:
            raise ValueError(f"method {self.name}: unknown capability {sorted(bad)}; accepted: {CAPABILITIES}")


@dataclass
class AttributionResult:
    """Attributions plus per-image records.

    ``valid[i]`` is False where the method failed on image ``i`` (e.g. no adversarial point was
    found): such rows must never be scored as if they had succeeded. ``extras`` maps a record name
    (e.g. ``boundary_distance``) to a tensor of shape ``[N]``.
    """

    attributions: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)
    valid: Tensor | None = None

    def __post_init__(self) -> None:
        if self.valid is None:
            self.valid = torch.ones(self.attributions.shape[0], dtype=torch.bool, device=self.attributions.device)


#: A method: ``fn(model, inputs, target, **params) -> Tensor | AttributionResult`` (its keyword
#: parameters are its own: MethodInfo.defaults lists them).
MethodFn = Callable[..., "Tensor | AttributionResult"]


METHODS: Registry[MethodFn] = Registry(
    "method", hint="or a plug-in as package.module:callable, or an entry point in group 'bam.methods'"
)


def register_method(info: MethodInfo) -> Callable[[MethodFn], MethodFn]:
    """Decorator: register ``fn`` under ``info.name``; duplicate names raise."""

    def deco(fn: MethodFn) -> MethodFn:
        METHODS.add(info.name, fn, info)
        fn.bam_info = info  # type: ignore[attr-defined]
        return fn

    return deco

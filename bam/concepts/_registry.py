"""The concept-method registry: methods that score a concept per (model, class), not per pixel.

They do not fit :func:`bam.methods.attribute` (no map per image), so they have their own small
interface: ``fn(models, data, config, cache_dir, *, device, progress) -> result`` with
``models`` = {role: (model, weights sha256)}.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from bam.registry import Registry


@dataclass(frozen=True)
class ConceptMethodInfo:
    """Metadata of one concept method (read by the CLI, the evaluation planner and reports)."""

    name: str
    title: str
    paper: str
    #: the configuration dataclass and its defaults (the original protocol)
    config_type: type
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: model roles it scores, symbolic ("commonality-k" stands for every k)
    roles: tuple[str, ...] = ()
    #: dataset subsets it reads
    subsets: tuple[str, ...] = ()
    #: model capabilities: "bottlenecks" (named residual stages, ``model.bottlenecks``)
    requires: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", types.MappingProxyType(dict(self.defaults)))


class ConceptMethodFn(Protocol):
    def __call__(self, models: Mapping[str, tuple[nn.Module, str]], data: Any, config: Any,
                 cache_dir: str | Path | None, *, device: str | torch.device | None = ...,
                 progress: bool = ...) -> Any: ...


CONCEPT_METHODS: Registry[ConceptMethodFn] = Registry("concept method")


def register_concept_method(info: ConceptMethodInfo) -> Callable[[ConceptMethodFn], ConceptMethodFn]:
    """Decorator: register ``fn`` under ``info.name``."""

    def deco(fn: ConceptMethodFn) -> ConceptMethodFn:
        """Add ``fn`` to :data:`CONCEPT_METHODS` with its metadata."""
        CONCEPT_METHODS.add(info.name, fn, info)
        return fn

    return deco


def get_concept_method(name: str) -> ConceptMethodFn:
    """The registered function (BamError listing the names otherwise)."""
    return CONCEPT_METHODS.get(name)


def concept_method_info(name: str) -> ConceptMethodInfo:
    """The :class:`ConceptMethodInfo` of a registered concept method."""
    return CONCEPT_METHODS.meta(name)  # type: ignore[return-value]


def list_concept_methods() -> list[str]:
    """Names of the registered concept methods."""
    return CONCEPT_METHODS.names()

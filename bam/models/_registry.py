"""The model (architecture) registry: ``register_model`` / ``create_model`` / ``list_models``.

An arch is a factory called with keyword arguments only::

    factory(num_classes=K, image_size=H, [input_size=S,] [pretrained=True,] **arch_kwargs) -> nn.Module

``input_size`` is passed only when it is not ``None`` and ``pretrained`` only when it is true, so a
factory that supports neither need not accept them. The returned module must follow
:mod:`bam.models.protocols`: ``forward(x)`` takes RGB pixels in [0, 1] of shape [N, 3, H, W] and does
any resize and normalisation itself, and it exposes ``gradcam_layer`` (the last convolutional stage).
It may expose ``normalization`` (a dict with ``mean``/``std`` in pixel units) and ``input_size``;
checkpoints record them in the model card.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from bam.errors import BamError
from bam.registry import Registry

ModelFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class ArchInfo:
    """Metadata of a registered architecture (shown by ``bam models``)."""

    name: str
    description: str = ""
    #: True when the factory accepts ``pretrained=True`` (ImageNet weights from the local cache).
    supports_pretrained: bool = False


MODELS: Registry[ModelFactory] = Registry("arch")


def register_model(name: str, *, description: str = "",
                   supports_pretrained: bool = False) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register a model factory (function or class) under ``name``; duplicates raise."""

    def deco(factory: ModelFactory) -> ModelFactory:
        """Add ``factory`` to the registry."""
        doc = (factory.__doc__ or "").strip().splitlines()
        info = ArchInfo(name=name, description=description or (doc[0] if doc else ""),
                        supports_pretrained=supports_pretrained)
        MODELS.add(name, factory, info)
        return factory

    return deco


def list_models() -> list[str]:
    """Names of all registered architectures, sorted."""
    return MODELS.names()


def arch_info(name: str) -> ArchInfo:
    """Metadata of a registered architecture (BamError listing valid names if unknown)."""
    info = MODELS.meta(name)
    assert isinstance(info, ArchInfo)
    return info


def create_model(arch: str, num_classes: int, image_size: int, input_size: int | None = None, *,
                 pretrained: bool = False, **arch_kwargs: Any) -> nn.Module:
    """Build an untrained (or ImageNet-initialised) classifier of a registered ``arch``.

    Unknown arch names raise a one-line BamError listing the registered ones; ``pretrained`` on an
    arch without ImageNet weights raises too. The model is returned in train mode on the CPU.
    """
    factory = MODELS.get(arch)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise BamError(f"num_classes {num_classes!r} is invalid; accepted: an integer >= 2")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
        raise BamError(f"image_size {image_size!r} is invalid; accepted: an integer >= 8")
    if input_size is not None and (isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < 8):
        raise BamError(f"input_size {input_size!r} is invalid; accepted: an integer >= 8 or none")
    kwargs: dict[str, Any] = dict(arch_kwargs)
    if input_size is not None:
        kwargs["input_size"] = input_size
    if pretrained:
        if not arch_info(arch).supports_pretrained:
            ok = [n for n in list_models() if arch_info(n).supports_pretrained]
            raise BamError(f"arch {arch!r} has no pretrained weights; accepted with --pretrained: {', '.join(ok)}")
        kwargs["pretrained"] = True
    try:
        model = factory(num_classes=num_classes, image_size=image_size, **kwargs)
    except TypeError as exc:
        raise BamError(f"bad arguments for arch {arch!r}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise TypeError(f"arch {arch!r} factory returned {type(model).__name__}, not an nn.Module")
    return model

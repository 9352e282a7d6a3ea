"""A checkpoint's architecture checked against its weights file before anything is allocated.

A safetensors file starts with an 8-byte little-endian header length and a JSON header that maps
every tensor name to its dtype, shape and byte offsets, so the shapes are known without reading a
single weight. The card's architecture is built on the ``meta`` device (parameters with shapes and
no storage, so ``widths: [4000, 4000, 4000]`` costs nothing) and its state dict is compared with
the header: a missing, extra or differently shaped tensor is refused in one line naming the first
one, before the real model (whose size the card alone would decide) is built.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from bam.errors import BamError

#: The largest safetensors header read (the JSON header of a ResNet-50 is ~30 KB).
MAX_HEADER_BYTES = 16 << 20


def header_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """tensor name -> shape from the JSON header of the safetensors file ``path`` (nothing else read)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < n <= min(MAX_HEADER_BYTES, size - 8):
                raise BamError(f"weights {path} are not a safetensors file (header length {n} of a {size}-byte file)")
            doc = json.loads(fh.read(n))
    except OSError as exc:
        raise BamError(f"cannot read weights {path}: {exc.strerror or type(exc).__name__}") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BamError(f"weights {path} are not a safetensors file (malformed header)") from None
    if not isinstance(doc, dict):
        raise BamError(f"weights {path} are not a safetensors file (header is not a JSON object)")
    out: dict[str, tuple[int, ...]] = {}
    for name, entry in doc.items():
        if name == "__metadata__":
            continue
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise BamError(f"weights {path}: tensor {name!r} has a malformed shape {shape!r} in the header")
        out[name] = tuple(shape)
    return out


def meta_shapes(build: Callable[[], nn.Module]) -> dict[str, tuple[int, ...]]:
    """state-dict name -> shape of the model ``build()`` makes, built on the meta device (no storage)."""
    with torch.device("meta"):
        model = build()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def first_mismatch(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, tuple[int, ...]]) -> str:
    """The first difference between the shapes an architecture needs and those a file holds ("" if none)."""
    for name, shape in expected.items():
        if name not in found:
            return f"tensor {name!r} (shape {list(shape)}) is missing from the weights"
        if tuple(found[name]) != tuple(shape):
            return f"tensor {name!r} is {list(found[name])} in the weights, the card's architecture needs {list(shape)}"
    extra = [n for n in found if n not in expected]
    return f"tensor {extra[0]!r} in the weights is not part of the card's architecture" if extra else ""


def check_card_fits(path: str | os.PathLike[str], build: Callable[[], nn.Module], arch: str) -> None:
    """BamError (one line) unless the weights file ``path`` holds exactly the tensors, with the same
    shapes, that the model ``build()`` has; ``build`` runs on the meta device only."""
    found = header_shapes(path)
    try:
        expected = meta_shapes(build)
    except (TypeError, ValueError, RuntimeError, NotImplementedError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BamError(f"the card of {path} describes no buildable {arch!r} model: {first}") from None
    problem = first_mismatch(expected, found)
    if problem:
        raise BamError(f"weights {path} do not fit the card's architecture {arch!r}: {problem} (card or weights "
                       "edited, or from different runs)")

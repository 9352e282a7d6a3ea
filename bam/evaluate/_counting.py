"""Count model evaluations at the model boundary, so the cost columns never trust declared numbers.

While :func:`count_passes` is active, every row entering the model's ``forward`` (a forward
pre-hook, so a forward stopped early by a hook counts too), its ``features`` or its ``inverse``
(invertible models, :mod:`bam.models.protocols`) is counted as one forward row, and every row of
a gradient flowing back into the model's output as one backward row. A plug-in that runs 50
forwards per image (captum's Occlusion) reports 50, whatever its metadata says.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class PassCount:
    """Rows pushed through the model: forward (``forward``/``features``/``inverse``) and backward."""

    forward_rows: int = 0
    backward_rows: int = 0
    #: calls in progress (a forward that calls ``features`` counts its rows once)
    depth: int = 0

    def enter(self, rows: int) -> None:
        """A model call starts: count its rows unless it runs inside another counted call."""
        if self.depth == 0:
            self.forward_rows += rows
        self.depth += 1

    def leave(self) -> None:
        """A model call ended (normally or by an exception)."""
        self.depth -= 1


def _rows(x: Any) -> int:
    """Batch size of the first tensor argument (0 when there is none)."""
    if isinstance(x, Tensor):
        return int(x.shape[0]) if x.dim() else 1
    if isinstance(x, (tuple, list)) and x:
        return _rows(x[0])
    return 0


@contextlib.contextmanager
def count_passes(model: torch.nn.Module | None) -> Iterator[PassCount]:
    """Count forward and backward rows of ``model`` inside the block (nothing when ``model`` is None)."""
    count = PassCount()
    if model is None:
        yield count
        return

    def pre(module: torch.nn.Module, args: Any) -> None:
        count.enter(_rows(args))

    def post(module: torch.nn.Module, args: Any, output: Any) -> None:
        count.leave()
        if count.depth == 0 and isinstance(output, Tensor) and output.requires_grad:
            n = _rows(output)

            def on_grad(grad: Tensor) -> None:
                count.backward_rows += n

            output.register_hook(on_grad)

    handles = [model.register_forward_pre_hook(pre), model.register_forward_hook(post, always_call=True)]
    patched: list[str] = []
    for name in ("features", "inverse"):
        fn = getattr(model, name, None)
        if callable(fn) and name not in vars(model):
            setattr(model, name, _counting(fn, count))
            patched.append(name)
    try:
        yield count
    finally:
        for h in handles:
            h.remove()
        for name in patched:
            delattr(model, name)


def _counting(fn: Callable[..., Any], count: PassCount) -> Callable[..., Any]:
    """``fn`` that adds the rows of its first argument to ``count.forward_rows``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        count.enter(_rows(args))
        try:
            return fn(*args, **kwargs)
        finally:
            count.leave()

    return wrapper

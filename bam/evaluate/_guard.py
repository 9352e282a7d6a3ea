"""Isolation of methods (SPEC §4.2): a method call leaves the model, the batch and grad mode as it found them.

A :class:`ModelGuard` takes one snapshot of a model per unit: its module tree (submodules,
parameter and buffer objects, hooks, replaced ``forward``), every module's train/eval flag, a copy
of every parameter and buffer with its version counter, and a fingerprint of their values
(position-weighted sums: it sees ``.data`` edits, which version counters miss). :func:`call_guarded`
runs one method call under it: a method that is not declared read-only gets a private copy of
the batch; afterwards anything changed is named in one line (:class:`StateChanged`), the model is
restored from the snapshot and the restore verified, so the next method sees the model as loaded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor, nn

from bam.errors import BamError

R = TypeVar("R")

_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
          "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called")


class StateChanged(BamError):
    """A method changed the model, its batch or the grad mode (the model has been restored)."""

    def __init__(self, message: str, inputs_changed: bool) -> None:
        super().__init__(message)
        #: True when the shared batch itself was written (the caller reloads it)
        self.inputs_changed = inputs_changed


_RAMPS: dict[tuple[torch.device, torch.dtype], Tensor] = {}


def _ramp(n: int, like: Tensor) -> Tensor:
    """Weights 1..7919 cycling over positions (per device and dtype, grown as needed)."""
    key = (like.device, like.dtype)
    ramp = _RAMPS.get(key)
    if ramp is None or ramp.numel() < n:
        ramp = torch.arange(1, max(n, 1 << 16) + 1, device=like.device).remainder_(7919).add_(1).to(like.dtype)
        _RAMPS[key] = ramp
    return ramp[:n]


def fingerprint(tensors: Sequence[Tensor]) -> tuple[float, ...]:
    """Position-weighted sum per tensor: changes with any edit of the values (``.data`` edits and permutations
    included); one pass over the tensors."""
    sums = [torch.dot(flat, _ramp(flat.numel(), flat)) if flat.is_floating_point() and not flat.is_complex()
            else flat.double().sum() for flat in (t.detach().reshape(-1) for t in tensors)]
    return tuple(torch.stack([v.double().cpu() for v in sums]).tolist()) if sums else ()


@dataclass(frozen=True)
class _Slot:
    """One parameter or buffer: the object, a copy of its values, its grad flag."""

    table: str  # "_parameters" | "_buffers"
    tensor: Tensor
    copy: Tensor
    requires_grad: bool


def _structure(modules: Sequence[tuple[str, nn.Module]]) -> list[tuple[object, ...]]:
    """Per module: children, parameter/buffer objects, hook counts, replaced forward, train flag."""
    return [(name, id(m), tuple((k, id(c)) for k, c in m._modules.items()),
             tuple((k, id(t)) for k, t in m._parameters.items()), tuple((k, id(t)) for k, t in m._buffers.items()),
             tuple(len(getattr(m, h, {})) for h in _HOOKS), "forward" in vars(m), m.training) for name, m in modules]


class ModelGuard:
    """One snapshot of ``model`` (see the module docstring); ``seconds`` accumulates the checks' cost."""

    def __init__(self, model: nn.Module, covered: ModelGuard | None = None) -> None:
        """Snapshot ``model``; modules that the ``covered`` guard watches already are left to it."""
        self.model = model
        self.seconds = 0.0
        self.checks = 0
        t0 = time.perf_counter()
        skip = {id(m) for _n, m in covered._modules} if covered is not None else set()
        self._modules: list[tuple[str, nn.Module]] = [(n, m) for n, m in model.named_modules(remove_duplicate=True)
                                                      if id(m) not in skip]
        self._children = [(m, dict(m._modules), {h: dict(getattr(m, h)) for h in _HOOKS if hasattr(m, h)},
                           m.training, vars(m).get("forward")) for _n, m in self._modules]
        self._tables = [(m, table, dict(getattr(m, table))) for _n, m in self._modules
                        for table in ("_parameters", "_buffers")]
        self._slots: list[_Slot] = []
        self._names: dict[int, str] = {}
        for prefix, m in self._modules:
            for table in ("_parameters", "_buffers"):
                for k, t in getattr(m, table).items():
                    if t is not None and id(t) not in self._names:
                        self._slots.append(_Slot(table, t, t.detach().clone(), t.requires_grad))
                        self._names[id(t)] = f"{prefix}.{k}".lstrip(".")
        self._remember()
        self.seconds += time.perf_counter() - t0

    def _remember(self) -> None:
        """Reference structure, versions and fingerprint (after the snapshot or a restore)."""
        self._structure = _structure(self._modules)
        self._versions = [s.tensor._version for s in self._slots]
        self._fingerprint = fingerprint([s.tensor for s in self._slots])

    def changes(self) -> list[str]:
        """What differs from the snapshot, in words (empty: nothing)."""
        now = _structure(self._modules)
        out: list[str] = []
        modes = [str(a[0]) or "<root>" for a, b in zip(self._structure, now) if a[-1] != b[-1]]
        if modes:
            out.append(f"switched {_few(modes)} between train and eval mode")
        if [s[:-1] for s in now] != [s[:-1] for s in self._structure]:
            out.append("changed the model's modules, parameter objects, hooks or forward")
            return out
        prints = fingerprint([s.tensor for s in self._slots])
        moved = [self._names[id(s.tensor)] for s, v, a, b in zip(self._slots, self._versions, prints,
                                                                  self._fingerprint)
                 if s.tensor._version != v or a != b]
        kinds = {s.table for s in self._slots if self._names[id(s.tensor)] in set(moved)}
        if moved:
            what = " and ".join(sorted("parameters" if k == "_parameters" else "buffers" for k in kinds))
            out.append(f"changed the model's {what} ({_few(moved)})")
        grads = [self._names[id(s.tensor)] for s in self._slots if s.tensor.requires_grad != s.requires_grad]
        if grads:
            out.append(f"changed requires_grad of {_few(grads)}")
        return out

    def restore(self) -> None:
        """Put the snapshot back (module tree, hooks, modes, values, grad flags) and verify it."""
        for m, children, hooks, training, forward in self._children:
            m._modules.clear()
            m._modules.update(children)
            for h, d in hooks.items():
                getattr(m, h).clear()
                getattr(m, h).update(d)
            m.training = training
            if forward is None:
                vars(m).pop("forward", None)
            else:
                vars(m)["forward"] = forward
        for m, table, entries in self._tables:
            getattr(m, table).clear()
            getattr(m, table).update(entries)
        with torch.no_grad():
            for s in self._slots:
                s.tensor.copy_(s.copy)
                s.tensor.requires_grad_(s.requires_grad)
        self._remember()


def _few(names: Sequence[str], n: int = 3) -> str:
    """The first ``n`` names, and how many more."""
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


@dataclass(frozen=True)
class _Call:
    """One guarded call: the shared batch, what the method got, the batch's version counters and the grad mode."""

    name: str
    inputs: Tensor
    target: Tensor
    given: tuple[Tensor, Tensor]
    versions: tuple[int, int]
    grad: bool


def call_guarded(guards: Sequence[ModelGuard], name: str, call: Callable[[Tensor, Tensor], R], inputs: Tensor,
                 target: Tensor, private: bool) -> R:
    """``call(inputs, target)`` (on private copies when ``private``); raises :class:`StateChanged` naming what the
    call changed (after restoring the models), or re-raises the call's own exception (also after restoring)."""
    t0 = time.perf_counter()
    given = (inputs.clone(), target.clone()) if private else (inputs, target)
    c = _Call(name, inputs, target, given, (inputs._version, target._version), torch.is_grad_enabled())
    spent = time.perf_counter() - t0
    try:
        out = call(*given)
    except BaseException:
        _after(guards, c)
        raise
    t1 = time.perf_counter()
    try:
        _after(guards, c)
    finally:
        if guards:
            guards[0].seconds += spent + time.perf_counter() - t1
            guards[0].checks += 1
    return out


def _after(guards: Sequence[ModelGuard], c: _Call) -> None:
    """Check and restore after a call; raise StateChanged when something had changed."""
    problems: list[str] = []
    for g in guards:
        found = g.changes()
        if found:
            g.restore()
            left = g.changes()
            if left:
                raise BamError(f"could not restore the model after method {c.name!r} changed it ({'; '.join(left)})")
            problems += found
    if torch.is_grad_enabled() != c.grad:
        torch.set_grad_enabled(c.grad)
        problems.append(f"left gradient recording {'off' if c.grad else 'on'}")
    shared = (c.inputs._version, c.target._version) != c.versions
    x, t = c.given
    if shared or (x is not c.inputs and not (torch.equal(x, c.inputs) and torch.equal(t, c.target))):
        problems.append("wrote into its inputs")
    if problems:
        raise StateChanged(f"method {c.name!r} {'; '.join(problems)} (a method must leave the model and its inputs as "
                           "it found them; the model was restored and its records discarded)", inputs_changed=shared)


def failure_line(exc: BaseException) -> str:
    """One line for a failed method call: exception type and first message line (SystemExit names its code)."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: the method called sys.exit({exc.code!r})"
    if isinstance(exc, StateChanged):
        return str(exc).splitlines()[0]
    return f"{type(exc).__name__}: {exc}".splitlines()[0]

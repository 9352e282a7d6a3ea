"""Plug-in methods: loading ``package.module:callable`` and entry points, their identity and parameters.

A plug-in's records are cached under a hash of what computes them (:func:`code_sha256`): the
callable's code object (with nested code, constants and names; not its file name or line numbers)
and the source of its module. Editing the plug-in, or a different module of the same name found
first on ``sys.path``, changes the hash, so a re-run into the same output folder recomputes.
Its keyword parameters come from its signature (:func:`accepted_params`): a config typo is
refused before any work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import types
from pathlib import Path
from typing import Any

from bam.errors import BamError
from bam.methods._base import MethodFn, MethodInfo

#: The positional parameters every method takes before its own keyword parameters.
_POSITIONAL = 3


def _code_parts(code: types.CodeType, out: list[bytes]) -> None:
    """The parts of ``code`` that decide what it computes (recursing into nested functions and classes)."""
    out += [code.co_code, repr(code.co_names).encode(), repr(code.co_varnames).encode(),
            repr((code.co_argcount, code.co_kwonlyargcount, code.co_flags)).encode()]
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _code_parts(c, out)
        else:
            out.append(repr(c).encode())


def _function_of(fn: Any) -> Any:
    """The Python function behind ``fn`` (unwrapped decorators, ``functools.partial``, callable objects)."""
    fn = inspect.unwrap(fn)
    while hasattr(fn, "func") and not hasattr(fn, "__code__"):  # functools.partial
        fn = fn.func
    if not hasattr(fn, "__code__") and callable(fn):
        call = vars(type(fn)).get("__call__")
        fn = getattr(call, "__func__", call)
    return fn


def _module_source(fn: Any) -> bytes:
    """The source file of the module that defines ``fn`` (empty when it has none, e.g. built in C)."""
    module = inspect.getmodule(fn)
    path = getattr(module, "__file__", None)
    if not path:
        return b""
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def code_sha256(fn: Any) -> str:
    """sha256 of ``fn``'s code object and its module's source (see the module docstring)."""
    parts: list[bytes] = []
    target = _function_of(fn)
    code = getattr(target, "__code__", None)
    if isinstance(code, types.CodeType):
        _code_parts(code, parts)
    else:
        parts.append(repr(target).encode())
    h = hashlib.sha256()
    for p in (*parts, b"\0module\0", _module_source(target)):
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def accepted_params(fn: Any) -> frozenset[str] | None:
    """Keyword parameters ``fn`` takes after (model, inputs, target); None when it takes ``**kwargs``."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    taken = {p.name for p in positional[:_POSITIONAL]}
    return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                     and p.name not in taken)


def plugin_info(name: str, fn: Any) -> MethodInfo:
    """Metadata of a plug-in: its ``bam_info`` (or one read from its signature and docstring), addressed
    by ``name``, with its code hash and accepted parameters; it gets a private copy of its inputs."""
    if not callable(fn):
        raise BamError(f"plug-in method {name!r} is not callable; accepted: a function "
                       "fn(model, inputs, target, **params)")
    info = getattr(fn, "bam_info", None)
    if not isinstance(info, MethodInfo):
        sig = inspect.signature(fn)
        defaults = {k: p.default for k, p in sig.parameters.items()
                    if p.kind is p.KEYWORD_ONLY and p.default is not inspect.Parameter.empty}
        doc = (inspect.getdoc(fn) or "").splitlines()
        info = MethodInfo(name=name, title=doc[0] if doc else name, paper="(user plug-in)", family="plugin",
                          defaults=defaults, description=" ".join(doc))
    return dataclasses.replace(info, name=name, code_sha256=code_sha256(fn), accepts=accepted_params(fn),
                               reads_inputs_only=False)


def load_plugin(spec: str) -> tuple[MethodFn, MethodInfo]:
    """Import ``package.module:callable`` (attribute paths with dots allowed); one-line errors."""
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
    return fn, plugin_info(spec, fn)

"""Frozen-dataclass configuration loaded from YAML, overridable by flags, saved beside results."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from bam.errors import BamError

T = TypeVar("T")

#: Repository root (holds ``datasets/`` and ``configs/``) for an editable/source install.
RESOURCE_ROOT = Path(__file__).resolve().parent.parent


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping; missing or malformed files raise a one-line BamError."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BamError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        line = str(exc).replace("\n", " ")
        raise BamError(f"malformed YAML in {path}: {line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BamError(f"malformed config {path}: expected a mapping at top level, got {type(data).__name__}")
    return data


def resolve_named(name_or_path: str | os.PathLike[str], folder: str, kind: str) -> Path:
    """Resolve a built-in name (``folder/<name>.yaml`` under the resource root) or a YAML path."""
    text = str(name_or_path)
    p = Path(text)
    if text.endswith((".yaml", ".yml")) or p.exists():
        if not p.is_file():
            raise BamError(f"{kind} file not found: {p}")
        return p
    base = RESOURCE_ROOT / folder
    cand = base / f"{text}.yaml"
    if cand.is_file():
        return cand
    known = sorted(q.stem for q in base.glob("*.yaml")) if base.is_dir() else []
    raise BamError(f"unknown {kind} {text!r}; accepted: {', '.join(known) or '(none found)'} or a path to a .yaml file")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise BamError(f"config {where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except BamError as exc:
                errors.append(str(exc))
        raise BamError(errors[0] if errors else f"config {where}: bad value {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise BamError(f"config {where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        return tuple(_coerce(a, v, where) for a, v in zip(args, value))
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise BamError(f"config {where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BamError(f"config {where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BamError(f"config {where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise BamError(f"config {where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise BamError(f"config {where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build a (nested) frozen dataclass from a mapping; unknown keys raise a BamError."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = set(data) - set(fields)
    if unknown:
        raise BamError(
            f"unknown config key(s) {', '.join(sorted(map(str, unknown)))} in {where or cls.__name__}; "
            f"accepted: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise BamError(f"config {where or cls.__name__}: {exc}") from None


def to_dict(cfg: Any) -> Any:
    """A plain (YAML/JSON-serialisable) form of a config dataclass."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Mapping):
        return {str(k): to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, Path):
        return str(cfg)
    return cfg


def load_config(cls: type[T], source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
                overrides: Mapping[str, Any] | None = None) -> T:
    """Load ``cls`` from a YAML path or mapping, then apply non-None ``overrides`` (flags).

    Override keys may be dotted (``optim.lr``) to reach nested dataclasses.
    """
    data: dict[str, Any] = {}
    if isinstance(source, Mapping):
        data = dict(source)
    elif source is not None:
        data = read_yaml(source)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return from_dict(cls, data, cls.__name__)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML (atomically) beside a result."""
    from bam._io import write_text

    write_text(path, dump_yaml(cfg))

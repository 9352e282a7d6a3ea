"""Frozen-dataclass configuration loaded from YAML, overridable by flags, saved beside results.

Built-in recipes and configs (``datasets/``, ``configs/`` at the top of the source tree, the source
of truth) ship in the wheel as package data of ``bam._resources`` and are read through
:mod:`importlib.resources`; a source checkout that is not installed reads the top-level folders.
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from bam.errors import BamError

T = TypeVar("T")

#: The source tree (holds ``datasets/``, ``configs/`` and pyproject.toml) when bam runs from a checkout.
_SOURCE_ROOT = Path(__file__).resolve().parent.parent

#: Seeds accepted everywhere (numpy's SeedSequence/RandomState and torch all take 0..2**32-1).
SEED_MAX = 2**32 - 1


def check_seed(seed: object, what: str = "--seed") -> int:
    """``seed`` as an int in 0..SEED_MAX, else a one-line BamError naming it."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= SEED_MAX:
        raise BamError(f"{what} {seed!r} is out of range; accepted: an integer in 0..{SEED_MAX}")
    return seed


def resource_dir(folder: str) -> Path | None:
    """The built-in folder ``folder`` (``datasets``, ``configs/train``, ...), or None if absent.

    The installed package's ``bam/_resources/<folder>`` comes first; a source checkout falls back
    to ``<repo>/<folder>`` (recognised by its pyproject.toml).
    """
    shipped = resources.files("bam._resources").joinpath(*folder.split("/"))
    if isinstance(shipped, Path) and shipped.is_dir():
        return shipped
    source = _SOURCE_ROOT / folder
    if (_SOURCE_ROOT / "pyproject.toml").is_file() and source.is_dir():
        return source
    return None


def resource_names(folder: str) -> list[str]:
    """Sorted names (file stems) of the built-in ``*.yaml`` files in ``folder``."""
    base = resource_dir(folder)
    return sorted(p.stem for p in base.glob("*.yaml") if p.is_file()) if base is not None else []


#: The most YAML nodes a config may expand to, aliases counted at every use (a config has hundreds):
#: an alias bomb (nested aliases of aliases, a few hundred bytes) would expand to billions.
MAX_YAML_NODES = 100_000


def _expanded_size(node: yaml.Node, sizes: dict[int, int], limit: int) -> int:
    """Nodes of ``node`` once every alias is expanded (memoised per node); stops past ``limit``."""
    key = id(node)
    if key in sizes:
        if sizes[key] < 0:
            raise BamError("config YAML has a recursive alias (an anchor used inside itself); accepted: "
                           "a finite tree")
        return sizes[key]
    sizes[key] = -1  # in progress: meeting it again is a cycle
    total = 1
    if isinstance(node, yaml.SequenceNode):
        children: list[yaml.Node] = list(node.value)
    elif isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    else:
        children = []
    for child in children:
        total += _expanded_size(child, sizes, limit)
        if total > limit:
            break
    sizes[key] = total
    return total


def load_yaml_text(text: str, where: str, limit: int = MAX_YAML_NODES) -> Any:
    """Parse YAML safely, refusing (one-line BamError) a document that expands to more than ``limit``
    nodes, before anything is constructed from it (an alias bomb never reaches a repr, a hash or a dump)."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {}, limit)
        if size > limit:
            raise BamError(f"config {where} expands to more than {limit} YAML nodes (aliases of aliases: a YAML "
                           f"bomb?); accepted: a config of at most {limit} nodes with every alias expanded")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, without ever building the whole of a huge value."""
    import reprlib

    r = reprlib.Repr()
    r.maxstring = r.maxother = limit
    r.maxlist = r.maxtuple = r.maxdict = r.maxset = 8
    r.maxlevel = 3
    text = r.repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a YAML mapping; missing, unreadable, malformed or explosive files raise a one-line BamError."""
    from bam._paths import require_file

    path = require_file(path, "config file", "a UTF-8 YAML file")
    try:
        data = load_yaml_text(path.read_text(encoding="utf-8"), str(path))
    except UnicodeDecodeError as exc:
        raise BamError(f"config file {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                       f"{exc.start}); accepted: a UTF-8 YAML file") from None
    except yaml.YAMLError as exc:
        line = " ".join(str(exc).split())
        raise BamError(f"malformed YAML in {path}: {line}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BamError(f"malformed config {path}: expected a mapping at top level, got {type(data).__name__}")
    return data


def looks_like_path(text: str) -> bool:
    """Whether a name-or-path argument is meant as a path: it has a separator, starts with '.'
    or ends in .yaml/.yml (anything else is looked up among the built-in names first)."""
    return "/" in text or os.sep in text or text.startswith(".") or text.endswith((".yaml", ".yml"))


def resolve_named(name_or_path: str | os.PathLike[str], folder: str, kind: str) -> Path:
    """Resolve a built-in name (``folder/<name>.yaml`` among the shipped resources) or a YAML path.

    Built-in names win over a same-named file or folder in the working directory unless the
    argument looks like a path (:func:`looks_like_path`).
    """
    from bam._paths import describe

    text = str(name_or_path)
    known = resource_names(folder)
    accepted = f"accepted: {', '.join(known) or '(none found)'} or a path to a .yaml file"
    if not text:
        raise BamError(f"empty {kind} name; {accepted}")
    if not looks_like_path(text) and text in known:
        base = resource_dir(folder)
        assert base is not None  # known is non-empty
        return base / f"{text}.yaml"
    p = Path(text)
    if p.is_file():
        return p
    if looks_like_path(text) or p.exists():
        found = describe(p)
        state = "not found" if found == "nothing" else f"is {found}"
        raise BamError(f"{kind} file {p} {state}; expected a YAML file ({accepted})")
    raise BamError(f"unknown {kind} {text!r}; {accepted}")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise BamError(f"config {where}: expected a mapping, got {short_repr(value)}")
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
        raise BamError(errors[0] if errors else f"config {where}: bad value {short_repr(value)}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise BamError(f"config {where}: expected a list, got {short_repr(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise BamError(f"config {where}: expected a list of {len(args)} values, got {len(value)}: "
                           f"{short_repr(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise BamError(f"config {where}: expected a mapping, got {short_repr(value)}")
        args = typing.get_args(tp)
        if len(args) != 2:
            return dict(value)
        return {_coerce(args[0], k, f"{where} key {short_repr(k)}"): _coerce(args[1], v, f"{where}.{k}")
                for k, v in value.items()}
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise BamError(f"config {where}: expected a number, got {short_repr(value)}")
        if not math.isfinite(value):
            raise BamError(f"config {where}: expected a finite number, got {short_repr(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise BamError(f"config {where}: expected an integer, got {short_repr(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise BamError(f"config {where}: expected true/false, got {short_repr(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise BamError(f"config {where}: expected a string, got {short_repr(value)}")
        return value
    return value


@dataclass(frozen=True)
class Check:
    """What a config field accepts beyond its type: a range (``ge``/``gt``, ``le``/``lt``) or a set of
    choices, with a note for the error message (declared with :func:`checked`)."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    one_of: tuple[Any, ...] = ()
    note: str = ""

    def accepts(self, value: Any) -> bool:
        """Whether a value of the right type is accepted (None, where the type allows it, always is)."""
        if value is None:
            return True
        if self.one_of:
            return value in self.one_of
        v = float(value)
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def words(self, tp: Any) -> str:
        """What is accepted, in words: ``an integer >= 2``, ``a number in [0, 1)``, ``paper, authors_code``."""
        if self.one_of:
            text = ", ".join(map(str, self.one_of))
        else:
            kind = "an integer" if int in (tp, *typing.get_args(tp)) else "a number"
            low = [(op, v) for op, v in ((">=", self.ge), (">", self.gt)) if v is not None]
            high = [(op, v) for op, v in (("<=", self.le), ("<", self.lt)) if v is not None]
            if low and high:
                left = "[" if low[0][0] == ">=" else "("
                right = "]" if high[0][0] == "<=" else ")"
                text = f"{kind} in {left}{low[0][1]:g}, {high[0][1]:g}{right}"
            else:
                op, v = (low or high)[0]
                text = f"{kind} {op} {v:g}"
        return f"{text} ({self.note})" if self.note else text


def checked(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, note: str = "") -> Any:
    """A dataclass field with a default whose accepted range is declared once (checked by
    :func:`check_fields`, which :class:`Validated` dataclasses run on construction)."""
    return dataclasses.field(default=default, metadata={"check": Check(ge=ge, gt=gt, le=le, lt=lt, note=note)})


def one_of(default: Any, choices: tuple[Any, ...], note: str = "") -> Any:
    """A dataclass field with a default that accepts only ``choices`` (checked as :func:`checked`)."""
    return dataclasses.field(default=default, metadata={"check": Check(one_of=tuple(choices), note=note)})


def check_fields(obj: Any) -> None:
    """Type-check (and coerce, as :func:`from_dict` does: ints to floats, lists to tuples) every
    field of a frozen dataclass, then apply its declared :class:`Check`; one-line BamError naming
    the field, its value and what is accepted."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = _coerce(hints[f.name], getattr(obj, f.name), f.name)
        object.__setattr__(obj, f.name, value)
        check = f.metadata.get("check")
        if check is not None and not check.accepts(value):
            raise BamError(f"{f.name}={value!r} is invalid; accepted: {check.words(hints[f.name])}")


def field_of(cls: type, name: str) -> Any:
    """A copy of field ``name`` of dataclass ``cls`` (default and declared check), for a dataclass
    that shares the parameter: the check stays declared once."""
    f = {x.name: x for x in dataclasses.fields(cls)}[name]
    return dataclasses.field(default=f.default, metadata=f.metadata)


class Validated:
    """Base of frozen config dataclasses whose fields are checked on construction (:func:`check_fields`),
    however they are built: :func:`from_dict` (YAML, flags) or a Python call."""

    def __post_init__(self) -> None:
        check_fields(self)


def params_of(cfg: Any) -> dict[str, Any]:
    """A dataclass's fields as a flat dict, in declaration order (values as they are, not copied)."""
    return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}


def _required(field: dataclasses.Field[Any]) -> bool:
    """Whether a dataclass field has no default."""
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build a (nested) frozen dataclass from a mapping.

    Unknown keys (at every nesting level) and missing required keys raise a one-line BamError
    naming them; values are type-checked (:func:`_coerce`) before the class validates ranges.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    label = where or cls.__name__
    unknown = set(data) - set(fields)
    if unknown:
        raise BamError(
            f"unknown config key(s) {', '.join(sorted(map(str, unknown)))} in {label}; "
            f"accepted: {', '.join(sorted(fields))}"
        )
    missing = [name for name, f in fields.items() if _required(f) and name not in data]
    if missing:
        required = [name for name, f in fields.items() if _required(f)]
        raise BamError(f"missing config key(s) {', '.join(missing)} in {label}; required: {', '.join(required)}")
    kwargs = {k: _coerce(hints[k], v, f"{where}.{k}" if where else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise BamError(f"config {label}: {exc}") from None


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
    import copy

    data: dict[str, Any] = {}
    if isinstance(source, Mapping):
        data = copy.deepcopy(dict(source))
    elif source is not None:
        data = read_yaml(source)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise BamError(f"config {cls.__name__}.{'.'.join(parts[:i + 1])}: expected a mapping, "
                               f"got {short_repr(node)}")
        node[parts[-1]] = value
    return from_dict(cls, data, cls.__name__)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML (atomically) beside a result."""
    from bam._io import write_text

    write_text(path, dump_yaml(cfg))

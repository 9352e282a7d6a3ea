"""One registry per extension axis (sources, recipes, models, methods, metrics).

Modelled on timm's ``register_model``/``create_model``: a decorator adds an entry under a
unique name; looking up an unknown name raises a one-line :class:`~bam.errors.BamError` that
lists the valid names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from bam.errors import choices_error

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping filled by a decorator; duplicate names raise."""

    def __init__(self, kind: str, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint
        self._entries: dict[str, T] = {}
        self._meta: dict[str, object] = {}

    def register(self, name: str, meta: object = None) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name`` (with optional metadata)."""

        def deco(obj: T) -> T:
            self.add(name, obj, meta)
            return obj

        return deco

    def add(self, name: str, obj: T, meta: object = None) -> None:
        if name in self._entries:
            raise ValueError(f"duplicate {self.kind} name {name!r}: already registered")
        self._entries[name] = obj
        self._meta[name] = meta

    def remove(self, name: str) -> None:
        """Unregister ``name`` (BamError listing the names if it is not registered)."""
        self.get(name)
        del self._entries[name], self._meta[name]

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Registry[T]]:
        """A block whose registrations are removed when it ends (tests, worked examples)."""
        before = set(self._entries)
        try:
            yield self
        finally:
            for name in set(self._entries) - before:
                self.remove(name)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise choices_error(self.kind, name, self._entries, self.hint) from None

    def meta(self, name: str) -> object:
        self.get(name)
        return self._meta[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

"""User-facing errors: one line, naming the bad value and what is accepted."""

from __future__ import annotations

from collections.abc import Iterable


class BamError(Exception):
    """An error caused by bad input. The CLI prints its message on one line and exits ``exit_code`` (2)."""

    exit_code = 2

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


def choices_error(kind: str, value: object, accepted: Iterable[str], hint: str = "") -> BamError:
    """Build the standard 'unknown X' error listing the accepted values."""
    names = ", ".join(sorted(accepted))
    msg = f"unknown {kind} {value!r}; accepted: {names}"
    if hint:
        msg += f" ({hint})"
    return BamError(msg)

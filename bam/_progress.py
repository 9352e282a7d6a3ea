"""The one progress-bar helper every long loop uses (library calls take ``progress: bool``).

On a terminal it is a tqdm bar on stderr. Off a terminal (a log file, a pipe, CI) nothing is
redrawn: a bar with ``leave=True`` (a stage, e.g. "classes" of a build) writes one line when it
finishes, and a transient bar (``leave=False``, e.g. one training epoch, whose result the caller
logs itself) writes nothing. Bars still open when the command is interrupted are closed by
:func:`close_open_bars` so that the CLI's error line starts on a fresh line.
"""

from __future__ import annotations

import sys
import time
import weakref
from collections.abc import Iterable, Iterator
from typing import IO, Any

#: Bars created by :func:`progress_bar` and not closed yet (for :func:`close_open_bars`).
_OPEN: weakref.WeakSet[Any] = weakref.WeakSet()


class LineBar:
    """The off-terminal bar: counts silently, writes one summary line on a normal close."""

    def __init__(self, iterable: Iterable[Any] | None, desc: str, stream: IO[str] | None, leave: bool,
                 options: dict[str, Any]) -> None:
        """``stream`` None means disabled (never writes)."""
        self.iterable, self.desc, self.stream, self.leave = iterable, desc, stream, leave
        self.total: int | None = options.get("total")
        if self.total is None and iterable is not None and hasattr(iterable, "__len__"):
            self.total = len(iterable)  # type: ignore[arg-type]
        self.n = int(options.get("initial", 0))
        self.postfix = ""
        self.closed = False
        self._t0 = time.perf_counter()

    def __iter__(self) -> Iterator[Any]:
        """Iterate the wrapped iterable, counting; closes (one line) when exhausted."""
        if self.iterable is None:
            raise TypeError("this progress bar wraps no iterable")
        for item in self.iterable:
            yield item
            self.n += 1
        self.close()

    def __enter__(self) -> LineBar:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close(interrupted=True)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units."""
        self.n += n

    def set_postfix(self, **values: Any) -> None:
        """Remember ``k=v`` pairs for the summary line."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str) -> None:
        """Remember a free-text postfix for the summary line."""
        self.postfix = text

    def set_description(self, desc: str) -> None:
        """Change the label of the summary line."""
        self.desc = desc

    def close(self, interrupted: bool = False) -> None:
        """Write the summary line (once; not when interrupted, transient or disabled)."""
        if self.closed:
            return
        self.closed = True
        _OPEN.discard(self)
        if interrupted or not self.leave or self.stream is None:
            return
        total = f"/{self.total}" if self.total is not None else ""
        extra = f", {self.postfix}" if self.postfix else ""
        seconds = time.perf_counter() - self._t0
        self.stream.write(f"{self.desc}: {self.n}{total} done in {seconds:.1f} s{extra}\n")
        self.stream.flush()


def progress_bar(iterable: Iterable[Any] | None = None, *, desc: str, enabled: bool, leave: bool = True,
                 **options: Any) -> Any:
    """A tqdm bar on a terminal, a :class:`LineBar` elsewhere; ``options`` go to tqdm
    (``total``, ``initial``, ``unit``, ...). Use it as an iterable wrapper or a context manager."""
    stream = sys.stderr
    if not enabled:
        return LineBar(iterable, desc, None, leave, options)
    if not _isatty(stream):
        bar: Any = LineBar(iterable, desc, stream, leave, options)
    else:
        from tqdm import tqdm

        bar = tqdm(iterable, desc=desc, leave=leave, file=stream, dynamic_ncols=True, **options)
    _OPEN.add(bar)
    return bar


def _isatty(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def close_open_bars() -> int:
    """Close every bar still open (after an interrupt): terminal bars end their line, line bars
    stay silent. Returns how many terminal bars were open (0: the cursor may be mid-line)."""
    drawn = 0
    for bar in list(_OPEN):
        _OPEN.discard(bar)
        try:
            if isinstance(bar, LineBar):
                bar.close(interrupted=True)
            elif not getattr(bar, "disable", True):  # tqdm sets disable once closed
                bar.close()
                drawn += 1
        except Exception:  # best effort while handling an interrupt
            pass
    return drawn

"""Exclusive locks on output folders: one bam process writes into a given --out at a time.

``bam train``, ``bam build-data`` and ``bam evaluate`` hold :func:`output_lock` on their output
folder while they run: ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<folder>/.bam.lock``, a file that
records the holder's pid and command. A second run into the same folder is refused at once with
one line naming the process that holds it. The kernel releases a flock when its process dies (a
crash, ``kill -9``), so a lock file left by a dead process never blocks: the file is kept (removing
it would let two processes lock two different files of the same name), only the lock matters.

On a platform without ``fcntl`` (Windows) the lock is not taken (logged once at debug level).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from bam._paths import describe
from bam.errors import BamError

log = logging.getLogger(__name__)

#: The lock file's name inside the locked folder (ignored by `bam data verify`).
LOCK_FILE = ".bam.lock"


def holder(path: Path) -> str:
    """Who holds the lock at ``path``, as recorded in it ("pid 123 (bam train)"; "" when unknown)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""
    pid, _, what = text.partition(" ")
    return f"pid {pid} ({what})" if pid.isdigit() and what else (f"pid {pid}" if pid.isdigit() else "")


@contextlib.contextmanager
def output_lock(folder: str | os.PathLike[str], what: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created) for the duration of the block.

    ``what``: the holder's description written into the lock file (e.g. "bam train"). A folder
    already locked by another process (or by another open lock in this process) is a one-line
    BamError naming the holder; the lock is released on exit and when the process dies.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not Linux/macOS
        log.debug("no fcntl on this platform: %s is not locked", folder)
        yield Path(folder)
        return
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise BamError(f"output folder {folder} is {describe(folder)}; expected a directory (new or empty)")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    if path.is_symlink():
        raise BamError(f"lock file {path} is a symlink; refusing to use it (delete it)")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            who = holder(path)
            raise BamError(f"{folder} is in use by another bam run ({who or 'a process'} holds {path}); wait for "
                           "it to finish or use another output folder") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {what}\n".encode())
        try:
            yield folder
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)

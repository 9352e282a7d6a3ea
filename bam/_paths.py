"""Path checks shared by every command: what a path is versus what was expected, and
containment of paths read from files (state files, manifests, configs) inside their root."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from bam.errors import BamError


def describe(path: Path) -> str:
    """What is at ``path``: "a file", "a directory", "something else" or "nothing"."""
    if path.is_dir():
        return "a directory"
    if path.is_file():
        return "a file"
    return "something else (not a file or directory)" if path.exists() or path.is_symlink() else "nothing"


def require_dir(path: str | os.PathLike[str], what: str, hint: str = "") -> Path:
    """``path`` as a Path if it is a directory, else a BamError saying what it is instead."""
    path = Path(path)
    if path.is_dir():
        return path
    found = describe(path)
    state = "does not exist" if found == "nothing" else f"is {found}"
    raise BamError(f"{what} {path} {state}; expected a directory{f' ({hint})' if hint else ''}")


def require_file(path: str | os.PathLike[str], what: str, hint: str = "") -> Path:
    """``path`` as a Path if it is a regular file, else a BamError saying what it is instead."""
    path = Path(path)
    if path.is_file():
        return path
    found = describe(path)
    state = "does not exist" if found == "nothing" else f"is {found}"
    raise BamError(f"{what} {path} {state}; expected a file{f' ({hint})' if hint else ''}")


def inside(root: str | os.PathLike[str], rel: object, what: str) -> Path:
    """``root / rel`` for a relative path ``rel`` read from a file, refused unless it stays inside ``root``.

    Absolute paths, ``..`` components, and symlinks resolving outside ``root`` raise a BamError
    naming ``what`` (the file the path came from) and the offending value.
    """
    text = str(rel)
    if not isinstance(rel, str) or not text or "\x00" in text:
        raise BamError(f"{what}: bad path {rel!r}; accepted: a non-empty relative path inside {root}")
    parts = PurePosixPath(text.replace("\\", "/")).parts
    if os.path.isabs(text) or text.startswith(("/", "\\")) or ".." in parts:
        raise BamError(f"{what}: path {text!r} escapes {root}; accepted: a relative path inside it (no '..')")
    base = Path(root).resolve()
    target = (base / text).resolve()
    if target != base and base not in target.parents:
        raise BamError(f"{what}: path {text!r} resolves to {target}, outside {base}; refusing to use it")
    return Path(root) / text

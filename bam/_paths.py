"""Path checks shared by every command: what a path is versus what was expected, and
containment inside a root: of paths read from files (state files, manifests, configs) and of every
file bam reads or writes under a root (a dataset, a checkpoint folder, an evaluation's --out).

A root is the folder the user named; its own path may be a symlink (that is the user's choice),
but nothing under it may resolve outside it: :func:`inside` (a relative path from a file) and
:func:`confine` (a path built by bam, e.g. ``root / "derived" / "iir_patch"``) resolve the real
path and refuse, in one line naming the path and the root, one that a symlink takes elsewhere.
"""

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
        raise BamError(f"{what}: path {text!r} resolves to {target}, outside {root} (a symlink leaves it); "
                       "refusing to use it")
    return Path(root) / text


def escapes(root: str | os.PathLike[str], path: str | os.PathLike[str]) -> Path | None:
    """Where ``path`` really is when that is outside ``root``'s real path (None: it stays inside)."""
    base = Path(root).resolve()
    target = Path(path).resolve()
    return None if target == base or base in target.parents else target


def confine(root: str | os.PathLike[str], path: str | os.PathLike[str], what: str) -> Path:
    """``path`` (a path under ``root`` built by bam, e.g. ``root / "cache" / name``) as a Path, refused
    unless its real path (symlinks resolved, the path need not exist yet) stays inside ``root``'s.

    The BamError names ``what`` the path is for, the path, where it resolves to, and the root.
    """
    target = escapes(root, path)
    if target is not None:
        raise BamError(f"{what} {path} resolves to {target}, outside {root} (a symlink leaves it); refusing to "
                       "use it (replace the link by a real file or folder)")
    return Path(path)

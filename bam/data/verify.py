"""``bam data verify``: check a build's manifest for self-consistency and re-hash every file."""

from __future__ import annotations

import os

from bam._io import read_json, sha256_file
from bam._lock import LOCK_FILE
from bam._paths import confine, escapes, inside, require_dir
from bam._progress import progress_bar
from bam.data._layout import layout_problems
from bam.data.build import DERIVED, MANIFEST, STATE
from bam.errors import BamError


def verify_dataset(root: str | os.PathLike[str], progress: bool = False) -> list[str]:
    """Problems found in ``root`` (empty list: every file matches the manifest).

    Reports manifest fields inconsistent with its recipe and file table (:mod:`bam.data._layout`),
    missing files, hash mismatches, files the manifest does not list, and listed paths that would
    leave ``root``, and any symlink under ``root`` that leads outside it; the content of ``derived/``
    (artefacts written after the build, e.g. the IIR patch set) is not checked.
    """
    root = require_dir(root, "dataset dir", "a dataset built by `bam build-data`")
    confine(root, root / MANIFEST, "dataset manifest")
    if not (root / MANIFEST).is_file():
        raise BamError(f"{root} is not a complete bam dataset (no {MANIFEST})")
    manifest = read_json(root / MANIFEST)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict):
        raise BamError(f"{root / MANIFEST} has no 'files' table; not a bam dataset manifest")
    problems = [f"inconsistent manifest: {p}" for p in layout_problems(manifest)]
    for rel, sha in progress_bar(sorted(files.items()), desc="verify", enabled=progress, unit="file"):
        try:
            path = inside(root, rel, str(root / MANIFEST))
        except BamError as exc:
            problems.append(f"unsafe path: {exc}")
            continue
        if not path.is_file():
            problems.append(f"missing: {rel}")
        elif sha256_file(path) != sha:
            problems.append(f"hash mismatch: {rel}")
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink() and rel not in files and escapes(root, path) is not None:
            problems.append(f"unsafe path: {rel} links to {escapes(root, path)}, outside {root}")
        elif path.is_file() and rel not in files and rel != MANIFEST and rel != STATE \
                and not rel.startswith(f"{DERIVED}/") and rel != LOCK_FILE:
            problems.append(f"unexpected file: {rel}")
    return problems

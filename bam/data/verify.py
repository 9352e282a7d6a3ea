"""``bam data verify``: re-hash every file of a build against its manifest."""

from __future__ import annotations

import os
from pathlib import Path

from bam._io import read_json, sha256_file
from bam.data.build import DERIVED, MANIFEST, STATE
from bam.errors import BamError


def verify_dataset(root: str | os.PathLike[str], progress: bool = False) -> list[str]:
    """Problems found in ``root`` (empty list: every file matches the manifest).

    Reports missing files, hash mismatches and files the manifest does not list; ``derived/``
    (artefacts written after the build, e.g. the IIR patch set) is ignored.
    """
    from tqdm import tqdm

    root = Path(root)
    if not (root / MANIFEST).is_file():
        raise BamError(f"{root} is not a complete bam dataset (no {MANIFEST})")
    manifest = read_json(root / MANIFEST)
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BamError(f"{root / MANIFEST} has no 'files' table; not a bam dataset manifest")
    problems: list[str] = []
    for rel, sha in tqdm(sorted(files.items()), desc="verify", disable=not progress):
        path = root / rel
        if not path.is_file():
            problems.append(f"missing: {rel}")
        elif sha256_file(path) != sha:
            problems.append(f"hash mismatch: {rel}")
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in files and rel != MANIFEST and rel != STATE \
                and not rel.startswith(f"{DERIVED}/"):
            problems.append(f"unexpected file: {rel}")
    return problems

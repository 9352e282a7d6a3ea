"""An evaluation's output set (results.csv, records.csv, config.yaml, provenance.json, ...) written as a unit.

Writing happens in two phases. (1) Every file of the set is written to a temp file beside its final
name and fsynced: a full disk or a kill here leaves the previous set untouched. (2) A ``.writing``
marker (already on disk) is moved into place, the files are renamed over the old ones (renames need
no space), and the manifest ``outputs.json`` (the sha256 of every file in the set, written last) is
renamed in; the marker is then removed. :func:`check_output_set` (called by ``bam report`` and
``bam compare``) refuses, with one line, a folder whose marker is present (a swap was interrupted)
or whose files do not match the manifest (a mixed set). Every file of the set is read and written
inside the folder's real path: a file or name that a symlink takes outside it is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from bam._io import create_temp, dumps_json, sha256_bytes, sha256_file
from bam._paths import confine
from bam.errors import BamError

MANIFEST = "outputs.json"
MARKER = ".writing"
FORMAT = "bam-outputs/1"

#: A writer of one temp file: (path, data) -> None. Tests replace it to simulate a full disk.
Writer = Callable[[Path, bytes], None]


def _write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _temp_name(folder: Path, name: str) -> Path:
    """A fresh hidden temp path for ``name`` in ``folder``."""
    fd, tmp = create_temp(folder, name)  # honours the umask, like every file bam writes
    os.close(fd)
    return tmp


def write_output_set(folder: str | os.PathLike[str], files: Mapping[str, bytes], *,
                     writer: Writer | None = None) -> Path:
    """Write ``files`` (name -> bytes) into ``folder`` as one set; returns the manifest path.

    Files of an earlier set that are not in ``files`` (e.g. examples.safetensors when examples are
    now off) are removed, so the folder never mixes two sets.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bad = [n for n in files if not n or "/" in n or n.startswith(".") or n == MANIFEST]
    if bad:
        raise BamError(f"bad output file name {bad[0]!r}; accepted: plain names, not {MANIFEST}")
    for stale in folder.glob(".*.tmp"):  # left by an interrupted write: never part of a set
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    for name in [MARKER, *files, MANIFEST]:
        confine(folder, folder / name, "output file")
    manifest = {"format": FORMAT, "files": {n: sha256_bytes(b) for n, b in sorted(files.items())}}
    payload = {**files, MANIFEST: dumps_json(manifest).encode()}
    write = writer or _write_synced
    temps: dict[str, Path] = {}
    try:
        for name, data in [(MARKER, b"an output set is being swapped in\n"), *payload.items()]:
            temps[name] = _temp_name(folder, name)
            write(temps[name], data)
    except BaseException:
        for tmp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        raise
    previous = _manifest_files(folder)
    os.replace(temps.pop(MARKER), folder / MARKER)
    for name in files:
        os.replace(temps[name], folder / name)
    for old in sorted(set(previous) - set(files)):
        with contextlib.suppress(FileNotFoundError):
            (folder / old).unlink()
    os.replace(temps[MANIFEST], folder / MANIFEST)
    (folder / MARKER).unlink()
    return folder / MANIFEST


def _manifest_files(folder: Path) -> dict[str, str]:
    """name -> sha256 of the set recorded in ``folder``'s manifest ({} when unreadable or absent)."""
    try:
        doc = json.loads(confine(folder, folder / MANIFEST, "output manifest").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = doc.get("files") if isinstance(doc, dict) else None
    return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}


def check_output_set(folder: str | os.PathLike[str], required: tuple[str, ...] = ()) -> bool:
    """Refuse (one-line BamError) an interrupted or mixed output set in ``folder``.

    Returns True when ``folder`` holds a verified set, False when it has no manifest at all (a
    results.csv made by hand or by an older bam: nothing to verify). ``required`` files must be in
    the set.
    """
    folder = Path(folder)
    if (folder / MARKER).exists():
        raise BamError(f"{folder} holds a partly written output set (an evaluation was interrupted while "
                       "writing it); re-run the evaluation to rewrite it")
    if not (folder / MANIFEST).exists():
        return False
    files = _manifest_files(folder)
    if not files:
        raise BamError(f"{folder / MANIFEST} is unreadable; re-run the evaluation to rewrite the output set")
    for name in required:
        if name not in files:
            raise BamError(f"{name} is not part of the output set recorded in {folder / MANIFEST}")
    for name, sha in sorted(files.items()):
        path = confine(folder, folder / name, "output file")
        if not path.is_file():
            raise BamError(f"{path} is missing from the output set recorded in {folder / MANIFEST}; "
                           "re-run the evaluation to rewrite it")
        if sha256_file(path) != sha:
            raise BamError(f"{path} does not belong to the output set recorded in {folder / MANIFEST} "
                           "(files of two evaluations are mixed); re-run the evaluation to rewrite it")
    return True

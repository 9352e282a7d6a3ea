"""Atomic file output and hashing. Every file bam writes goes through here (temp + rename)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np


def create_temp(folder: str | os.PathLike[str], name: str) -> tuple[int, Path]:
    """Create a fresh hidden staging file ``.<name>.<random>.tmp`` in ``folder``; returns (fd, path).

    The file is created with mode 0666 filtered by the process umask, as any new file (0644 under
    umask 022, 0600 under 077): once renamed into place it has the permissions a user expects,
    unlike the 0600 of :func:`tempfile.mkstemp`. ``O_EXCL`` makes the name ours alone.
    """
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = Path(folder) / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(path, flags, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free staging file name for {name} in {folder}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", **kw: Any) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on success fsync and rename over ``path``.

    On any error (disk full included) the temp file is removed and the previous content of
    ``path`` stays intact; an OSError that names no file (e.g. ENOSPC from ``write``) is re-raised
    naming ``path``, so the user learns which write failed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = create_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, mode, **kw) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps_json(obj: Any) -> str:
    """Stable JSON text (sorted keys, 2-space indent, trailing newline)."""
    return json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    write_text(path, dumps_json(obj))


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read JSON; a missing or malformed file raises a one-line BamError."""
    from bam.errors import BamError

    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BamError(f"file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BamError(f"malformed JSON in {path}: {exc}") from None


def write_csv(path: str | os.PathLike[str], frame: Any) -> None:
    """Write a pandas DataFrame as CSV atomically (no index column)."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        frame.to_csv(fh, index=False, lineterminator="\n")


def save_png(path: str | os.PathLike[str], image: Any) -> None:
    """Save a PIL image as PNG atomically (deterministic bytes: no metadata)."""
    with atomic_open(path, "wb") as fh:
        image.save(fh, format="PNG", optimize=False)


def _canonical_safetensors(blob: bytes) -> bytes:
    """Rewrite a safetensors header with sorted keys (the library orders metadata per process)."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + n:]


def tensors_bytes(tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> bytes:
    """A dict of tensors as safetensors bytes, byte-identical for identical content."""
    from safetensors.torch import save

    blob = save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=metadata)
    return _canonical_safetensors(blob)


def save_tensors(path: str | os.PathLike[str], tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    """Save a dict of tensors as safetensors atomically, byte-identical for identical content."""
    write_bytes(path, tensors_bytes(tensors, metadata))


def csv_bytes(frame: Any) -> bytes:
    """A pandas DataFrame as the CSV bytes :func:`write_csv` writes."""
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_json(obj: Any) -> str:
    """sha256 of the canonical JSON form of ``obj`` (for cache keys and manifests)."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default).encode())

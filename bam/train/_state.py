"""Resumable training state (``train_state.pt``), its checksum, and the resume compatibility check.

The state is a plain container (loadable with ``torch.load(weights_only=True)``: no code runs)
carrying a ``checksum``: the sha256 of its own content (every tensor's dtype, shape and bytes and
every other value, in key order). A damaged or edited state is refused instead of being resumed
into a model whose card would then record the hash of damaged weights. ``weights_sha256`` is the
hash of the ``model.safetensors`` written with it, checked before a resumed run reuses that file.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Any

import torch

from bam._io import sha256_file, write_bytes
from bam.errors import BamError
from bam.models.checkpoint import CARD_FILE, STATE_FILE, WEIGHTS_FILE, ckpt_file

log = logging.getLogger(__name__)

STATE_VERSION = 1
CHECKSUM_KEY = "checksum"


def _feed(h: Any, obj: Any) -> None:
    """Update hash ``h`` with a canonical encoding of a state tree."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().data)
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=lambda k: (type(k).__name__, str(k))):
            h.update(f"K{type(key).__name__}:{key!s}".encode())
            _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{type(obj).__name__}{len(obj)}".encode())
        for item in obj:
            _feed(h, item)
    else:
        h.update(f"V{type(obj).__name__}:{obj!r}".encode())


def state_checksum(state: dict[str, Any]) -> str:
    """sha256 of a state's content, its ``checksum`` entry excluded."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != CHECKSUM_KEY})
    return h.hexdigest()


def save_state(out_dir: Path, state: dict[str, Any]) -> None:
    """Write ``train_state.pt`` atomically, with its checksum (plain tensors/containers only)."""
    full = {"version": STATE_VERSION, **state}
    full[CHECKSUM_KEY] = state_checksum(full)
    buf = io.BytesIO()
    torch.save(full, buf)
    write_bytes(ckpt_file(out_dir, STATE_FILE), buf.getvalue())


def load_state(out_dir: Path, require_checksum: bool = True) -> dict[str, Any]:
    """Read ``train_state.pt`` with ``weights_only=True`` (no code execution) and verify its checksum.

    A state without a checksum (written before checksums existed) is accepted only with
    ``require_checksum=False`` (a finished run, whose weights the card's hash covers).
    """
    path = ckpt_file(out_dir, STATE_FILE)
    damaged = (f"training state {path} is damaged ({{}}); delete it (and {WEIGHTS_FILE}) to train again "
               "from scratch, or use another --out")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file is "damaged"
        raise BamError(damaged.format(f"unreadable: {type(exc).__name__}")) from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise BamError(f"training state {path} has an unknown format; delete it or use another --out")
    if CHECKSUM_KEY not in state:
        if require_checksum:
            raise BamError(damaged.format("it has no checksum (written by an older bam), so it cannot be trusted"))
        log.warning("%s has no checksum (older bam); used only to compare settings", path)
    elif state[CHECKSUM_KEY] != state_checksum(state):
        raise BamError(damaged.format("checksum mismatch"))
    return state



def check_weights(out_dir: Path, state: dict[str, Any]) -> None:
    """BamError unless ``model.safetensors`` is the file the state was saved with (when it has one)."""
    expected = state.get("weights_sha256")
    path = ckpt_file(out_dir, WEIGHTS_FILE)
    if not expected or int(state.get("best_epoch", 0)) <= 0:
        return
    if not path.is_file():
        raise BamError(f"cannot resume {out_dir}: {path} is missing; delete {STATE_FILE} to train again from scratch")
    if sha256_file(path) != expected:
        raise BamError(f"cannot resume {out_dir}: {path} does not match the hash in {STATE_FILE} (damaged or "
                       f"edited); delete both to train again from scratch, or use another --out")


def _differences(saved: dict[str, Any], now: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, saved, now) for every differing setting, sorted by key."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append((f"{prefix}{key}", a, b))
    return out


def check_resumable(out_dir: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The saved state to continue from (or to confirm a finished run), or None to start fresh.

    BamError when the state is damaged, or when the saved run's settings differ from ``settings``
    (naming the first one).
    """
    has_state = ckpt_file(out_dir, STATE_FILE).is_file()
    has_card = ckpt_file(out_dir, CARD_FILE).is_file()
    if not has_state and not has_card:
        return None
    if not has_state:
        raise BamError(f"{out_dir} holds a finished model ({CARD_FILE}) without its {STATE_FILE}, so its "
                       "settings cannot be compared; choose another --out to train again")
    state = load_state(out_dir, require_checksum=not has_card)
    diffs = _differences(state.get("settings", {}), settings)
    if diffs:
        key, old, new = diffs[0]
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise BamError(f"cannot resume {out_dir}: setting {key!r} differs (checkpoint {old!r}, now {new!r}){more}; "
                       "use the original settings or another --out")
    return state


def check_environment(out_dir: Path, state: dict[str, Any], now: dict[str, Any]) -> None:
    """Refuse to continue an unfinished run in another numeric environment (thread count, CPU ISA).

    The same seed gives the same weights only with the same intra-op thread count and instruction
    set (float reductions are ordered by them), so a resumed run would silently differ from a straight
    one. States written before the environment was recorded are accepted.
    """
    saved = state.get("environment")
    if not isinstance(saved, dict):
        return
    diffs = _differences(saved, now)
    if diffs:
        key, old, new = diffs[0]
        raise BamError(f"cannot resume {out_dir}: it was trained with {key} {old!r}, this process has {new!r}; a "
                       "resumed run would not reproduce a straight one (set the same thread count, e.g. "
                       f"OMP_NUM_THREADS={old}, or use another --out)" if key == "intra_op_threads" else
                       f"cannot resume {out_dir}: it was trained with {key} {old!r}, this machine has {new!r}; a "
                       "resumed run would not reproduce a straight one (resume on the same kind of machine, or use "
                       "another --out)")

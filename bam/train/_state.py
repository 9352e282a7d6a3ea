"""Resumable training state (``train_state.pt``) and the resume compatibility check."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import torch

from bam._io import write_bytes
from bam.errors import BamError
from bam.models.checkpoint import CARD_FILE, STATE_FILE

log = logging.getLogger(__name__)

STATE_VERSION = 1


def save_state(out_dir: Path, state: dict[str, Any]) -> None:
    """Write ``train_state.pt`` atomically (plain tensors/containers: loadable with weights_only)."""
    buf = io.BytesIO()
    torch.save({"version": STATE_VERSION, **state}, buf)
    write_bytes(out_dir / STATE_FILE, buf.getvalue())


def load_state(out_dir: Path) -> dict[str, Any]:
    """Read ``train_state.pt`` with ``weights_only=True`` (no code execution)."""
    path = out_dir / STATE_FILE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BamError(f"cannot read training state {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        raise BamError(f"training state {path} has an unknown format; delete it or use another --out")
    return state


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


def check_resumable(out_dir: Path, settings: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """The saved state to continue from, or None to start fresh.

    BamError when ``out_dir`` already holds a run and ``resume`` is false, or when the saved run's
    settings differ from ``settings`` (naming the first differing setting).
    """
    has_state = (out_dir / STATE_FILE).is_file()
    has_card = (out_dir / CARD_FILE).is_file()
    if not has_state and not has_card:
        return None
    if not resume:
        raise BamError(f"output directory {out_dir} already holds a training run; pass --resume to continue "
                       "or finish it, or choose another --out")
    if not has_state:
        raise BamError(f"cannot resume {out_dir}: {CARD_FILE} exists but {STATE_FILE} is missing; "
                       "choose another --out to retrain")
    state = load_state(out_dir)
    diffs = _differences(state.get("settings", {}), settings)
    if diffs:
        key, old, new = diffs[0]
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise BamError(f"cannot resume {out_dir}: setting {key!r} differs (checkpoint {old!r}, now {new!r}){more}; "
                       "use the original settings or another --out")
    return state

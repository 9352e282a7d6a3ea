"""CAV cache: one safetensors file per CAV, keyed and content-hashed, no pickle.

A file holds the unit CAV (float32 [D]) and, in its safetensors metadata, the canonical JSON of
its key, the classifier's diagnostics and ``content_sha256`` = sha256 of key + diagnostics + the
vector's bytes. A file that cannot be read, whose hash does not match or whose key differs is
logged and ignored (the CAV is recomputed), never trusted. safetensors holds plain arrays, so
loading executes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor

from bam._io import hash_json, save_tensors, sha256_bytes
from bam._paths import confine

log = logging.getLogger("bam.concepts")
KIND = "tcav_cav"


@dataclass(frozen=True)
class CachedCav:
    """A CAV read back from the cache: the unit vector and its diagnostics."""

    vector: Tensor
    info: Mapping[str, Any]


def _digest(key_json: str, info_json: str, vector: Tensor) -> str:
    blob = vector.detach().cpu().contiguous().float().numpy().tobytes()
    return sha256_bytes(key_json.encode() + b"\0" + info_json.encode() + b"\0" + blob)


class CavCache:
    """A directory ``root/tcav_cav/<h[:2]>/<h>.safetensors`` (``root`` None: nothing is cached)."""

    def __init__(self, root: str | Path | None) -> None:
        """Cache under ``root`` (created on first write)."""
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    def path(self, key: Mapping[str, Any]) -> Path | None:
        """The file that holds ``key`` (None without a root)."""
        if self.root is None:
            return None
        h = hash_json(dict(key))
        return confine(self.root, self.root / KIND / h[:2] / f"{h}.safetensors", "CAV cache entry")

    def get(self, key: Mapping[str, Any], device: torch.device) -> CachedCav | None:
        """The cached CAV for ``key`` on ``device``, or None (missing, corrupt or mismatched: logged)."""
        p = self.path(key)
        if p is None or not p.is_file():
            self.misses += 1
            return None
        want = json.dumps(dict(key), sort_keys=True, separators=(",", ":"))
        try:
            with safe_open(str(p), framework="pt", device="cpu") as fh:
                meta = fh.metadata() or {}
                vector = fh.get_tensor("cav")
            ok = (meta.get("key") == want and vector.dim() == 1
                  and meta.get("content_sha256") == _digest(meta["key"], meta["info"], vector))
            info = json.loads(meta["info"]) if ok else {}
        except Exception:  # any unreadable file (truncated, foreign, not safetensors) means recompute
            ok, info, vector = False, {}, torch.empty(0)
        if not ok:
            self.corrupt += 1
            self.misses += 1
            log.warning("CAV cache entry %s is corrupt or does not match its key; recomputing it", p)
            return None
        self.hits += 1
        return CachedCav(vector.to(device), info)

    def put(self, key: Mapping[str, Any], vector: Tensor, info: Mapping[str, Any]) -> None:
        """Write the CAV for ``key`` atomically (no-op without a root)."""
        p = self.path(key)
        if p is None:
            return
        key_json = json.dumps(dict(key), sort_keys=True, separators=(",", ":"))
        info_json = json.dumps(dict(info), sort_keys=True, separators=(",", ":"))
        vec = vector.detach().float().cpu().contiguous()
        save_tensors(p, {"cav": vec}, metadata={"key": key_json, "info": info_json,
                                               "content_sha256": _digest(key_json, info_json, vec)})

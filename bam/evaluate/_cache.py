"""Per-image record cache: one JSON file per (model, method, input, chunk), content-hashed.

A file holds ``{"key": ..., "payload": ..., "content_sha256": sha256(canonical JSON of key +
payload)}``. A file that is unreadable, whose hash does not match, or whose key differs from the
requested one is logged and ignored (the chunk is recomputed), never trusted.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from bam._io import hash_json, write_text
from bam._paths import confine

log = logging.getLogger("bam.evaluate")


class RecordCache:
    """A directory of content-hashed chunk files (``root/<kind>/<key hash[:2]>/<key hash>.json``)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    def path(self, kind: str, key: dict[str, Any]) -> Path:
        """The file that holds ``key`` (refused when a symlink takes it outside the cache folder)."""
        h = hash_json(key)
        return confine(self.root, self.root / kind / h[:2] / f"{h}.json", "cache entry")

    def get(self, kind: str, key: dict[str, Any]) -> dict[str, Any] | None:
        """The cached payload for ``key`` or None (missing, corrupt or mismatched -> None, logged)."""
        p = self.path(kind, key)
        if not p.is_file():
            self.misses += 1
            return None
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
            ok = (isinstance(doc, dict) and doc.get("content_sha256") == hash_json([doc["key"], doc["payload"]])
                  and doc["key"] == json.loads(json.dumps(key)))
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            self.corrupt += 1
            self.misses += 1
            log.warning("cache entry %s is corrupt or does not match its key; recomputing it", p)
            return None
        self.hits += 1
        return doc["payload"]

    def remove_stale_temps(self) -> int:
        """Delete temp files left by an interrupted write (``.<name>.*.tmp``); returns how many.

        Call it before any process of the run writes to the cache.
        """
        if not self.root.is_dir():
            return 0
        stale = [p for p in self.root.rglob(".*.tmp") if p.is_file()]
        for p in stale:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        if stale:
            log.info("removed %d stale temp file(s) from %s", len(stale), self.root)
        return len(stale)

    def put(self, kind: str, key: dict[str, Any], payload: dict[str, Any]) -> None:
        """Write ``payload`` for ``key`` atomically with its content hash."""
        key_n = json.loads(json.dumps(key))
        payload_n = json.loads(json.dumps(payload))
        doc = {"key": key_n, "payload": payload_n, "content_sha256": hash_json([key_n, payload_n])}
        write_text(self.path(kind, key), json.dumps(doc, sort_keys=True) + "\n")

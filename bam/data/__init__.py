"""bam.data: build BAM datasets (SPEC §2) and load them (docs/architecture.md, "Data contract").

``open_dataset(DIR)`` opens a build; ``build_dataset(recipe, DIR, seed=...)`` makes one;
``load_recipe(name_or_path)`` reads ``datasets/<name>.yaml``; ``SOURCES`` is the registry of
image sources (synthetic, coco, scenes). Names are imported lazily so that build worker
processes do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BamData": "bam.data.dataset", "BamSubset": "bam.data.dataset", "open_dataset": "bam.data.dataset",
    "BuildOptions": "bam.data.build", "BuildResult": "bam.data.build", "build_dataset": "bam.data.build",
    "Recipe": "bam.data.recipe", "load_recipe": "bam.data.recipe",
    "SOURCES": "bam.data.sources", "SourceInputs": "bam.data.sources",
    "verify_dataset": "bam.data.verify",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the public names on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bam.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    """Public names, including the lazily imported ones."""
    return sorted([*globals(), *_EXPORTS])

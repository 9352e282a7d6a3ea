"""docs/extending.md: every worked example runs, registering into the real registries, and leaves them as they were."""

from __future__ import annotations

import contextlib
import re
import sys
import types
from pathlib import Path

import pytest

from bam.concepts._registry import CONCEPT_METHODS
from bam.data.sources import SOURCES
from bam.methods import METHODS
from bam.metrics import METRICS
from bam.models._registry import MODELS

DOC = Path(__file__).resolve().parent.parent / "docs" / "extending.md"
REGISTRIES = (METHODS, METRICS, MODELS, SOURCES, CONCEPT_METHODS)


def _examples() -> dict[str, str]:
    """Section title -> the python block under it."""
    out: dict[str, str] = {}
    title = ""
    for part in re.split(r"(^## [^\n]*$|^```python\n.*?^```$)", DOC.read_text(encoding="utf-8"), flags=re.M | re.S):
        if part.startswith("## "):
            title = part[3:].strip()
        elif part.startswith("```python"):
            assert title not in out, f"two examples under {title!r}"
            out[title] = part.split("\n", 1)[1].rsplit("```", 1)[0]
    return out


def test_every_extension_axis_has_an_example() -> None:
    titles = " | ".join(_examples())
    for axis in ("method", "metric", "model architecture", "data source", "concept method"):
        assert axis in titles, f"docs/extending.md has no worked example for a {axis}"


@pytest.mark.parametrize("title", sorted(_examples()))
def test_worked_example_runs_and_unregisters(title: str) -> None:
    before = {r.kind: r.names() for r in REGISTRIES}
    with contextlib.ExitStack() as stack:
        for registry in REGISTRIES:
            stack.enter_context(registry.scratch())
        module = types.ModuleType("extending_example")  # dataclasses look their module up in sys.modules
        stack.callback(sys.modules.pop, module.__name__, None)
        sys.modules[module.__name__] = module
        exec(compile(_examples()[title], f"docs/extending.md: {title}", "exec"), module.__dict__)
        assert {r.kind: r.names() for r in REGISTRIES} != before, "the example registered nothing"
    assert {r.kind: r.names() for r in REGISTRIES} == before

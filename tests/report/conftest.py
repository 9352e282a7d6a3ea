"""Fixtures for the report/compare tests (helpers live in _report_fixtures.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from _report_fixtures import results_rows, write_results


@pytest.fixture
def make_results(tmp_path: Path) -> Callable[..., Path]:
    """Factory: make_results(name, values=None, rows=None) -> path of a schema-2 results.csv."""

    def make(name: str = "results.csv", values: dict[str, float] | None = None,
             rows: list[dict[str, object]] | None = None) -> Path:
        return write_results(tmp_path / name, rows if rows is not None else results_rows(values))

    return make

"""Fixtures of the data tests (defined in _data_helpers.py, importable by the test modules)."""

from _data_helpers import real_sources, tiny_build, tiny_recipe  # noqa: F401

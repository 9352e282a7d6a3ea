"""The data contract (docs/architecture.md, "Data contract") as structural types.

:class:`bam.data.BamData` satisfies them; so can any test fake or another store that follows the
contract. Evaluation and training type their dataset arguments with these, not ``Any``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from torch import Tensor


class SubsetLike(Protocol):
    """One subset of a build restricted to a split: ``table`` row i <-> item i."""

    @property
    def table(self) -> pd.DataFrame: ...

    def __len__(self) -> int: ...

    def load_batch(self, indices: Sequence[int] | Tensor | np.ndarray) -> tuple[Tensor, Tensor, Tensor]: ...


class RecipeLike(Protocol):
    """The part of a recipe that reports read."""

    @property
    def name(self) -> str: ...


class DatasetLike(Protocol):
    """A complete build: class lists, recipe fields, subsets, a folder for derived artefacts."""

    @property
    def root(self) -> Path: ...

    @property
    def manifest_hash(self) -> str: ...

    @property
    def recipe(self) -> RecipeLike: ...

    @property
    def object_classes(self) -> list[str]: ...

    @property
    def scene_classes(self) -> list[str]: ...

    @property
    def common_object(self) -> str: ...

    @property
    def common_scene(self) -> str: ...

    @property
    def iir_scene(self) -> str: ...

    def subset(self, name: str, split: str | None = "val") -> SubsetLike: ...

    def derived_dir(self, kind: str) -> Path: ...


def dataset_name(data: DatasetLike) -> str:
    """The name reports use for a dataset: its recipe name, else its folder name."""
    return str(data.recipe.name or Path(str(data.root)).name)

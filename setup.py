"""Package layout for setuptools (the metadata lives in pyproject.toml).

The wheel ships the built-in recipes and configs: the top-level ``datasets/`` and ``configs/``
folders stay the source of truth and are mapped, with every sub-folder, to the packages
``bam._resources.datasets`` and ``bam._resources.configs`` (YAML files as package data), which
``bam.config.resource_dir`` reads through importlib.resources.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
#: top-level folder -> the package it becomes in the wheel
RESOURCES = {"datasets": "bam._resources.datasets", "configs": "bam._resources.configs"}


def resource_packages() -> dict[str, str]:
    """package name -> source folder for every resource folder and sub-folder."""
    out: dict[str, str] = {}
    for folder, package in RESOURCES.items():
        root = HERE / folder
        for d in [root, *sorted(p for p in root.rglob("*") if p.is_dir() and not p.name.startswith((".", "_")))]:
            rel = d.relative_to(root).parts
            out[".".join([package, *rel])] = "/".join([folder, *rel])
    return out


packages = resource_packages()
setup(
    packages=[*find_packages(include=["bam", "bam.*"]), *packages],
    package_dir={name: folder for name, folder in packages.items() if name in RESOURCES.values()},
    package_data={"bam": ["py.typed"], **{name: ["*.yaml"] for name in packages}},
)

"""Built-in recipes and configs as package data.

In a wheel this package holds ``datasets/*.yaml`` and ``configs/*/*.yaml``, copied at build time
from the top-level ``datasets/`` and ``configs/`` folders (the source of truth; see setup.py).
In a source checkout it is empty and :func:`bam.config.resource_dir` reads those folders directly.
"""

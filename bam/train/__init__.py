"""Trainer for BAM model roles (SPEC §3): seeded, resumable, AMP on CUDA, DDP under torchrun.

>>> from bam.train import TrainConfig, load_train_config, train_model
>>> card = train_model(load_train_config("synthetic"), Path("runs/data"), Path("runs/models/obj"), "obj")
"""

from __future__ import annotations

from bam.roles import check_role, role_names
from bam.train.config import TrainConfig, load_train_config
from bam.train.trainer import fit, train_model

__all__ = ["TrainConfig", "check_role", "fit", "load_train_config", "role_names", "train_model"]

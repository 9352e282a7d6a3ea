"""Model registry, built-in architectures and checkpoints (docs/architecture.md "Model contract").

>>> model = create_model("small_resnet", num_classes=10, image_size=64)
>>> model = load("runs/models/obj")   # eval mode, sha256 verified, model.card

Built-in archs register on import: ``small_resnet`` (synthetic default), ``resnet18``, ``resnet50``
(torchvision, DeepLIFT-safe) and ``iresnet`` (invertible, :mod:`bam.models.iresnet`).
"""

from __future__ import annotations

import bam.models.iresnet
import bam.models.irevnet
import bam.models.resnet
import bam.models.small  # noqa: F401  (registers "small_resnet")
from bam.models._registry import MODELS, ArchInfo, arch_info, create_model, list_models, register_model
from bam.models.checkpoint import ModelCard, find_models, load, read_card, save

__all__ = ["MODELS", "ArchInfo", "ModelCard", "arch_info", "create_model", "find_models", "list_models", "load",
           "read_card", "register_model", "save"]

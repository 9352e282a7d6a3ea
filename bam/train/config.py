"""Training configuration: a frozen dataclass loaded from ``configs/train/*.yaml`` + flag overrides."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bam.config import SEED_MAX, load_config, read_yaml, resolve_named, to_dict
from bam.errors import BamError, choices_error

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")
SELECTS = ("best", "last")
CACHES = ("auto", "memory", "stream")

#: Fields that do not change the trained weights: they may differ when resuming.
NON_RESULT_FIELDS = ("workers", "eval_batch_size", "cache", "cache_max_mb")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (besides data, role and device).

    Optimiser: SGD with Nesterov momentum (or AdamW); schedule: linear warm-up then cosine decay to
    zero, computed per step from the step index (so resuming needs no scheduler state).
    Augmentation keeps the BAM protocol: random horizontal flips of image (and mask) only, plus an
    optional random integer translation (``max_shift`` px, zero fill) of image and mask together.
    """

    arch: str = "small_resnet"
    #: extra factory arguments, e.g. widths, normalization ("centered", "imagenet", "paper", "none")
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    #: resize inside the model to this size (paper: 128 -> 224); none = the data's image size
    input_size: int | None = None
    #: ImageNet initialisation from the local torch hub cache (resnet18/resnet50 only; never downloads)
    pretrained: bool = False
    epochs: int = 8
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.5
    label_smoothing: float = 0.0
    hflip: bool = True
    max_shift: int = 0
    #: keep the epoch with the best val accuracy ("best") or the final one ("last")
    select: str = "best"
    seed: int = 0
    #: bf16 autocast and channels_last (CUDA only; ignored on CPU)
    amp: bool = True
    channels_last: bool = True
    #: channels_last on CPU too (with channels_last): ~10-15 % faster for the small synthetic CNNs
    #: with one thread (docs/invertible.md); off by default, so existing CPU runs are unchanged
    cpu_channels_last: bool = False
    eval_batch_size: int = 256
    #: train accuracy for the card is measured on at most this many (seeded) train images
    train_eval_max: int = 10000
    workers: int = 0
    #: "memory": decode the train/val subsets once into RAM; "stream": load every batch; "auto":
    #: memory when it fits in cache_max_mb
    cache: str = "auto"
    cache_max_mb: int = 2048

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("epochs", self.epochs >= 1, "an integer >= 1"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1"),
            ("eval_batch_size", self.eval_batch_size >= 1, "an integer >= 1"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "a finite number > 0"),
            ("momentum", 0 <= self.momentum < 1, "a number in [0, 1)"),
            ("weight_decay", self.weight_decay >= 0, "a number >= 0"),
            ("warmup_epochs", 0 <= self.warmup_epochs <= self.epochs, "a number in [0, epochs]"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "a number in [0, 1)"),
            ("max_shift", self.max_shift >= 0, "an integer >= 0"),
            ("workers", self.workers >= 0, "an integer >= 0"),
            ("train_eval_max", self.train_eval_max >= 0, "an integer >= 0"),
            ("cache_max_mb", self.cache_max_mb >= 0, "an integer >= 0"),
            ("seed", 0 <= self.seed <= SEED_MAX, f"an integer in 0..{SEED_MAX}"),
            ("input_size", self.input_size is None or 16 <= self.input_size <= 4096, "null or an integer in 16..4096"),
        ]
        for name, ok, accepted in checks:
            if not ok:
                raise BamError(f"train config {name}={getattr(self, name)!r} is invalid; accepted: {accepted}")
        for name, value, allowed in (("optimizer", self.optimizer, OPTIMIZERS), ("schedule", self.schedule, SCHEDULES),
                                     ("select", self.select, SELECTS), ("cache", self.cache, CACHES)):
            if value not in allowed:
                raise choices_error(f"train config {name}", value, allowed)
        object.__setattr__(self, "arch_kwargs", dict(self.arch_kwargs))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def result_settings(self) -> dict[str, Any]:
        """The fields that determine the trained weights (compared on resume)."""
        d = to_dict(self)
        for k in NON_RESULT_FIELDS:
            d.pop(k, None)
        return d


def load_train_config(source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
                      overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Load a TrainConfig from a built-in name (``configs/train/<name>.yaml``), a path or a mapping.

    An ``arch`` override that differs from the config's arch trains that arch with its own
    settings (:func:`config_for_arch`): the config made for it, ``<name>_<arch>.yaml`` beside the
    config, when there is one, else the config without its ``arch_kwargs``.
    """
    overrides = dict(overrides or {})
    arch = overrides.get("arch")
    if isinstance(source, (str, os.PathLike)):
        path = resolve_named(source, "configs/train", "train config")
        data = read_yaml(path)
        if arch is not None and data.get("arch", TrainConfig.arch) != arch:
            sibling = path.with_name(f"{path.stem}_{arch}{path.suffix}")
            if sibling.is_file():
                log.info("--arch %s: using %s (the config made for it) instead of %s", arch, sibling, path)
                data = read_yaml(sibling)
        return load_config(TrainConfig, config_for_arch(data, arch), overrides)
    if isinstance(source, Mapping):
        return load_config(TrainConfig, config_for_arch(source, arch), overrides)
    return load_config(TrainConfig, source, overrides)


def config_for_arch(data: Mapping[str, Any], arch: str | None) -> dict[str, Any]:
    """``data`` for training ``arch``: unchanged if it is the config's arch, else without
    ``arch_kwargs`` (they are one architecture's constructor arguments, e.g. small_resnet's
    widths, meaningless to another; every other field is architecture-independent)."""
    out = dict(data)
    if arch is not None and out.get("arch", TrainConfig.arch) != arch and out.pop("arch_kwargs", None):
        log.info("--arch %s differs from the config's arch %s: its arch_kwargs are dropped (%s defaults)",
                 arch, out.get("arch", TrainConfig.arch), arch)
    return out

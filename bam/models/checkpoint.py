"""Checkpoints: a directory with ``model.safetensors``, ``card.json`` (the :class:`ModelCard`) and,
for trained models, ``train_state.pt`` (used only by ``bam train --resume``) and ``config.yaml``.

The four are one verified set: the card records the sha256 of the weights, of the config and of
the training state (``weights_sha256``, ``config_sha256``, ``state_sha256``; the last two are empty
for a model saved by :func:`save` without training), and :func:`load` and ``bam models list``
(:func:`checkpoint_problem`) re-hash every file the card names, so the card, config or state of one
run beside the weights of another is refused. Loading never executes code: weights come from
safetensors; the card's architecture is checked against the weights file's header (shapes only,
the model built on the meta device) before the model is built, so a card with hostile sizes
allocates nothing. Every file is read inside the checkpoint folder's real path (a symlink that
leaves it is refused); the folder itself may be a link (a models directory of links to checkpoints).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bam import __version__
from bam._io import read_json, save_tensors, sha256_file, write_json
from bam._paths import confine
from bam.config import from_dict, to_dict
from bam.errors import BamError
from bam.models._header import check_card_fits
from bam.models._registry import create_model
from bam.models.protocols import is_invertible

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
STATE_FILE = "train_state.pt"
CONFIG_FILE = "config.yaml"


@dataclass(frozen=True)
class ModelCard:
    """What a checkpoint is: enough to rebuild the model and to judge what it learned."""

    arch: str
    role: str
    num_classes: int
    image_size: int
    arch_kwargs: Mapping[str, Any] = field(default_factory=dict)
    class_names: tuple[str, ...] = ()
    input_size: int | None = None
    #: pixel-unit normalisation done inside the model: {"name", "mean", "std"}
    normalization: Mapping[str, Any] = field(default_factory=dict)
    recipe: str = ""
    dataset_manifest_hash: str = ""
    seed: int = 0
    #: split/probe -> accuracy in [0, 1], e.g. "val", "train", "val_scene_only"
    accuracy: Mapping[str, float] = field(default_factory=dict)
    training_time_s: float = 0.0
    weights_sha256: str = ""
    #: sha256 of the checkpoint's config.yaml and train_state.pt ("" when it has none: not trained by bam)
    config_sha256: str = ""
    state_sha256: str = ""
    invertible: bool = False
    bam_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable form."""
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "card") -> ModelCard:
        """Build from a parsed ``card.json`` (unknown keys or bad types raise a BamError)."""
        return from_dict(cls, data, where)


def ckpt_file(ckpt_dir: str | os.PathLike[str], name: str) -> Path:
    """``ckpt_dir / name``, refused (BamError) when a symlink takes it outside the checkpoint folder."""
    return confine(ckpt_dir, Path(ckpt_dir) / name, "checkpoint file")


def read_card(ckpt_dir: str | os.PathLike[str]) -> ModelCard:
    """The model card of a checkpoint directory (BamError if missing or malformed)."""
    from bam._paths import require_dir

    path = ckpt_file(require_dir(ckpt_dir, "checkpoint dir", "a directory written by `bam train`"), CARD_FILE)
    if not path.is_file():
        raise BamError(f"no model card {path}: not a checkpoint directory (see `bam train --help` to train one)")
    data = read_json(path)
    if not isinstance(data, dict):
        raise BamError(f"malformed model card {path}: expected a JSON object")
    return ModelCard.from_dict(data, str(path))


def write_card(card: ModelCard, ckpt_dir: str | os.PathLike[str]) -> None:
    """Write ``card.json`` atomically."""
    write_json(ckpt_file(ckpt_dir, CARD_FILE), card.to_dict())


def save_weights(model: nn.Module, ckpt_dir: str | os.PathLike[str]) -> str:
    """Write ``model.safetensors`` (the full state dict) atomically; returns its sha256."""
    path = ckpt_file(ckpt_dir, WEIGHTS_FILE)
    # one metadata key only: safetensors orders several keys non-deterministically (hash changes)
    save_tensors(path, dict(model.state_dict()), metadata={"format": "pt"})
    return sha256_file(path)


def describe_model(model: nn.Module) -> dict[str, Any]:
    """Card fields read from a model instance: normalisation, input size, invertibility."""
    norm = getattr(model, "normalization", None)
    return {"normalization": dict(norm) if isinstance(norm, Mapping) else {},
            "input_size": getattr(model, "input_size", None),
            "invertible": bool(is_invertible(model))}


#: Values of arch kwargs added after cards were first written: a card without the key was made
#: with this value (``iresnet``'s ``squeeze`` was the pixel permutation before Haar became default).
LEGACY_ARCH_DEFAULTS: dict[str, dict[str, Any]] = {"iresnet": {"squeeze": "pixel"}}


def recorded_arch_kwargs(model: nn.Module, arch_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``arch_kwargs`` plus the resolved values the model insists on recording
    (``model.recorded_arch_kwargs``), so that a card never depends on a default that may change."""
    return {**dict(arch_kwargs), **dict(getattr(model, "recorded_arch_kwargs", None) or {})}


def save(model: nn.Module, ckpt_dir: str | os.PathLike[str], card: ModelCard) -> ModelCard:
    """Save weights and card; the returned card carries the weights' sha256 and model facts."""
    sha = save_weights(model, ckpt_dir)
    card = dataclasses.replace(card, weights_sha256=sha, arch_kwargs=recorded_arch_kwargs(model, card.arch_kwargs),
                               **describe_model(model))
    write_card(card, ckpt_dir)
    return card


def build_from_card(card: ModelCard) -> nn.Module:
    """An untrained model with the card's architecture (global RNG state is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        kwargs = {**LEGACY_ARCH_DEFAULTS.get(card.arch, {}), **dict(card.arch_kwargs)}
        return create_model(card.arch, num_classes=card.num_classes, image_size=card.image_size,
                            input_size=card.input_size, **kwargs)


def load(ckpt_dir: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """Load a checkpoint: model in eval mode on ``device`` with ``model.card`` set.

    Every file of the set must match the card (else BamError, e.g. "checksum mismatch ... (corrupt
    or edited)"), and the card's architecture must fit the weights file's header (checked on the
    meta device, before any allocation; else BamError naming the first mismatching tensor).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    ckpt_dir = Path(ckpt_dir)
    card = read_card(ckpt_dir)
    path = ckpt_file(ckpt_dir, WEIGHTS_FILE)
    if not path.is_file():
        raise BamError(f"weights file {path} is missing (card.json present): the checkpoint is incomplete")
    if not card.weights_sha256:
        raise BamError(f"model card {ckpt_dir / CARD_FILE} has no weights_sha256; cannot verify {path}")
    sha = sha256_file(path)
    if sha != card.weights_sha256:
        raise BamError(f"checksum mismatch for {path}: card says {card.weights_sha256[:12]}..., file is "
                       f"{sha[:12]}... (corrupt or edited)")
    problem = set_problem(ckpt_dir, card)
    if problem:
        raise BamError(f"checkpoint {ckpt_dir} is not one verified set: {problem}")
    check_card_fits(path, lambda: build_from_card(card), card.arch)
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise BamError(f"cannot read weights {path}: {exc}") from None
    model = build_from_card(card)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise BamError(f"weights {path} do not fit arch {card.arch!r}: {first}") from None
    from bam._device import resolve_device

    model = model.to(resolve_device(str(device)) if isinstance(device, str) else device)
    model.eval()
    model.card = card  # type: ignore[assignment]
    return model


def find_models(root: str | os.PathLike[str]) -> list[tuple[Path, ModelCard]]:
    """All checkpoints under ``root`` (``root`` itself and any subdirectory), sorted by path.

    Evaluation picks models by ``(card.role, card.invertible)``, never by folder name.
    """
    from bam._paths import require_dir

    root = require_dir(root, "models directory", "a folder of checkpoints written by `bam train`")
    return [(p.parent, read_card(p.parent)) for p in sorted(root.rglob(CARD_FILE))]


def set_problem(ckpt_dir: str | os.PathLike[str], card: ModelCard) -> str:
    """Why config.yaml or train_state.pt do not belong with the card ("" when each file the card
    records a sha256 for is present and matches it)."""
    for name, want in ((CONFIG_FILE, card.config_sha256), (STATE_FILE, card.state_sha256)):
        if not want:
            continue
        path = ckpt_file(ckpt_dir, name)
        if not path.is_file():
            return f"{name} missing (the card records its sha256)"
        if sha256_file(path) != want:
            return f"{name} does not match the card's sha256 (from another run, or edited)"
    return ""


def checkpoint_problem(ckpt_dir: str | os.PathLike[str], card: ModelCard) -> str:
    """Why the checkpoint cannot be trusted ("" when its weights, config and state match the card and
    no file leaves its folder through a symlink)."""
    try:
        path = ckpt_file(ckpt_dir, WEIGHTS_FILE)
        if not card.weights_sha256:
            return "card has no weights_sha256"
        if not path.is_file():
            return f"{WEIGHTS_FILE} missing"
        if sha256_file(path) != card.weights_sha256:
            return f"{WEIGHTS_FILE} does not match the card's sha256 (corrupt or edited)"
        return set_problem(ckpt_dir, card)
    except BamError as exc:
        return str(exc)


def scan_models(root: str | os.PathLike[str]) -> list[tuple[Path, ModelCard | None, str]]:
    """Every checkpoint folder under ``root`` with its card (None if unreadable) and its problem
    ("" when the card reads and every file matches its hash): for listings that must show all."""
    from bam._paths import require_dir

    root = require_dir(root, "models directory", "a folder of checkpoints written by `bam train`")
    out: list[tuple[Path, ModelCard | None, str]] = []
    for p in sorted(root.rglob(CARD_FILE)):
        try:
            card = read_card(p.parent)
        except BamError as exc:
            out.append((p.parent, None, f"unreadable card: {exc}"))
            continue
        out.append((p.parent, card, checkpoint_problem(p.parent, card)))
    return out


def check_trained_on(card: ModelCard, manifest_hash: str, model: str) -> None:
    """BamError when the model ``model`` (its path, for the message) was trained on another
    dataset build than the one with ``manifest_hash`` (shared by explain and evaluate)."""
    got = str(card.dataset_manifest_hash)
    if not got:
        raise BamError(f"model {model} has no dataset_manifest_hash in its card, so it cannot be matched to the "
                       f"data (manifest {manifest_hash[:16]}...); retrain it with `bam train` on this dataset")
    if got != manifest_hash:
        raise BamError(f"model {model} was trained on dataset manifest {got[:16]}..., "
                       f"but the data has manifest {manifest_hash[:16]}... (full: {got} vs {manifest_hash}); "
                       "use the dataset it was trained on or retrain it")

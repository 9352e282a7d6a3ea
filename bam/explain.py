"""``bam explain`` as a library call: attribution heatmaps of dataset images, as one PNG grid.

>>> explain("runs/data", "runs/models/obj", ExplainConfig(methods=("gradient", "gradcam")), "grid.png")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bam.config import Validated, check_seed, checked
from bam.errors import BamError

#: at most this many rows in one figure (each row is one image x every method)
MAX_IMAGES = 64


@dataclass(frozen=True)
class ExplainConfig(Validated):
    """Which methods, on how many images of which subset/split, seeded."""

    methods: tuple[str, ...] = ("gradient", "integrated_gradients", "gradcam")
    images: int = checked(4, ge=1, le=MAX_IMAGES)
    subset: str = "obj"
    split: str = "val"
    micro_batch: int = checked(0, ge=0, note="0 = auto")
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.methods:
            raise BamError("no method to explain; accepted: one or more method names")
        check_seed(self.seed)


@dataclass(frozen=True)
class ExplainResult:
    """Where the grid went and what it shows."""

    out: Path
    images: int
    methods: tuple[str, ...]


def _label(names: list[str], k: int) -> str:
    """The class name of label ``k`` (its number when unknown)."""
    return names[k] if 0 <= k < len(names) else str(k)


def explain(data_dir: str | os.PathLike[str], model_dir: str | os.PathLike[str], config: ExplainConfig,
            out: str | os.PathLike[str], *, device: str = "auto", progress: bool = False) -> ExplainResult:
    """Rows = seeded random images of the subset, columns = the input and each method's map (as the metrics
    see it, SPEC §4.1), object mask outlined; every method attributes the model's predicted class."""
    import torch

    from bam._device import resolve_device
    from bam._progress import progress_bar
    from bam.data import open_dataset
    from bam.methods import attribute, get_info
    from bam.methods._figure import display_maps, explanation_grid
    from bam.models.checkpoint import check_trained_on, load, read_card

    infos = [get_info(m) for m in config.methods]  # unknown names fail before any work
    dev = resolve_device(device)
    data = open_dataset(data_dir)
    sub = data.subset(config.subset, config.split)
    if len(sub) == 0:
        raise BamError(f"subset {config.subset!r} split {config.split!r} is empty; accepted: a non-empty subset/split")
    check_trained_on(read_card(model_dir), data.manifest_hash, str(model_dir))
    model = load(model_dir, device=dev)
    card = read_card(model_dir)
    gen = torch.Generator().manual_seed(config.seed)
    idx = torch.randperm(len(sub), generator=gen)[: min(config.images, len(sub))].sort().values
    images, labels, masks = sub.load_batch(idx)
    images = images.to(dev)
    with torch.no_grad():
        pred = model(images).argmax(1)
    maps = {}
    for info in progress_bar(infos, desc="methods", enabled=progress, unit="method"):
        params: dict[str, int] = {"micro_batch": config.micro_batch}
        if info.stochastic:
            params["seed"] = config.seed
        maps[info.name] = display_maps(attribute(info.name, model, images, pred, **params)).cpu()
    names = list(card.class_names)
    label_names = data.object_classes if sub.label_kind == "object" else data.scene_classes
    rows = [f"{sub.table['image_id'].iloc[int(i)]}\nlabel {_label(label_names, int(y))}\npred {_label(names, int(p))}"
            for i, y, p in zip(idx, labels, pred.cpu())]
    explanation_grid(out, images.cpu(), masks, maps, rows)
    return ExplainResult(out=Path(out), images=len(idx), methods=tuple(maps))

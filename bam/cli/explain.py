"""``bam explain``: heatmaps of attribution methods over dataset images, as one PNG grid."""

from __future__ import annotations

from pathlib import Path

import click

from bam.cli._common import common_options, device_option, progress, seed_option

#: at most this many rows in one figure (each row is one image x every method)
MAX_IMAGES = 64


@click.command("explain")
@common_options
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A built dataset directory (bam build-data).")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="A checkpoint directory (bam train).")
@click.option("--method", "methods", multiple=True, default=("gradient", "integrated_gradients", "gradcam"),
              show_default=True, help="Method name (see `bam methods list`) or package.module:callable; repeatable.")
@click.option("--images", "n_images", type=click.IntRange(1, MAX_IMAGES), default=4, show_default=True,
              help=f"Number of images (rows), 1..{MAX_IMAGES}.")
@click.option("--subset", default="obj", show_default=True, help="Dataset subset to draw images from.")
@click.option("--split", type=click.Choice(["train", "val"]), default="val", show_default=True, help="Split.")
@click.option("--micro-batch", type=click.IntRange(min=0), default=0, show_default=True,
              help="Rows per forward/backward (0 = auto).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output PNG.")
@seed_option()
@device_option
def command(data_dir: Path, model_dir: Path, methods: tuple[str, ...], n_images: int, subset: str, split: str,
            micro_batch: int, out: Path, seed: int, device: str) -> None:
    """Draw attribution heatmaps: rows = images, columns = input + methods, object mask outlined.

    Each method attributes the model's predicted class (as the BAM metrics do) and is shown the way
    the metrics see it: positive part summed over channels, scaled to its 99th percentile.
    """
    import torch

    from bam._device import resolve_device
    from bam._progress import progress_bar
    from bam.data import open_dataset
    from bam.errors import BamError
    from bam.methods import attribute, get_info
    from bam.methods._figure import display_maps, explanation_grid
    from bam.models.checkpoint import check_trained_on, load, read_card

    infos = [get_info(m) for m in methods]  # unknown names fail before any work
    dev = resolve_device(device)
    data = open_dataset(data_dir)
    sub = data.subset(subset, split)
    if len(sub) == 0:
        raise BamError(f"subset {subset!r} split {split!r} is empty; accepted: a non-empty subset/split")
    check_trained_on(read_card(model_dir), data.manifest_hash, str(model_dir))
    model = load(model_dir, device=dev)
    card = getattr(model, "card", None)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(sub), generator=gen)[: min(n_images, len(sub))].sort().values
    images, labels, masks = sub.load_batch(idx)
    images = images.to(dev)
    with torch.no_grad():
        pred = model(images).argmax(1)
    maps = {}
    for info in progress_bar(infos, desc="methods", enabled=progress(), unit="method"):
        params = {"micro_batch": micro_batch}
        if info.stochastic:
            params["seed"] = seed
        attr = attribute(info.name, model, images, pred, **params)
        maps[info.name] = display_maps(attr).cpu()
    names = list(card.class_names) if card is not None and getattr(card, "class_names", None) else []
    label_names = data.object_classes if sub.label_kind == "object" else data.scene_classes

    def cls(names_: list[str], k: int) -> str:
        return names_[k] if 0 <= k < len(names_) else str(k)

    rows = [f"{sub.table['image_id'].iloc[int(i)]}\nlabel {cls(label_names, int(y))}\npred {cls(names, int(p))}"
            for i, y, p in zip(idx, labels, pred.cpu())]
    explanation_grid(out, images.cpu(), masks, maps, rows)
    click.echo(f"wrote {out} ({len(idx)} images x {len(maps)} methods)")

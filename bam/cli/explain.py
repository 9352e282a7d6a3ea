"""``bam explain``: heatmaps of attribution methods over dataset images, as one PNG grid."""

from __future__ import annotations

from pathlib import Path

import click

from bam.cli._common import common_options, device_option, progress, seed_option
from bam.explain import MAX_IMAGES


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
    from bam.explain import ExplainConfig, explain

    config = ExplainConfig(methods=methods, images=n_images, subset=subset, split=split, micro_batch=micro_batch,
                           seed=seed)
    res = explain(data_dir, model_dir, config, out, device=device, progress=progress())
    click.echo(f"wrote {res.out} ({res.images} images x {len(res.methods)} methods)")

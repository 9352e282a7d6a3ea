"""``bam data verify|show``: check a built dataset against its manifest; draw sample grids."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bam.cli._common import common_options, progress, seed_option


@click.group("data")
@common_options
def group() -> None:
    """Verify a built dataset or draw sample grids."""


@group.command("verify")
@click.argument("directory", type=click.Path(path_type=Path))
@common_options
def verify(directory: Path) -> None:
    """Re-hash every file of DIRECTORY; exit 1 and list the problems on any mismatch."""
    from bam.data.verify import verify_dataset

    problems = verify_dataset(directory, progress=progress())
    if problems:
        for p in problems[:50]:
            click.echo(p, err=True)
        if len(problems) > 50:
            click.echo(f"... and {len(problems) - 50} more", err=True)
        click.echo(f"FAILED: {len(problems)} problem(s) in {directory}", err=True)
        sys.exit(1)
    click.echo(f"OK: every file of {directory} matches its manifest")


@group.command("show")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--subset", default="obj", show_default=True,
              help="obj, scene, scene_only, common_in_scene, iir_scene or commonality-K.")
@click.option("--split", type=click.Choice(["train", "val", "all"]), default="val", show_default=True)
@click.option("--n", "count", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Number of samples (1..256).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output PNG.")
@seed_option(0)
@common_options
def show(directory: Path, subset: str, split: str, count: int, out: Path, seed: int) -> None:
    """Write a PNG grid of samples with the object mask outlined in red."""
    from bam.data import open_dataset
    from bam.data.show import show_samples

    data = open_dataset(directory)
    show_samples(data, out, subset=subset, split=None if split == "all" else split, n=count, seed=seed)
    click.echo(f"wrote {out}")

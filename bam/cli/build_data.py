"""``bam build-data``: build a BAM dataset from a recipe (SPEC §2)."""

from __future__ import annotations

from pathlib import Path

import click

from bam.cli._common import common_options, progress, seed_option


def _recipe_names() -> str:
    """Names of the built-in recipes (for the help text)."""
    from bam.config import resource_names

    return ", ".join(resource_names("datasets")) or "(none)"


@click.command("build-data")
@click.option("--recipe", default="synthetic", show_default=True,
              help=f"Built-in recipe name ({_recipe_names()}) or a path to a recipe .yaml.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Output directory (resumed if it holds an interrupted build of the same recipe and seed).")
@seed_option(0)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes (results are identical for any value).")
@click.option("--coco-images", type=click.Path(path_type=Path), default=None,
              help="COCO image folder (e.g. train2017/), for recipes with object_source: coco.")
@click.option("--coco-annotations", type=click.Path(path_type=Path), default=None,
              help="COCO instances JSON (e.g. annotations/instances_train2017.json).")
@click.option("--scenes", type=click.Path(path_type=Path), default=None,
              help="MiniPlaces root (images/train/<letter>/<class>/...) or a folder of <class>/ folders.")
@click.option("--allow-fewer", is_flag=True, help="Build with fewer instances per class when a source runs short.")
@click.option("--export-composites", is_flag=True, help="Also write every composite as composites/<image_id>.png.")
@common_options
def command(recipe: str, out: Path, seed: int, workers: int, coco_images: Path | None,
            coco_annotations: Path | None, scenes: Path | None, allow_fewer: bool, export_composites: bool) -> None:
    """Build a BAM dataset: scenes, object cut-outs, placements, subset tables and a manifest."""
    from bam.data import BuildOptions, SourceInputs, build_dataset, load_recipe

    rec = load_recipe(recipe)
    inputs = SourceInputs(coco_images=coco_images, coco_annotations=coco_annotations, scenes=scenes)
    options = BuildOptions(inputs=inputs, workers=workers, allow_fewer=allow_fewer,
                           export_composites=export_composites)
    res = build_dataset(rec, out, seed=seed, options=options, progress=progress())
    state = "already complete, nothing changed" if res.up_to_date else f"built in {res.seconds:.1f} s"
    click.echo(f"{res.root}: recipe {rec.name} seed {seed}, {res.counts['composites']} composites ({state})")
    click.echo(f"manifest_hash {res.manifest_hash}")

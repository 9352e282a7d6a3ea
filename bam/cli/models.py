"""``bam models``: list trained checkpoints and their model cards."""

from __future__ import annotations

from pathlib import Path

import click

from bam.cli._common import common_options


@click.group("models")
@common_options
def group() -> None:
    """List trained models and their model cards."""


@group.command("list")
@click.argument("root", type=click.Path(path_type=Path, file_okay=False))
@common_options
def list_cmd(root: Path) -> None:
    """Print every checkpoint under ROOT as a table (role, arch, accuracy, probes, dataset, path)."""
    from bam.models.checkpoint import find_models

    found = find_models(root)
    if not found:
        click.echo(f"no models under {root} (train some with `bam train`)")
        return
    rows = []
    for path, card in found:
        probes = ", ".join(f"{k} {v:.3f}" for k, v in sorted(card.accuracy.items()) if k not in ("val", "train"))
        val = card.accuracy.get("val")
        rows.append([card.role, card.arch, "yes" if card.invertible else "no",
                     "-" if val is None else f"{val:.4f}", probes or "-", card.dataset_manifest_hash[:12] or "-",
                     str(path)])
    click.echo(format_table(["role", "arch", "invertible", "val acc", "probes", "dataset", "path"], rows))


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned plain-text table with a header rule."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

"""``bam models``: list trained checkpoints and their model cards."""

from __future__ import annotations

import sys
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
    """Print every checkpoint under ROOT as a table (role, arch, accuracy, probes, dataset, weights
    check, path). The weights of each are re-hashed against its card: a checkpoint that fails is
    marked and the command exits 1."""
    from bam.models.checkpoint import scan_models

    found = scan_models(root)
    if not found:
        click.echo(f"no models under {root} (see `bam train --help` to train one)")
        return
    rows = []
    for path, card, problem in found:
        check = "ok" if not problem else "FAILED"
        if card is None:
            rows.append(["?", "?", "?", "-", "-", "-", check, str(path)])
            continue
        probes = ", ".join(f"{k} {v:.3f}" for k, v in sorted(card.accuracy.items()) if k not in ("val", "train"))
        val = card.accuracy.get("val")
        rows.append([card.role, card.arch, "yes" if card.invertible else "no",
                     "-" if val is None else f"{val:.4f}", probes or "-", card.dataset_manifest_hash[:12] or "-",
                     check, str(path)])
    click.echo(format_table(["role", "arch", "invertible", "val acc", "probes", "dataset", "weights", "path"], rows))
    bad = [(path, problem) for path, _, problem in found if problem]
    if bad:
        first = f"{bad[0][0]}: {bad[0][1]}"
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        click.echo(f"error: {len(bad)} of {len(found)} checkpoint(s) failed verification: {first}{more}", err=True)
        sys.exit(1)


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned plain-text table with a header rule."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)

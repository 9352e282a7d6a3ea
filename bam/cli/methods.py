"""``bam methods list`` / ``bam methods show NAME``: the method registry, read from MethodInfo."""

from __future__ import annotations

import json
from typing import Any

import click

from bam.cli._common import common_options


def _fmt_defaults(defaults: Any) -> str:
    """``k=v`` pairs of a method's paper defaults ("-" when none)."""
    return ", ".join(f"{k}={v}" for k, v in defaults.items()) or "-"


def _clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, marked with "..." when cut (full text: ``bam methods show``)."""
    return text if len(text) <= width else text[: width - 3] + "..."


def _table(rows: list[list[str]], header: list[str]) -> str:
    """A plain left-aligned text table."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@click.group("methods")
@common_options
def group() -> None:
    """List attribution methods and their defaults (the `paper` configuration)."""


@group.command("list")
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def list_cmd(as_json: bool) -> None:
    """Print every registered method: name, title, family, requires, defaults, passes per image."""
    from bam.methods import get_info, list_methods

    infos = [get_info(n) for n in list_methods()]
    if as_json:
        click.echo(json.dumps([{"name": i.name, "title": i.title, "family": i.family, "requires": list(i.requires),
                                "defaults": dict(i.defaults), "passes": i.passes(i.defaults),
                                "stochastic": i.stochastic} for i in infos], indent=2, default=str))
        return
    rows = [[i.name, i.title, i.family, ",".join(i.requires) or "-", _clip(_fmt_defaults(i.defaults), 60),
             str(i.passes(i.defaults))] for i in infos]
    click.echo(_table(rows, ["name", "title", "family", "requires", "defaults", "passes/image"]))
    click.echo("\nPlug-ins: --method package.module:callable (or entry-point group 'bam.methods').")


@group.command("show")
@common_options
@click.argument("name")
def show_cmd(name: str) -> None:
    """Show one method (a registered name or a plug-in package.module:callable) in full."""
    from bam.methods import get_info

    info = get_info(name)
    fields = [
        ("name", info.name), ("title", info.title), ("family", info.family), ("paper", info.paper),
        ("description", info.description or "-"), ("defaults", _fmt_defaults(info.defaults)),
        ("requires", ", ".join(info.requires) or "-"),
        ("stochastic", "yes (takes --seed)" if info.stochastic else "no"),
        ("passes/image", str(info.passes(info.defaults))), ("expands batch", "yes" if info.expands_batch else "no"),
        ("uses model", "yes" if info.uses_model else "no"),
    ]
    width = max(len(k) for k, _ in fields)
    for key, value in fields:
        click.echo(f"{key.ljust(width)}  {value}")

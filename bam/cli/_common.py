"""Options and helpers shared by every subcommand (-v/-q/--debug, --seed, logging)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class Settings:
    """Verbosity state carried on the click context (root options and per-command ones merge)."""

    verbose: int = 0
    quiet: bool = False
    debug: bool = False

    @property
    def progress(self) -> bool:
        """Show tqdm progress bars (library calls take this as an explicit argument)."""
        return not self.quiet


def settings() -> Settings:
    ctx = click.get_current_context(silent=True)
    root = ctx.find_root() if ctx else None
    if root is None:
        return Settings()
    if not isinstance(root.obj, Settings):
        root.obj = Settings()
    return root.obj


def configure_logging(s: Settings) -> None:
    level = logging.WARNING if s.quiet else (logging.DEBUG if s.verbose > 0 or s.debug else logging.INFO)
    logging.basicConfig(level=level, format="%(message)s", force=True)
    logging.getLogger("bam").setLevel(level)


def _set(attr: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def cb(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        s = settings()
        if attr == "verbose":
            s.verbose += value or 0
        elif value:
            setattr(s, attr, True)
        configure_logging(s)
        return value

    return cb


def common_options(f: F) -> F:
    """-v/--verbose, -q/--quiet and --debug, accepted on the root and on every subcommand."""
    f = click.option("--debug", is_flag=True, expose_value=False, is_eager=True, callback=_set("debug"),
                     help="Show full tracebacks on errors.")(f)
    f = click.option("-q", "--quiet", is_flag=True, expose_value=False, is_eager=True, callback=_set("quiet"),
                     help="Only warnings and errors; no progress bars.")(f)
    f = click.option("-v", "--verbose", count=True, expose_value=False, is_eager=True, callback=_set("verbose"),
                     help="More log output.")(f)
    return f


def seed_option(default: int = 0) -> Callable[[F], F]:
    return click.option("--seed", type=int, default=default, show_default=True, help="Random seed.")


def device_option(f: F) -> F:
    return click.option("--device", default="auto", show_default=True,
                        help="auto, cpu, cuda or cuda:N.")(f)


def progress() -> bool:
    """Whether the current command should show progress bars."""
    return settings().progress

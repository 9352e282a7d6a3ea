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
        """Show progress (bam._progress: tqdm on a terminal, one line per stage otherwise); library
        calls take this as an explicit argument."""
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


class SeedType(click.ParamType):
    """An integer seed in 0..2**32-1 (what numpy and torch both accept), checked while parsing,
    i.e. before a command writes anything."""

    name = "seed"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        """The seed as an int; a one-line usage error naming the value otherwise."""
        from bam.config import SEED_MAX

        if isinstance(value, int) and not isinstance(value, bool):
            seed = value
        else:
            try:
                seed = int(str(value).strip(), 10)
            except ValueError:
                self.fail(f"{value!r} is not an integer; accepted: an integer in 0..{SEED_MAX}", param, ctx)
        if not 0 <= seed <= SEED_MAX:
            self.fail(f"{seed} is out of range; accepted: an integer in 0..{SEED_MAX}", param, ctx)
        return seed


SEED = SeedType()


def seed_option(default: int | None = 0, help: str = "Random seed (0..2**32-1).") -> Callable[[F], F]:
    """``--seed`` (0..2**32-1), validated before the command runs (None: the config's seed)."""
    return click.option("--seed", type=SEED, default=default, show_default=default is not None, help=help)


def device_option(f: F) -> F:
    return click.option("--device", default="auto", show_default=True,
                        help="auto, cpu, cuda or cuda:N.")(f)


def progress() -> bool:
    """Whether the current command should show progress bars."""
    return settings().progress

"""Root ``bam`` command. Subcommands are imported lazily so that ``bam --help`` is fast."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from typing import Any

import click

from bam import __version__
from bam._threads import configure_environment
from bam.cli._common import common_options, configure_logging, settings
from bam.errors import BamError

#: name -> ("module:attribute", short help) of each subcommand (one module per subcommand).
COMMANDS: dict[str, tuple[str, str]] = {
    "build-data": ("bam.cli.build_data:command",
                   "Build a BAM dataset (synthetic, paper COCO+MiniPlaces, or a recipe)."),
    "data": ("bam.cli.data:group", "Verify a built dataset or draw sample grids."),
    "train": ("bam.cli.train:command", "Train one model role (obj, scene, scene_only, commonality-K)."),
    "models": ("bam.cli.models:group", "List trained models and their model cards."),
    "methods": ("bam.cli.methods:group", "List attribution methods and their defaults."),
    "explain": ("bam.cli.explain:command", "Draw attribution heatmaps (methods x images) to a PNG."),
    "evaluate": ("bam.cli.evaluate:command", "Compute the BAM metrics for attribution methods; write CSV reports."),
    "report": ("bam.cli.report:command", "Write a self-contained HTML report for an evaluation."),
    "compare": ("bam.cli.compare:command", "Compare two results.csv files; fail on a regression (for CI)."),
    "run": ("bam.cli.run:command", "End to end: build -> train -> evaluate -> report."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target[0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        """Like click's main, but a usage error (bad option, bad value, missing argument) is the
        same one line ``error: ...`` as every other bad input, with click's exit code (2)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.ClickException as exc:
            if isinstance(exc, _NO_ARGS_HELP):  # `bam` or `bam data` alone: click prints the help
                exc.show()
                sys.exit(exc.exit_code)
            _fail(usage_message(exc), exc.exit_code)
        except click.exceptions.Abort:  # an interrupt while click was parsing or prompting
            _interrupted()
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BamError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _interrupted()
        except OSError as exc:
            _fail(os_error_message(exc), 1)
        except Exception as exc:
            _fail(f"internal error: {type(exc).__name__}: {exc} (re-run with --debug for the traceback)", 1)


#: click >= 8.2 raises this (a UsageError) for a group called without a subcommand.
_NO_ARGS_HELP: tuple[type[BaseException], ...] = tuple(
    t for t in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if isinstance(t, type))


def usage_message(exc: click.exceptions.ClickException) -> str:
    """One line for a click usage error, pointing at the command's --help."""
    text = " ".join(exc.format_message().split()).rstrip(".")
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        text += f" (see `{ctx.command_path} --help`)"
    return text


def os_error_message(exc: OSError) -> str:
    """One line for an OS error: what went wrong and the file it concerns."""
    what = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is not None:
        target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
        return f"{what}: {target}"
    return what


def _interrupted() -> None:
    """The Ctrl-C exit: close progress bars first so that the line is never glued onto one."""
    from bam._progress import close_open_bars

    if close_open_bars() == 0 and sys.stderr.isatty():
        click.echo("", err=True)  # no bar ended the line: end the terminal's ^C echo
    _fail("interrupted; re-run the same command to resume", 130)


def _fail(message: str, code: int) -> None:
    if settings().debug:
        traceback.print_exc()
    click.echo(f"error: {' '.join(message.splitlines())}", err=True)
    sys.exit(code)


@click.group("bam", cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="bam")
@common_options
def cli() -> None:
    """bam: benchmark attribution methods with relative feature importance (BAM).

    \b
    Typical pipeline:
      bam build-data --recipe synthetic --out runs/data
      bam train --data runs/data --role obj --arch small_resnet --out runs/models/obj
      bam evaluate --data runs/data --models runs/models --out runs/eval
      bam report runs/eval
    or everything at once on the synthetic default:  bam run --out runs/demo
    """
    configure_logging(settings())


def main() -> None:
    configure_environment(os.environ)  # thread defaults (bam._threads): must run before torch is imported
    logging.captureWarnings(True)
    cli(prog_name="bam")


if __name__ == "__main__":
    main()

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
    "build-data": ("bam.cli.build_data:command", "Build a BAM dataset (synthetic, paper COCO+MiniPlaces, or a recipe)."),
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

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except BamError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted; re-run the same command to resume", 130)
        except OSError as exc:
            _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), 1)
        except Exception as exc:
            _fail(f"internal error: {type(exc).__name__}: {exc} (re-run with --debug for the traceback)", 1)


def _fail(message: str, code: int) -> None:
    if settings().debug:
        traceback.print_exc()
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
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

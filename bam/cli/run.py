"""``bam run``: the whole pipeline (build -> train -> evaluate -> report), every stage resumable."""

from __future__ import annotations

from pathlib import Path

import click

from bam.cli._common import common_options, device_option, progress, seed_option
from bam.pipeline import STAGES


@click.command("run")
@click.option("--config", "config_name", default="synthetic", show_default=True,
              help="Run config: a built-in name (synthetic, synthetic_iresnet, ...) or a path to a .yaml file.")
@click.option("--out", "out_dir", default=Path("runs/demo"), show_default=True,
              type=click.Path(path_type=Path, file_okay=False),
              help="Output root: data/, models/<role>/, eval/ (results.csv, report.html).")
@click.option("--stages", default=",".join(STAGES), show_default=True,
              help=f"Comma-separated subset of {', '.join(STAGES)} to run (in pipeline order).")
@seed_option(None, "Override the run config's seed (data, training, evaluation; 0..2**32-1).")
@click.option("--repeats", type=click.IntRange(1, 100), default=None,
              help="Train and evaluate N independent model sets (seeds s..s+N-1; default: the config's, 1) and "
                   "summarise how stable the method rankings are (OUT/summary).")
@click.option("--redraw-data/--same-data", default=None,
              help="With --repeats: build the data again for every seed (default: one build).")
@device_option
@common_options
def command(config_name: str, out_dir: Path, stages: str, seed: int | None, repeats: int | None,
            redraw_data: bool | None, device: str) -> None:
    """Run build -> train -> evaluate -> report end to end (default: the synthetic CPU demo).

    Every stage skips finished work, so an interrupted run resumes where it stopped. Exit status 1
    when a method failed on every image (the report is still written).
    """
    from bam.config import load_config, resolve_named
    from bam.errors import BamError
    from bam.pipeline import RunConfig, parse_stages, run_pipeline

    wanted = parse_stages(stages)
    cfg = load_config(RunConfig, resolve_named(config_name, "configs/run", "run config"),
                      {"seed": seed, "repeats": repeats, "redraw_data": redraw_data})
    res = run_pipeline(cfg, out_dir, stages=wanted, device=device, progress=progress(), echo=click.echo)
    click.echo(f"done in {res.seconds:.0f} s; results: {res.results}; report: {res.report}")
    if res.failed_everywhere:
        name, msg = res.failed_everywhere[0]
        raise BamError(f"method {name!r} failed on every image: {msg}; its rows are empty, every other method's "
                       f"results are complete", exit_code=1)

"""``bam run``: the whole pipeline (build -> train -> evaluate -> report), every stage resumable."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import click

from bam.cli._common import common_options, device_option, progress

STAGES = ("build", "train", "evaluate", "report")


@dataclass(frozen=True)
class RunConfig:
    """What `bam run` does: a recipe, the training configs per model family, an eval config."""

    recipe: str = "synthetic"
    seed: int = 0
    train_config: str = "synthetic"
    commonality_config: str | None = "synthetic_commonality"
    invertible_config: str | None = None
    eval_config: str = "default"


def training_plan(cfg: RunConfig, num_scenes: int) -> list[tuple[str, str, str]]:
    """(checkpoint subfolder, role, train config) for every model the metrics need."""
    plan = [(r, r, cfg.train_config) for r in ("obj", "scene", "scene_only")]
    if cfg.commonality_config:
        plan += [(f"commonality-{k}", f"commonality-{k}", cfg.commonality_config) for k in range(1, num_scenes + 1)]
    if cfg.invertible_config:
        plan += [(f"iresnet-{r}", r, cfg.invertible_config) for r in ("obj", "scene", "scene_only")]
    return plan


@click.command("run")
@click.option("--config", "config_name", default="synthetic", show_default=True,
              help="Run config: a name in configs/run/ or a path to a .yaml file.")
@click.option("--out", "out_dir", default=Path("runs/demo"), show_default=True,
              type=click.Path(path_type=Path, file_okay=False),
              help="Output root: data/, models/<role>/, eval/ (results.csv, report.html).")
@click.option("--stages", default=",".join(STAGES), show_default=True,
              help=f"Comma-separated subset of {', '.join(STAGES)} to run (in pipeline order).")
@click.option("--seed", type=int, default=None, help="Override the run config's seed (data, training, evaluation).")
@device_option
@common_options
@click.pass_context
def command(ctx: click.Context, config_name: str, out_dir: Path, stages: str, seed: int | None, device: str) -> None:
    """Run build -> train -> evaluate -> report end to end (default: the synthetic CPU demo).

    Every stage skips finished work, so an interrupted run resumes where it stopped.
    """
    from bam.config import load_config, resolve_named, save_config
    from bam.errors import BamError

    wanted = [s.strip() for s in stages.split(",") if s.strip()]
    bad = [s for s in wanted if s not in STAGES]
    if bad or not wanted:
        raise BamError(f"unknown stage(s) {', '.join(bad) or '(none)'} in --stages {stages!r}; accepted: {', '.join(STAGES)}")
    cfg = load_config(RunConfig, resolve_named(config_name, "configs/run", "run config"), {"seed": seed})
    data_dir, models_dir, eval_dir = out_dir / "data", out_dir / "models", out_dir / "eval"
    save_config(cfg, out_dir / "run.yaml")
    t0 = time.perf_counter()

    if "build" in wanted:
        from bam.data import build_dataset, load_recipe

        click.echo(f"[build] recipe {cfg.recipe} -> {data_dir}")
        res = build_dataset(load_recipe(cfg.recipe), data_dir, seed=cfg.seed, progress=progress())
        click.echo(f"[build] {res.counts['composites']} composites, manifest {res.manifest_hash[:12]} "
                   f"({'up to date' if res.up_to_date else f'{res.seconds:.0f} s'})")

    if "train" in wanted:
        from bam.data import open_dataset
        from bam.train import load_train_config, train_model

        num_scenes = len(open_dataset(data_dir).scene_classes)
        for sub, role, train_cfg in training_plan(cfg, num_scenes):
            tc = load_train_config(train_cfg, {"seed": cfg.seed})
            t = time.perf_counter()
            card = train_model(tc, data_dir, models_dir / sub, role, device=device, progress=progress(), resume=True)
            click.echo(f"[train] {sub:<16} {card.arch:<13} val acc {card.accuracy.get('val', float('nan')):.3f} "
                       f"({time.perf_counter() - t:.0f} s)")

    if "evaluate" in wanted:
        from bam.cli.evaluate import command as evaluate_cmd

        click.echo(f"[evaluate] config {cfg.eval_config} -> {eval_dir}")
        ctx.invoke(evaluate_cmd, data_dir=data_dir, models_dir=models_dir, config_name=cfg.eval_config,
                   out_dir=eval_dir, seed=cfg.seed, device=device)

    if "report" in wanted:
        from bam.cli.report import command as report_cmd

        ctx.invoke(report_cmd, results_dir=eval_dir)

    click.echo(f"done in {time.perf_counter() - t0:.0f} s; results: {eval_dir / 'results.csv'}; "
               f"report: {eval_dir / 'report.html'}")

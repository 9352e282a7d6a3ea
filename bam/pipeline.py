"""The whole pipeline, build -> train -> evaluate -> report, every stage resumable (``bam run``).

>>> from bam.pipeline import RunConfig, run_pipeline
>>> run_pipeline(RunConfig(), "runs/demo")      # the synthetic CPU demo
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bam.config import check_seed
from bam.errors import BamError
from bam.roles import BASE_ROLES, commonality_k, commonality_roles

log = logging.getLogger("bam.pipeline")

STAGES: tuple[str, ...] = ("build", "train", "evaluate", "report")


@dataclass(frozen=True)
class RunConfig:
    """What `bam run` does: a recipe, the training configs per model kind, an eval config."""

    recipe: str = "synthetic"
    seed: int = 0
    train_config: str = "synthetic"
    commonality_config: str | None = "synthetic_commonality"
    invertible_config: str | None = None
    invertible_commonality_config: str | None = None
    eval_config: str = "default"
    #: models trained at once (one single-threaded process each) on CPU; null = one per available CPU
    train_workers: int | None = None

    def __post_init__(self) -> None:
        check_seed(self.seed, "run config seed")
        if self.train_workers is not None and (isinstance(self.train_workers, bool) or self.train_workers < 1):
            raise BamError(f"run config train_workers {self.train_workers!r} is invalid; accepted: an integer >= 1 "
                           "or null (one per available CPU)")


@dataclass(frozen=True)
class TrainJob:
    """One model to train: checkpoint subfolder, role, training config name."""

    folder: str
    role: str
    config: str


@dataclass(frozen=True)
class RunResult:
    """Where the pipeline's outputs are, and what went wrong in the evaluation (if anything)."""

    out: Path
    results: Path
    report: Path
    seconds: float
    failed_everywhere: tuple[tuple[str, str], ...] = ()


def training_plan(cfg: RunConfig, num_scenes: int) -> tuple[TrainJob, ...]:
    """Every model the metrics need: standard models, then invertible ones (folder prefix = their arch kind)."""
    jobs = [TrainJob(r, r, cfg.train_config) for r in BASE_ROLES]
    if cfg.commonality_config:
        jobs += [TrainJob(r, r, cfg.commonality_config) for r in commonality_roles(num_scenes)]
    if cfg.invertible_config:
        jobs += [TrainJob(f"invertible-{r}", r, cfg.invertible_config) for r in BASE_ROLES]
        if cfg.invertible_commonality_config:
            jobs += [TrainJob(f"invertible-{r}", r, cfg.invertible_commonality_config)
                     for r in commonality_roles(num_scenes)]
    return tuple(jobs)


def parse_stages(text: str) -> tuple[str, ...]:
    """Comma-separated stage names, validated (one-line BamError naming the bad ones)."""
    wanted = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in wanted if s not in STAGES]
    if bad or not wanted:
        raise BamError(f"unknown stage(s) {', '.join(bad) or '(none)'} in --stages {text!r}; "
                       f"accepted: {', '.join(STAGES)}")
    return wanted


def run_pipeline(cfg: RunConfig, out: str | os.PathLike[str], *, stages: Sequence[str] = STAGES,
                 device: str = "auto", progress: bool = False,
                 echo: Callable[[str], None] = print) -> RunResult:
    """Run the stages of ``cfg`` into ``out`` (data/, models/<folder>/, eval/); finished work is skipped.

    ``echo`` receives one line per stage and per model (the CLI prints them).
    """
    from bam.config import save_config

    out = Path(out)
    data_dir, models_dir, eval_dir = out / "data", out / "models", out / "eval"
    save_config(cfg, out / "run.yaml")
    t0 = time.perf_counter()
    failed: tuple[tuple[str, str], ...] = ()
    if "build" in stages:
        from bam.data import build_dataset, load_recipe

        echo(f"[build] recipe {cfg.recipe} -> {data_dir}")
        res = build_dataset(load_recipe(cfg.recipe), data_dir, seed=cfg.seed, progress=progress)
        echo(f"[build] {res.counts['composites']} composites, manifest {res.manifest_hash[:12]} "
             f"({'up to date' if res.up_to_date else f'{res.seconds:.0f} s'})")
    if "train" in stages:
        from bam.data import open_dataset
        from bam.train.pool import Done, Job, train_all

        plan = training_plan(cfg, len(open_dataset(data_dir).scene_classes))
        jobs = [Job(j.config, j.role, models_dir / j.folder, cfg.seed)
                for j in sorted(plan, key=lambda j: commonality_k(j.role) is not None)]  # the big models first
        t = time.perf_counter()

        def done(d: Done) -> None:
            echo(f"[train] {d.job.out.name:<24} {d.arch:<13} val acc {d.val_accuracy:.3f} ({d.seconds:.0f} s)")

        train_all(jobs, data_dir, device=device, workers=cfg.train_workers, on_done=done)
        echo(f"[train] {len(jobs)} models in {time.perf_counter() - t:.0f} s")
    if "evaluate" in stages:
        from bam.config import load_config, resolve_named
        from bam.evaluate import EvalConfig, evaluate_dir

        echo(f"[evaluate] config {cfg.eval_config} -> {eval_dir}")
        ec = load_config(EvalConfig, resolve_named(cfg.eval_config, "configs/eval", "eval config"), {"seed": cfg.seed})
        er = evaluate_dir(data_dir, models_dir, ec, eval_dir, device=device, progress=progress)
        if er is not None:
            failed = tuple(er.failed_everywhere.items())
            echo(f"[evaluate] {len(er.results)} result rows, {len(er.records)} records")
    if "report" in stages:
        from bam.report import build_report

        rep = build_report(eval_dir)
        echo(f"[report] {rep.html} ({len(rep.figures)} figures)")
    return RunResult(out=out, results=eval_dir / "results.csv", report=eval_dir / "report.html",
                     seconds=time.perf_counter() - t0, failed_everywhere=failed)

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
from typing import TYPE_CHECKING

from bam.config import check_seed
from bam.errors import BamError
from bam.roles import BASE_ROLES, commonality_k, commonality_roles

if TYPE_CHECKING:
    from bam.evaluate.config import EvalConfig

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
    #: independent model sets (seeds seed..seed+repeats-1), summarised in out/summary
    repeats: int = 1
    #: with repeats: draw the data again for every seed (default: one build, seed ``seed``)
    redraw_data: bool = False

    def __post_init__(self) -> None:
        check_seed(self.seed, "run config seed")
        if isinstance(self.repeats, bool) or not 1 <= self.repeats <= 100:
            raise BamError(f"run config repeats {self.repeats!r} is invalid; accepted: an integer in 1..100")
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


@dataclass(frozen=True)
class _Dirs:
    """Where one repeat's data, models and evaluation go, and its seed."""

    data: Path
    models: Path
    eval: Path
    seed: int


def repeat_dirs(cfg: RunConfig, out: Path) -> tuple[_Dirs, ...]:
    """One repeat: out/{data,models,eval}; N repeats: out/seed-<s>/{models,eval} (data shared unless re-drawn)."""
    if cfg.repeats == 1:
        return (_Dirs(out / "data", out / "models", out / "eval", cfg.seed),)
    seeds = [cfg.seed + r for r in range(cfg.repeats)]
    return tuple(_Dirs(out / f"seed-{s}" / "data" if cfg.redraw_data else out / "data", out / f"seed-{s}" / "models",
                       out / f"seed-{s}" / "eval", s) for s in seeds)


def run_pipeline(cfg: RunConfig, out: str | os.PathLike[str], *, stages: Sequence[str] = STAGES,
                 device: str = "auto", progress: bool = False,
                 echo: Callable[[str], None] = print) -> RunResult:
    """Run the stages of ``cfg`` into ``out`` (data/, models/<folder>/, eval/); finished work is skipped.

    With ``cfg.repeats`` = N > 1, N model sets are trained and evaluated with seeds s..s+N-1 (the
    data drawn once with seed s unless ``redraw_data``), and ``out/summary`` gets the agreement of
    the method rankings across them. ``echo`` receives one line per stage and per model.
    """
    from bam.config import save_config

    out = Path(out)
    save_config(cfg, out / "run.yaml")
    t0 = time.perf_counter()
    failed: tuple[tuple[str, str], ...] = ()
    dirs = repeat_dirs(cfg, out)
    for d in dirs:  # every repeat runs, whatever an earlier one's failures
        tag = "" if len(dirs) == 1 else f" seed {d.seed}"
        mine = _run_one(cfg, d, stages, (device, progress), _tagged(echo, tag))
        failed += tuple(f for f in mine if f not in failed)
    if len(dirs) > 1 and "report" in stages:
        from bam.report.repeats import summarise_repeats, summary_lines

        summary = summarise_repeats([d.eval for d in dirs], out / "summary")
        for line in summary_lines(summary):
            echo(f"[summary] {line}")
        echo(f"[summary] {summary.out / 'report.html'}")
    elif "report" in stages:
        from bam.report.html import SINGLE_RUN_NOTE

        echo(f"[report] {SINGLE_RUN_NOTE}")
    last = dirs[-1].eval if len(dirs) == 1 else out / "summary"
    return RunResult(out=out, results=last / ("results.csv" if len(dirs) == 1 else "stability.csv"),
                     report=last / "report.html", seconds=time.perf_counter() - t0, failed_everywhere=failed)


def _tagged(echo: Callable[[str], None], tag: str) -> Callable[[str], None]:
    """``echo`` that writes ``tag`` into each line's "[stage]" prefix (one repeat of several)."""
    return lambda line: echo(line.replace("] ", f"{tag}] ", 1) if tag else line)


def _run_one(cfg: RunConfig, d: _Dirs, stages: Sequence[str], how: tuple[str, bool],
             echo: Callable[[str], None]) -> tuple[tuple[str, str], ...]:
    """The stages of one repeat; returns the methods that failed on every image."""
    device, progress = how
    failed: tuple[tuple[str, str], ...] = ()
    if "build" in stages:
        from bam.data import build_dataset, load_recipe

        data_seed = d.seed if cfg.redraw_data else cfg.seed
        echo(f"[build] recipe {cfg.recipe} -> {d.data}")
        res = build_dataset(load_recipe(cfg.recipe), d.data, seed=data_seed, progress=progress)
        echo(f"[build] {res.counts['composites']} composites, manifest {res.manifest_hash[:12]} "
             f"({'up to date' if res.up_to_date else f'{res.seconds:.0f} s'})")
    if "train" in stages:
        from bam.data import open_dataset
        from bam.train.pool import Done, Job, train_all

        plan = training_plan(cfg, len(open_dataset(d.data).scene_classes))
        jobs = [Job(j.config, j.role, d.models / j.folder, d.seed)
                for j in sorted(plan, key=lambda j: commonality_k(j.role) is not None)]  # the big models first
        t = time.perf_counter()

        def done(r: Done) -> None:
            echo(f"[train] {r.job.out.name:<24} {r.arch:<13} val acc {r.val_accuracy:.3f} ({r.seconds:.0f} s)")

        train_all(jobs, d.data, device=device, workers=cfg.train_workers, on_done=done)
        echo(f"[train] {len(jobs)} models in {time.perf_counter() - t:.0f} s")
    if "evaluate" in stages:
        from bam.config import load_config, resolve_named
        from bam.evaluate import EvalConfig, evaluate_dir

        echo(f"[evaluate] config {cfg.eval_config} -> {d.eval}")
        ec = load_config(EvalConfig, resolve_named(cfg.eval_config, "configs/eval", "eval config"), {"seed": d.seed})
        er = evaluate_dir(d.data, d.models, ec, d.eval, device=device, progress=progress)
        if er is not None:
            failed = tuple(er.failed_everywhere.items())
            echo(f"[evaluate] {len(er.results)} result rows, {len(er.records)} records")
    if "report" in stages:
        from bam.report import build_report

        rep = build_report(d.eval)
        echo(f"[report] {rep.html} ({len(rep.figures)} figures)")
    return failed


@dataclass(frozen=True)
class RepeatsEvaluation:
    """``bam evaluate`` over several model folders: one evaluation each, and their summary."""

    evals: tuple[Path, ...]
    summary: Path | None
    failed_everywhere: tuple[tuple[str, str], ...] = ()


def evaluate_repeats(data: Path, models: Sequence[Path], config: EvalConfig, out: Path, *, device: str = "auto",
                     progress: bool = False) -> RepeatsEvaluation | None:
    """Evaluate model folder i with seed ``config.seed + i`` into ``out/seed-<seed>`` and summarise them.

    The seeds and the summary (``out/summary``, :func:`bam.report.repeats.summarise_repeats`) are
    those of ``bam run --repeats N``, so the folders of such a run give the same summary. Under
    torch.distributed only rank 0 returns (the others get None).
    """
    from dataclasses import replace

    from bam.evaluate import evaluate_dir
    from bam.report.repeats import summarise_repeats

    evals: list[Path] = []
    failed: tuple[tuple[str, str], ...] = ()
    rank0 = True
    for i, folder in enumerate(models):
        seed = int(config.seed) + i
        check_seed(seed, "evaluation seed")
        target = out / f"seed-{seed}"
        res = evaluate_dir(data, folder, replace(config, seed=seed), target, device=device, progress=progress)
        rank0 = res is not None
        if res is not None:
            failed += tuple(f for f in res.failed_everywhere.items() if f not in failed)
        evals.append(target)
    if not rank0:
        return None
    summary = summarise_repeats(evals, out / "summary").out if len(evals) > 1 else None
    return RepeatsEvaluation(evals=tuple(evals), summary=summary, failed_everywhere=failed)

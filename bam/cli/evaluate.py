"""``bam evaluate``: compute the BAM metrics for attribution methods and write CSV reports."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from bam.cli._common import common_options, device_option, progress, seed_option
from bam.metrics import list_metrics


class MethodName(click.ParamType):
    """A registered method name or a plug-in ``package.module:callable``."""

    name = "method"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        """Accept registered names and plug-in specs; fail with the list of names otherwise."""
        from bam.concepts import list_concept_methods
        from bam.methods import list_methods

        text = str(value)
        names = [*list_methods(), *list_concept_methods()]
        if ":" in text or text in names:
            return text
        self.fail(f"unknown method {text!r}; accepted: {', '.join(names)} "
                  "or a plug-in as package.module:callable", param, ctx)


def _method_help() -> str:
    """The --method help text, listing the registry."""
    from bam.concepts import list_concept_methods
    from bam.methods import list_methods

    return ("Attribution method (repeatable; default: every registered method and the concept method "
            f"{', '.join(list_concept_methods())}). One of: {', '.join(list_methods())}, "
            f"{', '.join(list_concept_methods())}, or a plug-in package.module:callable.")


@click.command("evaluate")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="A dataset directory built by `bam build-data`.")
@click.option("--models", "models_dirs", required=True, multiple=True, type=click.Path(path_type=Path),
              help="A directory of checkpoints (one per subfolder); models are picked by card role. Repeatable: "
                   "N folders (e.g. N training seeds) are evaluated with seeds s..s+N-1 into OUT/seed-<s> and "
                   "summarised in OUT/summary, as `bam run --repeats N` does.")
@click.option("--method", "methods", multiple=True, type=MethodName(), help=_method_help())
@click.option("--metric", "metrics", multiple=True, type=click.Choice(list_metrics()),
              help="Metric (repeatable; default: every metric; tcav_* score the concept method tcav).")
@click.option("--config", "config_name", default="default", show_default=True,
              help="Evaluation config: a built-in name (paper, default, ci) or a path to a .yaml file.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Use at most N val images per metric (overrides the config's `images`).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per chunk (one cache file per chunk); default: the config's.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Output directory: results.csv, records.csv, provenance.json, config.yaml, "
                   "examples.safetensors (one set, see outputs.json), cache/.")
@seed_option(None, "Seed of the stochastic methods and the bootstrap (0..2**32-1; default: the config's).")
@device_option
@common_options
def command(data_dir: Path, models_dirs: tuple[Path, ...], methods: tuple[str, ...], metrics: tuple[str, ...],
            config_name: str, limit: int | None, batch_size: int | None, out_dir: Path, seed: int | None,
            device: str) -> None:
    """Compute MCS, IDR, IIR and RMCS for attribution methods on trained models.

    Per-image records are cached in OUT/cache, so re-running reuses them and adding a method
    computes only that method. Under `torchrun --nproc_per_node N` images are sharded across ranks
    and rank 0 writes the reports. Exit status 1 when a method failed on every image (its rows are
    empty; every other method's results are complete).
    """
    from bam._dist import init_from_env
    from bam.config import load_config, resolve_named
    from bam.errors import BamError
    from bam.evaluate import EvalConfig, evaluate_dir, wide_table

    overrides: dict[str, Any] = {"batch_size": batch_size, "seed": seed}
    if methods:
        overrides["methods"] = list(methods)
    if metrics:
        overrides["metrics"] = list(metrics)
    if limit is not None:
        overrides["images"] = {m: limit for m in list_metrics()}
    config = load_config(EvalConfig, resolve_named(config_name, "configs/eval", "eval config"), overrides)
    init_from_env(os.environ, device)
    if len(models_dirs) > 1:
        _repeats(data_dir, models_dirs, config, out_dir, device)
        return
    res = evaluate_dir(data_dir, models_dirs[0], config, out_dir, device=device, progress=progress())
    if res is None:  # not rank 0
        return
    table = wide_table(res.results)
    if table:
        click.echo(table)
    cache = res.provenance.get("cache", {})
    cached = cache.get("records_from_cache", 0) if isinstance(cache, dict) else 0
    click.echo(f"wrote {out_dir / 'results.csv'} ({len(res.results)} rows), records.csv ({len(res.records)} records, "
               f"{cached} from the cache), provenance.json")
    if res.failed_everywhere:
        name, msg = next(iter(res.failed_everywhere.items()))
        more = f" (and {len(res.failed_everywhere) - 1} more methods)" if len(res.failed_everywhere) > 1 else ""
        raise BamError(f"method {name!r} failed on every image: {msg}{more}; its rows are empty, every other "
                       f"method's results in {out_dir} are complete", exit_code=1)


def _repeats(data_dir: Path, models_dirs: tuple[Path, ...], config: Any, out_dir: Path, device: str) -> None:
    """Several model folders: one evaluation each and their summary (see --models)."""
    from bam.errors import BamError
    from bam.pipeline import evaluate_repeats
    from bam.report.repeats import SUMMARY_FILES

    res = evaluate_repeats(data_dir, models_dirs, config, out_dir, device=device, progress=progress())
    if res is None:  # not rank 0
        return
    click.echo(f"wrote {len(res.evals)} evaluations ({', '.join(str(e) for e in res.evals)}) and "
               f"{res.summary} ({', '.join(SUMMARY_FILES)}, report.html)")
    if res.failed_everywhere:
        name, msg = res.failed_everywhere[0]
        raise BamError(f"method {name!r} failed on every image: {msg}; its rows are empty, every other "
                       f"method's results in {out_dir} are complete", exit_code=1)

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
        from bam.methods import list_methods

        text = str(value)
        if ":" in text or text in list_methods():
            return text
        self.fail(f"unknown method {text!r}; accepted: {', '.join(list_methods())} "
                  "or a plug-in as package.module:callable", param, ctx)


def _method_help() -> str:
    """The --method help text, listing the registry."""
    from bam.methods import list_methods

    return ("Attribution method (repeatable; default: every registered method). One of: "
            f"{', '.join(list_methods())}, or a plug-in package.module:callable.")


@click.command("evaluate")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="A dataset directory built by `bam build-data`.")
@click.option("--models", "models_dir", required=True, type=click.Path(path_type=Path),
              help="A directory of checkpoints (one per subfolder); models are picked by card role.")
@click.option("--method", "methods", multiple=True, type=MethodName(), help=_method_help())
@click.option("--metric", "metrics", multiple=True, type=click.Choice(list_metrics()),
              help="Metric (repeatable; default: every metric).")
@click.option("--config", "config_name", default="default", show_default=True,
              help="Evaluation config: a name in configs/eval/ (paper, default, ci) or a path to a .yaml file.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Use at most N val images per metric (overrides the config's `images`).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per chunk (one cache file per chunk); default: the config's.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Output directory: results.csv, records.csv, provenance.json, config.yaml, examples.safetensors, cache/.")
@seed_option()
@device_option
@common_options
def command(data_dir: Path, models_dir: Path, methods: tuple[str, ...], metrics: tuple[str, ...], config_name: str,
            limit: int | None, batch_size: int | None, out_dir: Path, seed: int, device: str) -> None:
    """Compute MCS, IDR, IIR and RMCS for attribution methods on trained models.

    Per-image records are cached in OUT/cache, so re-running reuses them and adding a method
    computes only that method. Under `torchrun --nproc_per_node N` images are sharded across ranks
    and rank 0 writes the reports.
    """
    import torch

    from bam._device import resolve_device
    from bam.config import load_config, resolve_named
    from bam.data import open_dataset
    from bam.evaluate import DistInfo, EvalConfig, evaluate
    from bam.evaluate._plan import ModelEntry, needed_roles
    from bam.models import find_models, load
    from bam.train.trainer import dist_info, init_distributed_from_env

    cfg_path = resolve_named(config_name, "configs/eval", "eval config")
    overrides: dict[str, Any] = {"batch_size": batch_size}
    if methods:
        overrides["methods"] = list(methods)
    if metrics:
        overrides["metrics"] = list(metrics)
    if limit is not None:
        overrides["images"] = {m: limit for m in list_metrics()}
    config = load_config(EvalConfig, cfg_path, overrides)
    init_distributed_from_env(os.environ, device)
    rank, world = dist_info()
    dev = resolve_device(device)
    if world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", torch.cuda.current_device())
    data = open_dataset(data_dir)
    roles = needed_roles(config, len(data.scene_classes))
    entries = [ModelEntry(load(path, dev), card, str(path)) for path, card in find_models(models_dir)
               if card.role in roles]
    result = evaluate(data, entries, config, out_dir, seed=seed, device=dev, progress=progress(),
                      explicit_metrics=bool(metrics), explicit_methods=bool(methods),
                      dist=DistInfo(rank, world), models_root=str(models_dir))
    if rank != 0:
        return
    table = result["results"]
    main = table[table["metric"] != "rmcs_curve"]
    if not main.empty:
        wide = main.pivot_table(index="method", columns="metric", values="value", aggfunc="first", dropna=False)
        click.echo(wide.to_string(float_format=lambda v: f"{v:.3f}"))
    click.echo(f"wrote {out_dir / 'results.csv'} ({len(table)} rows), records.csv, provenance.json")

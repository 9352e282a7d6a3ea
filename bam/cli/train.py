"""``bam train``: train one model role into a checkpoint directory."""

from __future__ import annotations

import os
from pathlib import Path

import click

from bam.cli._common import common_options, device_option, progress, seed_option
from bam.models import list_models


@click.command("train")
@click.option("--data", "data_dir", required=True, type=click.Path(path_type=Path),
              help="A dataset directory built by `bam build-data`.")
@click.option("--role", required=True,
              help="obj, scene, scene_only or commonality-K (K = 1..number of scene classes).")
@click.option("--arch", type=click.Choice(list_models()), default=None,
              help="Architecture (default: the config's arch). Another arch than the config's trains with "
                   "configs/train/<config>_<arch>.yaml when it exists, else with the config minus its arch_kwargs.")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="Checkpoint directory (model.safetensors, card.json, train_state.pt, config.yaml).")
@click.option("--config", "config_name", default="synthetic", show_default=True,
              help="Training config: a name in configs/train/ or a path to a .yaml file.")
@click.option("--epochs", type=int, default=None, help="Override the config's epochs.")
@click.option("--batch-size", type=int, default=None, help="Override the config's batch size (per process).")
@click.option("--lr", type=float, default=None, help="Override the config's peak learning rate.")
@click.option("--workers", type=int, default=None, help="DataLoader worker processes when streaming from disk.")
@click.option("--pretrained/--no-pretrained", default=None,
              help="ImageNet initialisation from the local torch hub cache (resnet18/50; never downloads).")
@click.option("--resume", is_flag=True, hidden=True,
              help="Accepted for compatibility: a run already in --out is always continued (or confirmed).")
@seed_option(None, "Random seed, 0..2**32-1 (default: the config's seed).")
@device_option
@common_options
def command(data_dir: Path, role: str, arch: str | None, out_dir: Path, config_name: str, epochs: int | None,
            batch_size: int | None, lr: float | None, workers: int | None, pretrained: bool | None, resume: bool,
            seed: int | None, device: str) -> None:
    """Train one model role (obj, scene, scene_only, commonality-K) on a built dataset.

    Flags override the config; the resolved config is saved beside the checkpoint. Re-running the
    same command continues an interrupted run (after Ctrl-C) and confirms a finished one. Under
    `torchrun --nproc_per_node N` training is data-parallel (rank 0 writes).
    """
    from bam._dist import init_from_env
    from bam.models.checkpoint import CARD_FILE
    from bam.train import load_train_config, train_model

    overrides = {"arch": arch, "epochs": epochs, "batch_size": batch_size, "lr": lr, "workers": workers,
                 "pretrained": pretrained, "seed": seed}
    config = load_train_config(config_name, overrides)
    dist = init_from_env(os.environ, device)
    finished = (out_dir / CARD_FILE).is_file()
    card = train_model(config, data_dir, out_dir, role, device=device, progress=progress())
    if dist.is_main:
        acc = "  ".join(f"{k} {v:.4f}" for k, v in card.accuracy.items())
        if finished:
            click.echo(f"{card.role} ({card.arch}): already trained ({config.epochs} epochs), nothing to do; "
                       f"card: {out_dir / CARD_FILE}; {acc}")
        else:
            click.echo(f"{card.role} ({card.arch}): {acc} -> {out_dir}")

"""The trainer: seeded, resumable, batched; bf16 autocast + channels_last on CUDA; DDP under torchrun.

Entry points: :func:`train_model` (opens a dataset directory) and :func:`fit` (takes an opened
dataset object following the data contract). Determinism: the model is initialised from the seed,
every epoch's order comes from ``DistributedSampler(seed, epoch)`` and its augmentation from a
generator seeded by (seed, epoch, rank), and the learning rate is a pure function of the step; so
an interrupted CPU run resumed from ``train_state.pt`` ends with the same weights as a straight one
(with the same intra-op thread count and CPU instruction set: a resume in another environment is
refused).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bam._device import resolve_device
from bam._dist import DistInfo, barrier, current
from bam._io import sha256_file
from bam._lock import output_lock
from bam.config import save_config
from bam.errors import BamError
from bam.models._registry import create_model
from bam.models.checkpoint import (
    CARD_FILE,
    CONFIG_FILE,
    ModelCard,
    checkpoint_problem,
    ckpt_file,
    read_card,
    save_weights,
)
from bam.roles import check_role
from bam.train._data import SplitLoader, open_role_subset, train_batches
from bam.train._loop import Net, TrainRun, finish, train_epoch, uses_channels_last
from bam.train._state import check_environment, check_resumable, check_weights, save_state
from bam.train.config import TrainConfig

log = logging.getLogger(__name__)


def train_model(config: TrainConfig, data_dir: Path, out_dir: Path, role: str, *, device: str = "auto",
                progress: bool = False) -> ModelCard:
    """Train the ``role`` model on the dataset in ``data_dir`` into the checkpoint dir ``out_dir``.

    A finished run with the same settings is returned as is; an unfinished one is continued.
    Returns the model card (also written to ``out_dir/card.json``).
    """
    from bam.data import open_dataset

    return fit(config, open_dataset(Path(data_dir)), Path(out_dir), role, device=device, progress=progress)


def lr_at(config: TrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning rate at optimiser ``step``: linear warm-up, then cosine to zero (or constant)."""
    warm = round(config.warmup_epochs * steps_per_epoch)
    if step < warm:
        return config.lr * (step + 1) / warm
    if config.schedule == "constant":
        return config.lr
    t = (step - warm) / max(1, total_steps - warm)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def _optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (Nesterov) or AdamW; no weight decay on biases and norm parameters."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.momentum, 0.999))


def _in_memory(config: TrainConfig, subs: list[Any], image_size: int) -> bool:
    """Whether to decode the subsets into RAM (``cache``; auto = fits in ``cache_max_mb`` as uint8)."""
    if config.cache != "auto":
        return config.cache == "memory"
    mb = sum(len(s) for s in subs) * 3 * image_size * image_size / 2**20
    return mb <= config.cache_max_mb


def environment() -> dict[str, Any]:
    """What else decides the trained weights: intra-op threads and the CPU's instruction set."""
    return {"intra_op_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _settings(config: TrainConfig, role: str, data: Any, world: int) -> dict[str, Any]:
    """Everything a resumed run must share with the saved one."""
    return {**config.result_settings(), "role": role, "dataset_manifest_hash": data.manifest_hash,
            "world_size": world}


def fit(config: TrainConfig, data: Any, out_dir: Path, role: str, *, device: str | torch.device = "auto",
        progress: bool = False) -> ModelCard:
    """Train on an opened dataset (see :func:`train_model`); rank 0 writes, all ranks return the card.

    Rank 0 holds an exclusive lock on ``out_dir`` (:mod:`bam._lock`) while it runs: a second run
    into the same folder is refused in one line naming the process that holds it.
    """
    out_dir = Path(out_dir)
    role = check_role(role, len(data.scene_classes))
    run = TrainRun(config=config, data=data, out_dir=out_dir, role=role,
                   device=resolve_device(device) if isinstance(device, str) else device, progress=progress,
                   dist=current())
    if not run.dist.is_main:
        return _fit_unlocked(run)
    finished = _finished(run)  # confirming a finished run writes nothing, so it takes no lock
    if finished is not None:
        return finished
    with output_lock(out_dir, "bam train"):
        return _fit_unlocked(run)


def _finished(run: TrainRun) -> ModelCard | None:
    """The card of the finished run in ``run.out_dir`` with the same settings (verified), else None.

    BamError when the folder holds a run with other settings or a finished set that does not verify."""
    out_dir = run.out_dir
    state = check_resumable(out_dir, _settings(run.config, run.role, run.data, run.dist.world_size))
    if state is None or state["epoch"] < run.config.epochs or not (out_dir / CARD_FILE).is_file():
        return None
    card = read_card(out_dir)
    problem = checkpoint_problem(out_dir, card)
    if problem:
        raise BamError(f"{out_dir} holds a finished run whose files do not match {CARD_FILE} ({problem}); "
                       "use another --out or delete it to train again")
    log.info("%s: already trained (%d epochs); nothing to do", out_dir, state["epoch"])
    return card


def _fit_unlocked(run: TrainRun) -> ModelCard:
    """:func:`fit` once ``run.out_dir`` is locked (on rank 0)."""
    config, data, out_dir, role = run.config, run.data, run.out_dir, run.role
    settings = _settings(config, role, data, run.dist.world_size)
    finished = _finished(run)
    if finished is not None:
        return finished
    state = check_resumable(out_dir, settings)
    if state is not None:
        check_environment(out_dir, state, environment())
    try:
        return _fit(run, state, settings)
    except torch.OutOfMemoryError:
        raise BamError(f"out of memory on {run.device} with --batch-size {config.batch_size} (eval batch "
                       f"{config.eval_batch_size}); lower --batch-size") from None


def _build(run: TrainRun) -> Net:
    """The seeded model (DDP-wrapped when distributed), its optimiser and the train/val loaders."""
    cfg, data = run.config, run.data
    train_sub = open_role_subset(data, run.role, "train")
    val_sub = open_role_subset(data, run.role, "val")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.arch, num_classes=int(train_sub.num_classes), image_size=int(data.image_size),
                             input_size=cfg.input_size, pretrained=cfg.pretrained, **dict(cfg.arch_kwargs))
    model = model.to(run.device)
    if uses_channels_last(cfg, run.device):
        model = model.to(memory_format=torch.channels_last)
    forward = nn.parallel.DistributedDataParallel(
        model, device_ids=[run.device.index] if run.device.type == "cuda" else None) if run.dist.active else model
    in_mem = _in_memory(cfg, [train_sub, val_sub], int(data.image_size))
    train = SplitLoader(train_sub, in_memory=in_mem, workers=cfg.workers, progress=run.shows_progress,
                        desc=f"{run.role} train")
    val = SplitLoader(val_sub, in_memory=in_mem, workers=cfg.workers, progress=run.shows_progress,
                      desc=f"{run.role} val")
    return Net(model=model, forward=forward, opt=_optimizer(cfg, model), train=train, val=val)


def _fit(run: TrainRun, state: dict[str, Any] | None, settings: dict[str, Any]) -> ModelCard:
    """Build, restore ``state`` if any, train the remaining epochs, then write the card."""
    cfg, out_dir, world = run.config, run.out_dir, run.dist
    started = time.perf_counter()
    net = _build(run)
    start_epoch, best, best_epoch, history, elapsed, weights_sha = 0, -1.0, -1, [], 0.0, ""
    if state is not None:
        net.model.load_state_dict(state["model"])
        net.opt.load_state_dict(state["optimizer"])
        start_epoch, best, best_epoch = int(state["epoch"]), float(state["best_acc"]), int(state["best_epoch"])
        history, elapsed = list(state["history"]), float(state["elapsed_s"])
        check_weights(out_dir, state)
        weights_sha = str(state.get("weights_sha256", ""))
        log.info("%s: resuming after epoch %d", out_dir, start_epoch)
    if world.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, ckpt_file(out_dir, CONFIG_FILE))
    config_sha = sha256_file(ckpt_file(out_dir, CONFIG_FILE)) if out_dir.joinpath(CONFIG_FILE).is_file() else ""
    steps = len(_epoch_batches(run, net, 0))
    for epoch in range(start_epoch, cfg.epochs):
        rec = train_epoch(run, net, epoch, _epoch_batches(run, net, epoch),
                          lambda i, e=epoch: lr_at(cfg, e * steps + i, steps * cfg.epochs, steps))
        history.append(rec)
        improved = cfg.select == "last" or rec["val_acc"] > best
        if improved:
            best, best_epoch = rec["val_acc"], epoch + 1
        if world.is_main:
            if improved:
                weights_sha = save_weights(net.model, out_dir)
            save_state(out_dir, {"epoch": epoch + 1, "model": net.model.state_dict(), "optimizer": net.opt.state_dict(),
                                 "best_acc": best, "best_epoch": best_epoch, "history": history,
                                 "settings": settings, "environment": environment(),
                                 "elapsed_s": elapsed + time.perf_counter() - started, "weights_sha256": weights_sha,
                                 "config_sha256": config_sha})
        barrier(world)
    return finish(run, net, (best_epoch, best), elapsed + time.perf_counter() - started)


def _epoch_batches(run: TrainRun, net: Net, epoch: int) -> list[list[int]]:
    """This rank's batches (index lists) of ``epoch``."""
    return train_batches(net.train.n, run.config.batch_size, seed=run.config.seed, epoch=epoch, rank=run.dist.rank,
                         world=run.dist.world_size)


__all__ = ["DistInfo", "TrainRun", "fit", "lr_at", "train_model"]

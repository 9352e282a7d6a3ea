"""The trainer: seeded, resumable, batched; bf16 autocast + channels_last on CUDA; DDP under torchrun.

Entry points: :func:`train_model` (opens a dataset directory) and :func:`fit` (takes an opened
dataset object following the data contract). Determinism: the model is initialised from the seed,
every epoch's order comes from ``DistributedSampler(seed, epoch)`` and its augmentation from a
generator seeded by (seed, epoch, rank), and the learning rate is a pure function of the step; so
an interrupted CPU run resumed from ``train_state.pt`` ends with the same weights as a straight one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from bam import __version__
from bam._device import resolve_device
from bam._io import sha256_file
from bam.config import save_config
from bam.errors import BamError
from bam.models._registry import create_model
from bam.models.checkpoint import (
    CARD_FILE,
    CONFIG_FILE,
    WEIGHTS_FILE,
    ModelCard,
    describe_model,
    read_card,
    recorded_arch_kwargs,
    save_weights,
    write_card,
)
from bam.train._data import SplitLoader, augment, check_role, eval_batches, open_role_subset, train_batches
from bam.train._state import check_resumable, save_state
from bam.train.config import TrainConfig

log = logging.getLogger(__name__)


def train_model(config: TrainConfig, data_dir: Path, out_dir: Path, role: str, *, device: str = "auto",
                progress: bool = False, resume: bool = True) -> ModelCard:
    """Train the ``role`` model on the dataset in ``data_dir`` into the checkpoint dir ``out_dir``.

    A finished run with the same settings is returned as is; an unfinished one is continued when
    ``resume`` (else a BamError). Returns the model card (also written to ``out_dir/card.json``).
    """
    from bam.data import open_dataset

    return fit(config, open_dataset(Path(data_dir)), Path(out_dir), role, device=device, progress=progress,
               resume=resume)


def dist_info() -> tuple[int, int]:
    """(rank, world size) of an initialised torch.distributed group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier(world: int) -> None:
    """Wait for all ranks (no-op without a process group)."""
    if world > 1:
        dist.barrier()


def _mix(*values: int) -> int:
    """A 63-bit seed derived from integers (for per-epoch/per-rank generators)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) + 0x9E3779B9 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


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


def _autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when enabled, else a no-op context."""
    if config.amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _channels_last(config: TrainConfig, device: torch.device) -> bool:
    """Whether model and batches use the channels_last memory format (CUDA; CPU with cpu_channels_last)."""
    return config.channels_last and (device.type == "cuda" or config.cpu_channels_last)


def _prep(x: Tensor, config: TrainConfig, device: torch.device) -> Tensor:
    """Move a batch to the device (channels_last when :func:`_channels_last`)."""
    x = x.to(device, non_blocking=True)
    if _channels_last(config, device):
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def accuracy(model: nn.Module, loader: SplitLoader, indices: list[int], config: TrainConfig,
             device: torch.device, rank: int = 0, world: int = 1) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``indices`` of a split, sharded over ranks."""
    model.eval()
    mine = indices[rank::world]
    correct = torch.zeros(2, dtype=torch.float64, device=device)
    for x, y in loader.batches(eval_batches(mine, config.eval_batch_size)):
        with _autocast(config, device):
            pred = model(_prep(x, config, device)).argmax(1)
        correct[0] += (pred == y.to(device)).sum()
        correct[1] += len(y)
    if world > 1:
        dist.all_reduce(correct)
    return float(correct[0] / correct[1]) if correct[1] > 0 else float("nan")


def _in_memory(config: TrainConfig, subs: list[Any], image_size: int) -> bool:
    """Whether to decode the subsets into RAM (``cache``; auto = fits in ``cache_max_mb`` as uint8)."""
    if config.cache != "auto":
        return config.cache == "memory"
    mb = sum(len(s) for s in subs) * 3 * image_size * image_size / 2**20
    return mb <= config.cache_max_mb


def _probes(role: str, data: Any, config: TrainConfig, model: nn.Module, device: torch.device, rank: int,
            world: int) -> dict[str, float]:
    """Accuracy on images the model was not trained for (SPEC §3 sanity probes).

    obj: val scene_only images labelled by the object that *would* be there (should fall to chance);
    scene: val scene_only images labelled by scene (should barely move); scene_only: val composites
    (scene labels); commonality-k: the common_in_scene images (label = common scene).
    """
    plan = {"obj": ("val_scene_only", "scene_only", "object_label"),
            "scene": ("val_scene_only", "scene_only", None),
            "scene_only": ("val_scene", "scene", None)}.get(role, ("val_common_in_scene", "common_in_scene", None))
    key, subset, column = plan
    try:
        sub = data.subset(subset, split="val")
    except (BamError, KeyError, FileNotFoundError) as exc:
        log.warning("probe %s skipped: %s", key, exc)
        return {}
    if len(sub) == 0:
        return {}
    labels = torch.tensor(sub.table[column].to_numpy(), dtype=torch.long) if column else None
    loader = SplitLoader(sub, labels=labels, workers=config.workers)
    return {key: accuracy(model, loader, list(range(len(sub))), config, device, rank, world)}


def _settings(config: TrainConfig, role: str, data: Any, world: int) -> dict[str, Any]:
    """Everything a resumed run must share with the saved one."""
    return {**config.result_settings(), "role": role, "dataset_manifest_hash": data.manifest_hash,
            "world_size": world}


def fit(config: TrainConfig, data: Any, out_dir: Path, role: str, *, device: str | torch.device = "auto",
        progress: bool = False, resume: bool = True) -> ModelCard:
    """Train on an opened dataset (see :func:`train_model`); rank 0 writes, all ranks return the card."""
    out_dir = Path(out_dir)
    role = check_role(role, len(data.scene_classes))
    dev = resolve_device(device) if isinstance(device, str) else device
    rank, world = dist_info()
    settings = _settings(config, role, data, world)
    state = check_resumable(out_dir, settings, resume)
    if state is not None and state["epoch"] >= config.epochs and (out_dir / CARD_FILE).is_file():
        log.info("%s: already trained (%d epochs); nothing to do", out_dir, state["epoch"])
        return read_card(out_dir)
    try:
        return _fit(config, data, out_dir, role, dev, progress, state, settings, rank, world)
    except torch.OutOfMemoryError:
        raise BamError(f"out of memory on {dev} with --batch-size {config.batch_size} (eval batch "
                       f"{config.eval_batch_size}); lower --batch-size") from None


def _fit(config: TrainConfig, data: Any, out_dir: Path, role: str, dev: torch.device, progress: bool,
         state: dict[str, Any] | None, settings: dict[str, Any], rank: int, world: int) -> ModelCard:
    from tqdm.auto import tqdm

    started = time.perf_counter()
    train_sub = open_role_subset(data, role, "train")
    val_sub = open_role_subset(data, role, "val")
    num_classes = int(train_sub.num_classes)
    class_names = tuple(data.object_classes if train_sub.label_kind == "object" else data.scene_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = create_model(config.arch, num_classes=num_classes, image_size=int(data.image_size),
                             input_size=config.input_size, pretrained=config.pretrained, **dict(config.arch_kwargs))
    model = model.to(dev)
    if _channels_last(config, dev):
        model = model.to(memory_format=torch.channels_last)
    opt = _optimizer(config, model)
    start_epoch, best, best_epoch, history, elapsed = 0, -1.0, -1, [], 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, best, best_epoch = int(state["epoch"]), float(state["best_acc"]), int(state["best_epoch"])
        history, elapsed = list(state["history"]), float(state["elapsed_s"])
        log.info("%s: resuming after epoch %d", out_dir, start_epoch)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / CONFIG_FILE)
    train_model_ = nn.parallel.DistributedDataParallel(
        model, device_ids=[dev.index] if dev.type == "cuda" else None) if world > 1 else model

    in_mem = _in_memory(config, [train_sub, val_sub], int(data.image_size))
    train_loader = SplitLoader(train_sub, in_memory=in_mem, workers=config.workers, progress=progress and rank == 0,
                               desc=f"{role} train")
    val_loader = SplitLoader(val_sub, in_memory=in_mem, workers=config.workers, progress=progress and rank == 0,
                             desc=f"{role} val")
    n_train, n_val = len(train_sub), len(val_sub)
    steps = len(train_batches(n_train, config.batch_size, seed=config.seed, epoch=0, rank=rank, world=world))
    total = steps * config.epochs
    for epoch in range(start_epoch, config.epochs):
        model.train()
        gen = torch.Generator().manual_seed(_mix(config.seed, epoch, rank))
        batches = train_batches(n_train, config.batch_size, seed=config.seed, epoch=epoch, rank=rank, world=world)
        sums = torch.zeros(3, dtype=torch.float64, device=dev)  # loss*n, correct, n
        t0 = time.perf_counter()
        bar = tqdm(total=len(batches), desc=f"{role} epoch {epoch + 1}/{config.epochs}",
                   disable=not (progress and rank == 0), leave=False, unit="batch")
        for i, (x, y) in enumerate(train_loader.batches(batches)):
            for group in opt.param_groups:
                group["lr"] = lr_at(config, epoch * steps + i, total, steps)
            x, _ = augment(_prep(x, config, dev), None, gen, hflip=config.hflip, max_shift=config.max_shift)
            y = y.to(dev, non_blocking=True)
            with _autocast(config, dev):
                logits = train_model_(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                sums += torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double(),
                                     torch.tensor(float(len(y)), dtype=torch.float64, device=dev)])
            bar.update(1)
            if i % 10 == 0 or i == len(batches) - 1:
                bar.set_postfix(loss=f"{float(sums[0] / sums[2]):.3f}", acc=f"{float(sums[1] / sums[2]):.3f}")
        bar.close()
        seconds = time.perf_counter() - t0
        if world > 1:
            dist.all_reduce(sums)
        val_acc = accuracy(model, val_loader, list(range(n_val)), config, dev, rank, world)
        rec = {"epoch": epoch + 1, "loss": float(sums[0] / sums[2]), "train_acc": float(sums[1] / sums[2]),
               "val_acc": val_acc, "images_per_s": float(sums[2]) / seconds, "seconds": seconds}
        history.append(rec)
        log.info("%s epoch %d/%d: loss %.4f  train acc %.4f  val acc %.4f  %.0f img/s", role, epoch + 1,
                 config.epochs, rec["loss"], rec["train_acc"], val_acc, rec["images_per_s"])
        improved = config.select == "last" or val_acc > best
        if improved:
            best, best_epoch = val_acc, epoch + 1
        if rank == 0:
            if improved:
                save_weights(model, out_dir)
            save_state(out_dir, {"epoch": epoch + 1, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                 "best_acc": best, "best_epoch": best_epoch, "history": history,
                                 "settings": settings, "elapsed_s": elapsed + time.perf_counter() - started})
        _barrier(world)
    return _finish(config, data, out_dir, role, model, dev, train_loader, num_classes, class_names,
                   (best_epoch, best), elapsed + time.perf_counter() - started, rank, world)


def _finish(config: TrainConfig, data: Any, out_dir: Path, role: str, model: nn.Module, dev: torch.device,
            train_loader: SplitLoader, num_classes: int, class_names: tuple[str, ...],
            selected: tuple[int, float], elapsed: float, rank: int, world: int) -> ModelCard:
    """Reload the selected weights, measure train accuracy and probes, write the card (rank 0).

    ``selected`` = (epoch, its val accuracy): the val accuracy of the reloaded weights is that
    epoch's, already measured on the same weights and images, so it is not measured again.
    """
    from safetensors.torch import load_file

    t0 = time.perf_counter()
    model.load_state_dict(load_file(str(out_dir / WEIGHTS_FILE), device=str(dev)))
    gen = torch.Generator().manual_seed(_mix(config.seed, 7919))
    n = train_loader.n
    train_idx = sorted(torch.randperm(n, generator=gen)[:config.train_eval_max].tolist()) if n > config.train_eval_max \
        else list(range(n))
    best_epoch, best_val = selected
    acc = {"val": best_val, "train": accuracy(model, train_loader, train_idx, config, dev, rank, world)}
    acc.update(_probes(role, data, config, model, dev, rank, world))
    recipe = getattr(data.recipe, "name", "") if getattr(data, "recipe", None) is not None else ""
    card = ModelCard(arch=config.arch, role=role, num_classes=num_classes, image_size=int(data.image_size),
                     arch_kwargs=recorded_arch_kwargs(model, config.arch_kwargs), class_names=class_names,
                     recipe=str(recipe),
                     dataset_manifest_hash=str(data.manifest_hash), seed=config.seed, accuracy=acc,
                     training_time_s=round(elapsed + time.perf_counter() - t0, 3), bam_version=__version__,
                     **describe_model(model))
    card = dataclasses.replace(card, weights_sha256=sha256_file(out_dir / WEIGHTS_FILE))
    if rank == 0:
        write_card(card, out_dir)
        log.info("%s: done (best epoch %d); accuracy %s -> %s", role, best_epoch,
                 ", ".join(f"{k} {v:.4f}" for k, v in acc.items()), out_dir)
    _barrier(world)
    return card


def init_distributed_from_env(env: dict[str, str] | os._Environ[str], device: str) -> bool:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (called by the CLI, not the library).

    Uses NCCL on CUDA and gloo on CPU; on CUDA each process takes GPU ``LOCAL_RANK``.
    Returns True when distributed training is active.
    """
    if int(env.get("WORLD_SIZE", "1")) <= 1 or (dist.is_available() and dist.is_initialized()):
        return dist.is_available() and dist.is_initialized()
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if use_cuda:
        torch.cuda.set_device(int(env.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://")
    return True

"""The pieces of a training run: its frozen context, accuracy, probes, one epoch, and the final card."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bam import __version__
from bam._dist import DistInfo, all_reduce_sum, barrier
from bam._io import sha256_file
from bam.errors import BamError
from bam.models.checkpoint import (
    CONFIG_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    ModelCard,
    ckpt_file,
    describe_model,
    recorded_arch_kwargs,
    write_card,
)
from bam.train._data import SplitLoader, augment, eval_batches
from bam.train.config import TrainConfig

log = logging.getLogger("bam.train.trainer")


@dataclass(frozen=True)
class TrainRun:
    """One training run: what, on which data, where to, on which device and process."""

    config: TrainConfig
    data: Any  # a built dataset following the data contract (bam.data.BamData or a fake)
    out_dir: Path
    role: str
    device: torch.device
    progress: bool = False
    dist: DistInfo = field(default_factory=DistInfo)

    @property
    def shows_progress(self) -> bool:
        """Progress bars on rank 0 only."""
        return self.progress and self.dist.is_main


@dataclass
class Net:
    """The model being trained, its DDP wrapper (or itself), its optimiser and its loaders."""

    model: nn.Module
    forward: nn.Module
    opt: torch.optim.Optimizer
    train: SplitLoader
    val: SplitLoader


def mix(*values: int) -> int:
    """A 63-bit seed derived from integers (for per-epoch/per-rank generators)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) + 0x9E3779B9 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


def autocast(config: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA when enabled, else a no-op context."""
    if config.amp and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def uses_channels_last(config: TrainConfig, device: torch.device) -> bool:
    """Whether model and batches use the channels_last memory format (CUDA; CPU with cpu_channels_last)."""
    return config.channels_last and (device.type == "cuda" or config.cpu_channels_last)


def prep(x: Tensor, run: TrainRun) -> Tensor:
    """Move a batch to the device (channels_last when :func:`uses_channels_last`)."""
    x = x.to(run.device, non_blocking=True)
    if uses_channels_last(run.config, run.device):
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def accuracy(model: nn.Module, loader: SplitLoader, indices: list[int], run: TrainRun) -> float:
    """Top-1 accuracy of ``model`` (eval mode) on ``indices`` of a split, sharded over ranks."""
    model.eval()
    mine = indices[run.dist.rank::run.dist.world_size]
    correct = torch.zeros(2, dtype=torch.float64, device=run.device)
    for x, y in loader.batches(eval_batches(mine, run.config.eval_batch_size)):
        with autocast(run.config, run.device):
            pred = model(prep(x, run)).argmax(1)
        correct[0] += (pred == y.to(run.device)).sum()
        correct[1] += len(y)
    all_reduce_sum(correct, run.dist)
    return float(correct[0] / correct[1]) if correct[1] > 0 else float("nan")


def probes(run: TrainRun, model: nn.Module) -> dict[str, float]:
    """Accuracy on images the model was not trained for (SPEC §3 sanity probes).

    obj: val scene_only images labelled by the object that *would* be there (should fall to chance);
    scene: val scene_only images labelled by scene (should barely move); scene_only: val composites
    (scene labels); commonality-k: the common_in_scene images (label = common scene).
    """
    plan = {"obj": ("val_scene_only", "scene_only", "object_label"),
            "scene": ("val_scene_only", "scene_only", None),
            "scene_only": ("val_scene", "scene", None)}.get(run.role, ("val_common_in_scene", "common_in_scene", None))
    key, subset, column = plan
    try:
        sub = run.data.subset(subset, split="val")
    except (BamError, KeyError, FileNotFoundError) as exc:
        log.warning("probe %s skipped: %s", key, exc)
        return {}
    if len(sub) == 0:
        return {}
    labels = torch.tensor(sub.table[column].to_numpy(), dtype=torch.long) if column else None
    loader = SplitLoader(sub, labels=labels, workers=run.config.workers)
    return {key: accuracy(model, loader, list(range(len(sub))), run)}


def train_epoch(run: TrainRun, net: Net, epoch: int, batches: list[list[int]],
                lr_of: Any) -> dict[str, float]:
    """One epoch over ``batches`` (index lists); ``lr_of(i)`` is the learning rate of its i-th step."""
    from bam._progress import progress_bar

    cfg, dev = run.config, run.device
    net.model.train()
    gen = torch.Generator().manual_seed(mix(cfg.seed, epoch, run.dist.rank))
    sums = torch.zeros(3, dtype=torch.float64, device=dev)  # loss*n, correct, n
    t0 = time.perf_counter()
    bar = progress_bar(total=len(batches), desc=f"{run.role} epoch {epoch + 1}/{cfg.epochs}",
                       enabled=run.shows_progress, leave=False, unit="batch")
    for i, (x, y) in enumerate(net.train.batches(batches)):
        for group in net.opt.param_groups:
            group["lr"] = lr_of(i)
        x, _ = augment(prep(x, run), None, gen, hflip=cfg.hflip, max_shift=cfg.max_shift)
        y = y.to(dev, non_blocking=True)
        with autocast(cfg, dev):
            logits = net.forward(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        net.opt.zero_grad(set_to_none=True)
        loss.backward()
        net.opt.step()
        with torch.no_grad():
            sums += torch.stack([loss.detach().double() * len(y), (logits.argmax(1) == y).sum().double(),
                                 torch.tensor(float(len(y)), dtype=torch.float64, device=dev)])
        bar.update(1)
        if i % 10 == 0 or i == len(batches) - 1:
            bar.set_postfix(loss=f"{float(sums[0] / sums[2]):.3f}", acc=f"{float(sums[1] / sums[2]):.3f}")
    bar.close()
    seconds = time.perf_counter() - t0
    all_reduce_sum(sums, run.dist)
    val_acc = accuracy(net.model, net.val, list(range(net.val.n)), run)
    rec = {"epoch": epoch + 1, "loss": float(sums[0] / sums[2]), "train_acc": float(sums[1] / sums[2]),
           "val_acc": val_acc, "images_per_s": float(sums[2]) / seconds, "seconds": seconds}
    log.info("%s epoch %d/%d: loss %.4f  train acc %.4f  val acc %.4f  %.0f img/s", run.role, epoch + 1,
             cfg.epochs, rec["loss"], rec["train_acc"], val_acc, rec["images_per_s"])
    return rec


def finish(run: TrainRun, net: Net, selected: tuple[int, float], elapsed: float) -> ModelCard:
    """Reload the selected weights, measure train accuracy and probes, write the card (rank 0).

    ``selected`` = (epoch, its val accuracy): the val accuracy of the reloaded weights is that
    epoch's, already measured on the same weights and images, so it is not measured again.
    """
    from safetensors.torch import load_file

    cfg, out_dir = run.config, run.out_dir
    t0 = time.perf_counter()
    net.model.load_state_dict(load_file(str(ckpt_file(out_dir, WEIGHTS_FILE)), device=str(run.device)))
    gen = torch.Generator().manual_seed(mix(cfg.seed, 7919))
    n = net.train.n
    train_idx = (sorted(torch.randperm(n, generator=gen)[:cfg.train_eval_max].tolist()) if n > cfg.train_eval_max
                 else list(range(n)))
    best_epoch, best_val = selected
    acc = {"val": best_val, "train": accuracy(net.model, net.train, train_idx, run)}
    acc.update(probes(run, net.model))
    data = run.data
    kind = "object" if run.role == "obj" else "scene"
    recipe = getattr(data.recipe, "name", "") if getattr(data, "recipe", None) is not None else ""
    card = ModelCard(arch=cfg.arch, role=run.role, num_classes=len(data.object_classes if kind == "object"
                                                                   else data.scene_classes),
                     image_size=int(data.image_size), arch_kwargs=recorded_arch_kwargs(net.model, cfg.arch_kwargs),
                     class_names=tuple(data.object_classes if kind == "object" else data.scene_classes),
                     recipe=str(recipe), dataset_manifest_hash=str(data.manifest_hash), seed=cfg.seed, accuracy=acc,
                     training_time_s=round(elapsed + time.perf_counter() - t0, 3), bam_version=__version__,
                     **describe_model(net.model))
    # the card pins the set: these weights, this config and the final training state (one run's files)
    card = dataclasses.replace(card, weights_sha256=sha256_file(ckpt_file(out_dir, WEIGHTS_FILE)),
                               config_sha256=sha256_file(ckpt_file(out_dir, CONFIG_FILE)),
                               state_sha256=sha256_file(ckpt_file(out_dir, STATE_FILE)))
    if run.dist.is_main:
        write_card(card, out_dir)
        log.info("%s: done (best epoch %d); accuracy %s -> %s", run.role, best_epoch,
                 ", ".join(f"{k} {v:.4f}" for k, v in acc.items()), out_dir)
    barrier(run.dist)
    return card

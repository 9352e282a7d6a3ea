#!/usr/bin/env python
"""Training throughput vs the model's raw forward+backward throughput (same model, same batch).

usage: python scripts/bench_train.py DATA_DIR [--role obj] [--config synthetic] [--steps 30] [--threads 2]

Measures (1) raw: SGD steps on one in-memory random batch (no data loading, no augmentation);
(2) trainer: one real epoch of `bam.train.fit` with the RAM cache and (3) streaming from disk
(`cache: stream`), reading images/s from the training history; reports trainer/raw ratios.
CPU time is reported too: on a shared machine wall-clock numbers move with the load.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def raw_throughput(config, num_classes: int, image_size: int, steps: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(images/s wall, images/s per CPU-second) of plain forward+backward+step on random tensors."""
    from bam.models import create_model

    model = create_model(config.arch, num_classes=num_classes, image_size=image_size, **dict(config.arch_kwargs))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    x = torch.rand(config.batch_size, 3, image_size, image_size)
    y = torch.randint(0, num_classes, (config.batch_size,))
    for i in range(steps + 3):
        if i == 3:
            t, c = time.perf_counter(), time.process_time()
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    n = steps * config.batch_size
    return n / (time.perf_counter() - t), n / (time.process_time() - c)


def trainer_throughput(config, data, role: str) -> float:  # type: ignore[no-untyped-def]
    """Images/s (wall) of one training epoch of the real trainer (from its history record)."""
    from bam.train import fit

    with tempfile.TemporaryDirectory() as tmp:
        fit(config.replace(epochs=1, warmup_epochs=0.0), data, Path(tmp) / "m", role, device="cpu")
        state = torch.load(Path(tmp) / "m" / "train_state.pt", weights_only=True)
    return float(state["history"][-1]["images_per_s"])


def main() -> None:
    """Run the three measurements and print a small table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("--role", default="obj")
    ap.add_argument("--config", default="synthetic")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from bam.data import open_dataset
    from bam.train import load_train_config

    config = load_train_config(args.config)
    data = open_dataset(args.data)
    sub = data.subset(args.role, split="train")
    raw1, raw1_cpu = raw_throughput(config, sub.num_classes, data.image_size, args.steps)
    mem = trainer_throughput(config.replace(cache="memory"), data, args.role)
    stream = trainer_throughput(config.replace(cache="stream"), data, args.role)
    raw2, raw2_cpu = raw_throughput(config, sub.num_classes, data.image_size, args.steps)
    raw = (raw1 + raw2) / 2
    print(f"arch {config.arch} batch {config.batch_size} image {data.image_size}px threads {args.threads} "
          f"role {args.role} ({len(sub)} train images)")
    print(f"raw forward+backward : {raw:8.1f} img/s (before {raw1:.1f}, after {raw2:.1f}; "
          f"{(raw1_cpu + raw2_cpu) / 2:.1f} img per CPU-s)")
    print(f"trainer, RAM cache   : {mem:8.1f} img/s  = {100 * mem / raw:5.1f}% of raw")
    print(f"trainer, streaming   : {stream:8.1f} img/s  = {100 * stream / raw:5.1f}% of raw")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Training-step throughput of several archs/configs side by side, interleaved (one thread).

usage: python scripts/bench_archs.py CONFIG [CONFIG ...] [--rounds 5] [--steps 20] [--threads 1]
       [--image-size 32] [--classes 10] [--channels-last]

Each CONFIG is a train config name or path (``configs/train/<name>.yaml``); its arch, arch_kwargs,
batch size and optimiser are used. Every round runs ``--steps`` AdamW/SGD steps (forward, backward,
step on one random batch, no data loading) of every config in turn, so on a shared machine the
load hits all of them alike; the table gives the median over rounds of images per wall-second and
per CPU-second and each config's ratio to the first one.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def _setup(name: str, image_size: int, classes: int, channels_last: bool):  # type: ignore[no-untyped-def]
    from bam.models import create_model
    from bam.train import load_train_config
    from bam.train.trainer import _optimizer

    cfg = load_train_config(name)
    torch.manual_seed(0)
    model = create_model(cfg.arch, num_classes=classes, image_size=image_size, **dict(cfg.arch_kwargs)).train()
    x = torch.rand(cfg.batch_size, 3, image_size, image_size)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (cfg.batch_size,))
    return cfg, model, _optimizer(cfg, model), x, y


def _steps(model, opt, x, y, n: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(images/s wall, images/s per CPU-second) over ``n`` steps."""
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    imgs = n * x.shape[0]
    return imgs / (time.perf_counter() - t), imgs / max(time.process_time() - c, 1e-9)


def main() -> None:
    """Interleave the configs' training steps and print a table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--channels-last", action="store_true", help="model and batch in channels_last memory format")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = [_setup(n, args.image_size, args.classes, args.channels_last) for n in args.configs]
    for _cfg, model, opt, x, y in runs:  # warm-up
        _steps(model, opt, x, y, 3)
    wall: list[list[float]] = [[] for _ in runs]
    cpu: list[list[float]] = [[] for _ in runs]
    for _ in range(args.rounds):
        for i, (_cfg, model, opt, x, y) in enumerate(runs):
            w, c = _steps(model, opt, x, y, args.steps)
            wall[i].append(w)
            cpu[i].append(c)
    base = statistics.median(cpu[0])
    print(f"{'config':40s} {'params':>9s} {'img/s':>8s} {'img/cpu-s':>10s} {'ratio':>6s}")
    for name, (_cfg, model, *_), w, c in zip(args.configs, runs, wall, cpu):
        params = sum(p.numel() for p in model.parameters())
        mc = statistics.median(c)
        print(f"{name:40s} {params:9d} {statistics.median(w):8.0f} {mc:10.0f} {mc / base:6.2f}")


if __name__ == "__main__":
    main()

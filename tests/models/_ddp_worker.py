"""Worker for the 2-process DDP test (importable by torch.multiprocessing's spawn)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.distributed as dist


def run(rank: int, world: int, port: int, out: str) -> None:
    """Join a gloo group, train a tiny model with bam's trainer, record the returned card."""
    from _fake_data import FakeData

    from bam.train import TrainConfig, fit

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = TrainConfig(arch="small_resnet", arch_kwargs={"widths": [8, 16, 32]}, epochs=3, batch_size=16,
                          lr=0.05, warmup_epochs=0.0)
        card = fit(cfg, FakeData(instances=24, val=6), Path(out) / "model", "obj", device="cpu")
        Path(out, f"rank{rank}.json").write_text(json.dumps(card.to_dict()))
    finally:
        dist.destroy_process_group()

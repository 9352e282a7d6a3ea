"""Data-parallel training: two CPU processes (gloo) train one model and write one checkpoint."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from bam.models import find_models, load


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow  # two fresh interpreters importing torch: ~30-100 s on a shared 2-core machine
def test_two_process_gloo_training(tmp_path: Path) -> None:
    from _ddp_worker import run

    mp.spawn(run, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    found = find_models(tmp_path)
    assert len(found) == 1  # rank 0 wrote the only checkpoint
    cards = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for c in cards:
        c.pop("training_time_s")
    assert cards[0] == cards[1]  # both ranks agree on weights and (all-reduced) accuracies
    state = torch.load(tmp_path / "model" / "train_state.pt", weights_only=True)
    assert state["settings"]["world_size"] == 2
    hist = state["history"]
    assert hist[-1]["loss"] < hist[0]["loss"]
    model = load(tmp_path / "model")
    assert model.card.weights_sha256 == cards[0]["weights_sha256"]
    assert model.card.accuracy["val"] >= 0.6  # 3 classes: chance 1/3

"""CAV cache: a second run computes nothing; a corrupt entry is ignored and recomputed; keys separate."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytest
from _toy import ToyNet, toy_sets, toy_source

from bam.concepts import CavCache, ModelSpec, TcavConfig, TcavJob, run_tcav


def _run(model: ToyNet, cache: Path, **cfg: object) -> tuple[pd.DataFrame, dict[str, int]]:
    sets = toy_sets(60, 2, targets=40)
    job = TcavJob(sets, toy_source(model, sets, 5.0, 1.0), TcavConfig(**cfg), CavCache(cache))  # type: ignore[arg-type]
    res = run_tcav(job, [ModelSpec("obj", model, "a" * 64, 0, "q")])
    return res.records, dict(res.counts)


def test_second_run_trains_nothing_and_gives_identical_records(tmp_path: Path) -> None:
    model = ToyNet(head="quadratic")
    first, c1 = _run(model, tmp_path)
    assert c1["cavs_trained"] == 8 and c1["cavs_cached"] == 0 and c1["activation_images"] == 2 * 240
    files = sorted(tmp_path.rglob("*.safetensors"))
    assert len(files) == 8
    second, c2 = _run(model, tmp_path)
    assert c2["cavs_trained"] == 0 and c2["cavs_cached"] == 8 and c2["activation_images"] == 0
    pd.testing.assert_frame_equal(first, second)
    _, c3 = _run(model, tmp_path, alpha=0.01)  # another alpha: other keys
    assert c3["cavs_trained"] == 8
    assert len(list(tmp_path.rglob("*.safetensors"))) == 16


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_entry_is_recomputed(tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    model = ToyNet(head="quadratic")
    first, _ = _run(model, tmp_path)
    victim = sorted(tmp_path.rglob("*.safetensors"))[3]
    blob = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(blob[: len(blob) // 2])
    elif damage == "flip":  # one bit of the vector: the content hash no longer matches
        victim.write_bytes(blob[:-3] + bytes([blob[-3] ^ 1]) + blob[-2:])
    else:
        victim.write_text("not a safetensors file")
    with caplog.at_level(logging.WARNING, logger="bam.concepts"):
        again, counts = _run(model, tmp_path)
    assert counts["cache_corrupt"] == 1 and counts["cavs_cached"] == 7
    # the layer with the bad entry is recomputed (its 4 CAVs' activations, 1 CAV trained)
    assert counts["cavs_trained"] == 1 and counts["activation_images"] == 240
    assert "corrupt" in caplog.text
    pd.testing.assert_frame_equal(first, again)
    _, fixed = _run(model, tmp_path)  # rewritten: clean again
    assert fixed["cavs_trained"] == 0 and fixed["cache_corrupt"] == 0


def test_entry_under_a_foreign_key_is_not_trusted(tmp_path: Path) -> None:
    cache = CavCache(tmp_path)
    import torch

    key_a, key_b = {"k": 1}, {"k": 2}
    cache.put(key_a, torch.ones(3), {"accuracy": 1.0})
    path_b = cache.path(key_b)
    assert path_b is not None
    path_b.parent.mkdir(parents=True, exist_ok=True)
    path_b.write_bytes(cache.path(key_a).read_bytes())  # type: ignore[union-attr]
    assert cache.get(key_b, torch.device("cpu")) is None and cache.corrupt == 1
    hit = cache.get(key_a, torch.device("cpu"))
    assert hit is not None and hit.info == {"accuracy": 1.0} and torch.equal(hit.vector, torch.ones(3))
    none = CavCache(None)
    none.put(key_a, torch.ones(3), {})
    assert none.get(key_a, torch.device("cpu")) is None

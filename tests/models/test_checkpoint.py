"""Checkpoints: save/load round trip, tamper detection, model cards, find_models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bam._io import sha256_file
from bam.errors import BamError
from bam.models import ModelCard, create_model, find_models, load, read_card, save


def _trained_like(arch: str, size: int = 32) -> torch.nn.Module:
    model = create_model(arch, num_classes=4, image_size=size, input_size=size + 8)
    with torch.no_grad():  # move BN statistics and weights away from their init
        model.train()
        for _ in range(2):
            model(torch.rand(8, 3, size, size))
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model.eval()


@pytest.mark.parametrize("arch", ["small_resnet", "resnet18"])
def test_save_load_round_trip_equal_logits(tmp_path: Path, arch: str) -> None:
    model = _trained_like(arch)
    card = save(model, tmp_path / "m", ModelCard(arch=arch, role="obj", num_classes=4, image_size=32,
                                                   class_names=("a", "b", "c", "d"), accuracy={"val": 0.5}))
    assert card.weights_sha256 == sha256_file(tmp_path / "m" / "model.safetensors")
    assert card.input_size == 40 and card.normalization["name"] in ("centered", "imagenet")
    assert card.invertible is False
    loaded = load(tmp_path / "m")
    assert not loaded.training
    assert loaded.card == card
    x = torch.rand(5, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_card_json_round_trip(tmp_path: Path) -> None:
    card = ModelCard(arch="small_resnet", role="commonality-3", num_classes=10, image_size=64,
                     arch_kwargs={"widths": [8, 16, 32]}, class_names=tuple("abcdefghij"), input_size=64,
                     normalization={"name": "centered", "mean": [0.5] * 3, "std": [0.25] * 3}, recipe="synthetic",
                     dataset_manifest_hash="ab" * 32, seed=3, accuracy={"val": 0.9, "val_common_in_scene": 1.0},
                     training_time_s=12.5, weights_sha256="cd" * 32)
    save_dir = tmp_path / "c"
    save_dir.mkdir()
    (save_dir / "card.json").write_text(json.dumps(card.to_dict()))
    assert read_card(save_dir) == card


def test_tampered_weights_are_detected(tmp_path: Path) -> None:
    model = _trained_like("small_resnet")
    save(model, tmp_path / "m", ModelCard(arch="small_resnet", role="obj", num_classes=4, image_size=32))
    path = tmp_path / "m" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip bits of one weight
    path.write_bytes(bytes(data))
    with pytest.raises(BamError, match=r"checksum mismatch .*model.safetensors.*\(corrupt or edited\)"):
        load(tmp_path / "m")


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(BamError, match="no model card"):
        load(tmp_path)
    model = _trained_like("small_resnet")
    save(model, tmp_path / "m", ModelCard(arch="small_resnet", role="obj", num_classes=4, image_size=32))
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    (tmp_path / "m" / "card.json").write_text(json.dumps({**card, "num_classes": 5}))
    with pytest.raises(BamError, match=r"do not fit the card's architecture 'small_resnet': tensor '[\w.]+' is "
                                       r"\[4(, \d+)*\] in the weights, the card's architecture needs \[5"):
        load(tmp_path / "m")
    (tmp_path / "m" / "card.json").write_text(json.dumps({**card, "colour": "red"}))
    with pytest.raises(BamError, match=r"unknown config key.*colour"):
        load(tmp_path / "m")
    (tmp_path / "m" / "card.json").write_text("{not json")
    with pytest.raises(BamError, match="malformed JSON"):
        load(tmp_path / "m")


def test_find_models_scans_subdirectories(tmp_path: Path) -> None:
    model = _trained_like("small_resnet")
    for sub, role in (("obj", "obj"), ("scene", "scene"), ("nested/commonality-2", "commonality-2")):
        save(model, tmp_path / sub, ModelCard(arch="small_resnet", role=role, num_classes=4, image_size=32))
    (tmp_path / "empty").mkdir()
    found = find_models(tmp_path)
    assert [(p.relative_to(tmp_path).as_posix(), c.role) for p, c in found] == [
        ("nested/commonality-2", "commonality-2"), ("obj", "obj"), ("scene", "scene")]
    with pytest.raises(BamError, match="does not exist"):
        find_models(tmp_path / "nope")


def test_load_leaves_global_rng_alone(tmp_path: Path) -> None:
    save(_trained_like("small_resnet"), tmp_path / "m", ModelCard(arch="small_resnet", role="obj", num_classes=4,
                                                                  image_size=32))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load(tmp_path / "m")
    torch.testing.assert_close(torch.rand(3), expected)

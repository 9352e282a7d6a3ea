"""TCAV end to end on a real tiny build with quickly trained small ResNets (integration, not quality)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bam.concepts import (
    CONCEPT_METHODS,
    RECORD_COLUMNS,
    TcavConfig,
    concept_method_info,
    get_concept_method,
    tcav_records,
)
from bam.data import open_dataset
from bam.errors import BamError
from bam.metrics.tcav import tcav_mcs, tcav_rmcs
from bam.models import load

CFG = TcavConfig(concept_size=10, random_size=5, split="train", batch_size=4)


def _models(paths: dict[str, Path]) -> dict[str, tuple[object, str]]:
    out = {}
    for role, p in paths.items():
        m = load(p)
        out[role] = (m, m.card.weights_sha256)
    return out


def test_tcav_on_tiny_models(tiny_dir: Path, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    data = open_dataset(tiny_dir)
    models = _models(tiny_models)
    res = tcav_records(models, data, CFG, tmp_path / "cache", device="cpu")
    layers = ["block_layer1", "block_layer2", "block_layer3", "logit"]
    assert list(res.records.columns) == RECORD_COLUMNS
    assert len(res.records) == 5 * len(layers) * 4 * 3  # roles x layers x (2 concept + 2 random runs) x 3 targets
    s = res.summary.set_index(["model_role", "layer"])
    assert len(s) == 5 * len(layers) and set(s.index.get_level_values("layer")) == set(layers)
    assert s["summary"].groupby(level="model_role").sum().eq(1).all()
    assert s.loc[("obj", "block_layer2"), "summary"] and s.loc[("obj", "block_layer2"), "target_name"] == "circle"
    assert s.loc[("scene", "logit"), "target_name"] == "checker"
    assert s["score"].between(0, 1).all() and s["p_value"].dropna().between(0, 1).all()
    assert s["cav_accuracy"].between(0, 1).all()
    assert res.counts["cavs_trained"] == 5 * len(layers) * 4
    assert res.counts["gradient_images"] == 5 * 3  # one forward+backward per target image per model
    mcs = tcav_mcs(res.records)
    assert mcs.n_used == 3 and -1 <= mcs.value <= 1 and mcs.roles == ("obj", "scene")
    rmcs = tcav_rmcs(res.records, num_k=3)
    assert [c.k for c in rmcs.curve] == [1, 2] and rmcs.per_image.shape == (3, 2)
    again = tcav_records(_models(tiny_models), data, CFG, tmp_path / "cache", device="cpu")
    assert again.counts["cavs_trained"] == 0 and again.counts["activation_images"] == 0
    pd.testing.assert_frame_equal(res.records, again.records)
    assert np.isfinite(res.summary["score"]).all()


def test_registry_entry_and_bad_input(tiny_dir: Path, tiny_models: dict[str, Path]) -> None:
    assert "tcav" in CONCEPT_METHODS and get_concept_method("tcav") is tcav_records
    info = concept_method_info("tcav")
    assert info.defaults["alpha"] == 0.1 and info.defaults["num_random"] == 2 and info.config_type is TcavConfig
    data = open_dataset(tiny_dir)
    obj = _models({"obj": tiny_models["obj"]})
    with pytest.raises(BamError, match="unknown tcav model role 'iir'"):
        tcav_records({"iir": obj["obj"]}, data, CFG)
    with pytest.raises(BamError, match=r"has no bottleneck 'block_layer4'; accepted: block_layer1, block_layer2, "
                                       r"block_layer3, logit"):
        tcav_records(obj, data, {**CFG.__dict__, "layers": ["block_layer4"]})
    with pytest.raises(BamError, match="too few concept images"):
        tcav_records(obj, data, TcavConfig())
    with pytest.raises(BamError, match="accepted: \\(model, weights sha256\\)"):
        tcav_records({"obj": obj["obj"][0]}, data, CFG)  # type: ignore[dict-item]


@pytest.mark.parametrize(("arch", "kw", "stages"), [("resnet18", {}, 4), ("resnet50", {}, 4),
                                                    ("iresnet", {"blocks": [1, 1], "hidden": [8, 8]}, 2)])
def test_every_staged_arch_runs(tiny_dir: Path, arch: str, kw: dict[str, object], stages: int) -> None:
    from bam.models import create_model

    data = open_dataset(tiny_dir)
    model = create_model(arch, num_classes=len(data.object_classes), image_size=32, **kw).eval()
    cfg = TcavConfig(concept_size=6, random_size=3, split="train", batch_size=8)
    res = tcav_records({"obj": (model, "0" * 64)}, data, cfg, None)
    assert list(res.summary["layer"]) == [f"block_layer{i}" for i in range(1, stages + 1)] + ["logit"]
    assert res.summary.loc[res.summary["summary"], "layer"].tolist() == [f"block_layer{stages - 1}"]
    assert res.summary["score"].between(0, 1).all() and res.counts["gradient_images"] == 3

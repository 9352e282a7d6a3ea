"""The `paper` eval config end to end: a paper-style build (COCO-format fixture + MiniPlaces layout),
ResNet-50s that resize inside, model space, the boundary reference procedure and the paper GFI objective."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from _data_helpers import REAL, invoke, write_recipe

METHODS = ("gradient", "smoothgrad", "integrated_gradients", "deeplift", "gradcam", "guided_feature_inversion",
           "boundary_gradient", "random")


@pytest.mark.slow
def test_paper_config_runs_in_model_space(real_sources: Callable[..., dict[str, Path]], tmp_path: Path) -> None:
    from bam.data import open_dataset
    from bam.models import ModelCard, create_model, save

    src = real_sources()
    recipe = write_recipe(tmp_path / "paper_t.yaml", **{**REAL, "instances_per_class": 5, "val_instances": 2})
    res = invoke("build-data", "--recipe", str(recipe), "--out", str(tmp_path / "data"), "--coco-images",
                 str(src["coco_images"]), "--coco-annotations", str(src["coco_annotations"]), "--scenes",
                 str(src["scenes"]))
    assert res.exit_code == 0, res.output
    data = open_dataset(tmp_path / "data")
    for role in ("obj", "scene", "scene_only"):  # tiny ResNet-50s: 32 px images resized to 64 inside, paper means
        torch.manual_seed(len(role))
        k = len(data.object_classes if role == "obj" else data.scene_classes)
        model = create_model("resnet50", num_classes=k, image_size=data.image_size, input_size=64,
                             normalization="paper")
        save(model, tmp_path / "models" / role, ModelCard(arch="resnet50", role=role, num_classes=k,
                                                          image_size=data.image_size, input_size=64,
                                                          dataset_manifest_hash=data.manifest_hash))
    args = ["-q", "evaluate", "--data", str(tmp_path / "data"), "--models", str(tmp_path / "models"), "--config",
            "paper", "--limit", "3", "--device", "cpu", "--out", str(tmp_path / "eval")]
    for m in METHODS:
        args += ["--method", m]
    for metric in ("mcs", "idr", "iir"):
        args += ["--metric", metric]
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "eval" / "results.csv", keep_default_na=False)
    assert set(table["method"]) == set(METHODS) and set(table["metric"]) == {"mcs", "idr", "iir"}
    space = dict(zip(table["method"], table["space"]))
    assert space["random"] == "pixel" and all(space[m] == "model" for m in METHODS if m != "random")
    params = {m: json.loads(p) for m, p in zip(table["method"], table["method_params"])}
    assert params["guided_feature_inversion"]["objective"] == "paper"
    assert params["boundary_gradient"]["cw"] == "all" and params["boundary_gradient"]["skip_factor"] == 0
    cfg = json.loads((tmp_path / "eval" / "provenance.json").read_text())["config"]
    assert cfg["space"] == "model" and cfg["mask_mode"] == "bilinear"
    recs = pd.read_csv(tmp_path / "eval" / "records.csv")
    ok = recs[recs["status"] == "ok"]
    assert len(ok) > 0 and ok["g"].between(0, 1).all()

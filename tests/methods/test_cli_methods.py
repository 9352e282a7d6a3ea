"""CLI: `bam methods list/show` and `bam explain` (through bam.cli.main.cli with click's CliRunner)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from bam.cli.main import cli
from bam.methods import get_info, list_methods


def test_methods_list_shows_every_method_and_passes():
    res = CliRunner().invoke(cli, ["methods", "list"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].split()[:3] == ["name", "title", "family"]
    for name in list_methods():
        row = next(line for line in lines if line.startswith(name + " "))
        assert row.rstrip().endswith(str(get_info(name).passes(get_info(name).defaults)))
    assert "ig_smoothgrad" in res.output and "625" in res.output
    assert "package.module:callable" in res.output


def test_methods_list_json_matches_registry():
    res = CliRunner().invoke(cli, ["methods", "list", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert set(rows) == set(list_methods())
    assert rows["integrated_gradients"]["defaults"] == {"steps": 25, "baseline": 0.0}
    assert rows["smoothgrad"]["passes"] == 25 and rows["gradcam"]["requires"] == ["conv_layer"]


def test_methods_show_and_unknown():
    res = CliRunner().invoke(cli, ["methods", "show", "smoothgrad"])
    assert res.exit_code == 0, res.output
    assert "samples=25, noise_level=0.15" in res.output and "Smilkov" in res.output
    bad = CliRunner().invoke(cli, ["methods", "show", "nope"])
    assert bad.exit_code == 2
    assert "error: unknown method 'nope'" in bad.output and "package.module:callable" in bad.output


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny synthetic dataset and an untrained small_resnet checkpoint for it."""
    import torch

    from bam.data import build_dataset, load_recipe
    from bam.models import ModelCard, create_model, save

    root = tmp_path_factory.mktemp("explain")
    built = build_dataset(load_recipe("tiny"), root / "data", seed=0)
    torch.manual_seed(0)
    model = create_model("small_resnet", num_classes=3, image_size=32).eval()
    save(model, root / "model", ModelCard(arch="small_resnet", role="obj", num_classes=3, image_size=32,
                                          class_names=("circle", "cross", "triangle"),
                                          dataset_manifest_hash=built.manifest_hash))
    return root


def test_explain_writes_png(tiny_run, tmp_path):
    from PIL import Image

    out = tmp_path / "fig.png"
    args = ["explain", "--data", str(tiny_run / "data"), "--model", str(tiny_run / "model"), "--method", "gradient",
            "--method", "gradcam", "--method", "random", "--images", "2", "--out", str(out), "--device", "cpu", "-q"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "2 images x 3 methods" in res.output
    with Image.open(out) as im:
        w, h = im.size
    assert w > h > 50  # 4 columns, 2 rows


@pytest.mark.parametrize("extra, words", [
    (["--method", "nope"], "unknown method 'nope'"),
    (["--images", "0"], "'--images': 0 is not in the range 1<=x<=64"),
    (["--subset", "nope"], "unknown subset 'nope'"),
])
def test_explain_bad_input(tiny_run, tmp_path, extra, words):
    args = ["explain", "--data", str(tiny_run / "data"), "--model", str(tiny_run / "model"),
            "--out", str(tmp_path / "x.png"), "--device", "cpu", "-q", *extra]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, res.output
    assert words in res.output
    assert not (tmp_path / "x.png").exists()


def test_display_maps_follow_spec_normalisation():
    import torch

    from bam.methods._figure import display_maps

    e = torch.zeros(2, 3, 10, 10)
    e[0, 0] = torch.arange(100.0).view(10, 10)  # positive part summed over channels
    e[0, 1] = -5.0  # negative parts are dropped, not absolute-valued
    m = display_maps(e)
    p99 = torch.quantile(torch.arange(100.0), 0.99)
    torch.testing.assert_close(m[0], (torch.arange(100.0).view(10, 10) / p99).clamp(0, 1))
    assert torch.isnan(m[1]).all()  # constant map: undefined, as the metric sees it (drawn as "no map")
    from bam.metrics import normalise_maps, positive_map

    torch.testing.assert_close(m, normalise_maps(positive_map(e))[0], equal_nan=True)  # one normalisation

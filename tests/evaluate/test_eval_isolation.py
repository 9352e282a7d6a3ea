"""Isolation of methods (issue 23): a hostile plug-in cannot change another method's records or examples,
nothing it touched is cached, and a plug-in cannot end the run (sys.exit) or return junk silently."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from evalfakes import FakeData, make_models
from torch import Tensor

from bam.evaluate import EvalConfig, EvalResult, ModelEntry, PatchConfig, evaluate

MOD = "test_eval_isolation:"


# ------------------------------------------------------------------------------ hostile plug-ins
def zero_weights(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """Zeroes every parameter in place (version counters move)."""
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return inputs.clone()


def scale_weights_data(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """Scales every parameter through ``.data`` (no version counter moves: only the fingerprint sees it)."""
    for p in model.parameters():
        p.data.mul_(1.5)
    return inputs.clone()


def train_forward(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """Switches to train mode and runs a forward: BatchNorm running statistics move."""
    model.train()
    with torch.no_grad():
        model(inputs)
    return inputs.clone()


def write_inputs(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    """Writes into its inputs (and its targets) through ``.data``."""
    out = inputs.clone()
    inputs.data.mul_(0.0)
    target.data.zero_()
    return out


def exits_0(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    sys.exit(0)


def exits_3(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> Tensor:
    sys.exit(3)


def returns_numpy(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> Any:
    return inputs.numpy()


def returns_tuple(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> Any:
    return inputs, inputs


def returns_none(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> Any:
    return None


def returns_int64(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> Any:
    return (inputs * 10).long()


def returns_complex(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> Any:
    return inputs.to(torch.complex64)


def returns_meta(model: torch.nn.Module, inputs: Tensor, target: Tensor) -> Any:
    return torch.empty(inputs.shape, device="meta")


def powered(model: torch.nn.Module, inputs: Tensor, target: Tensor, *, power: float = 1.0) -> Tensor:
    return inputs ** power


# ------------------------------------------------------------------------------ helpers
@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> FakeData:
    return FakeData(tmp_path_factory.mktemp("iso") / "data", n=2)


def bn_models(data: FakeData) -> list[ModelEntry]:
    """The fake roles with small_resnet models (BatchNorm buffers, ReLUs): fresh each call, same weights."""
    from bam.models import create_model

    out = []
    for e in make_models(data.manifest_hash, ["obj", "scene"]):
        torch.manual_seed(len(e.card.role))
        model = create_model("small_resnet", num_classes=int(e.card.num_classes), image_size=16).eval()
        out.append(ModelEntry(model, e.card, e.path))
    return out


def run(data: FakeData, out: Path, *methods: str) -> EvalResult:
    cfg = EvalConfig(methods=methods, metrics=("mcs",), batch_size=8, bootstrap=50, examples=2,
                     iir_patch=PatchConfig(steps=3))
    res = evaluate(data, bn_models(data), cfg, out)
    assert res is not None
    return res


def method_rows(out: Path, method: str) -> list[str]:
    """The records.csv lines of ``method`` (byte for byte)."""
    lines = (out / "records.csv").read_text().splitlines()
    col = lines[0].split(",").index("method")
    return [ln for ln in lines[1:] if ln.split(",")[col] == method]


def example_tensors(out: Path, method: str) -> dict[str, bytes]:
    from safetensors import safe_open

    with safe_open(str(out / "examples.safetensors"), framework="pt") as fh:
        meta = fh.metadata()
        return {k: fh.get_tensor(k).numpy().tobytes() + meta[k].encode() for k in fh.keys()  # noqa: SIM118
                if k.startswith(f"attr/{method}/")}


def cached_methods(out: Path) -> set[str]:
    return {json.loads(p.read_text())["key"]["method"] for p in (out / "cache" / "records").rglob("*.json")}


@pytest.fixture(scope="module")
def reference(data: FakeData, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict[str, bytes]]:
    """gradient's records.csv lines and example heatmaps from a run without any plug-in."""
    out = tmp_path_factory.mktemp("ref") / "ref"
    run(data, out, "gradient")
    rows, ex = method_rows(out, "gradient"), example_tensors(out, "gradient")
    assert len(rows) == 18 * 2 and len(ex) == 2
    return rows, ex


HOSTILE = {"zero_weights": "changed the model's parameters (net.stem.0.weight", "scale_weights_data": "changed the model's parameters",
           "train_forward": "between train and eval mode", "write_inputs": "wrote into its inputs"}


@pytest.mark.parametrize("first", [True, False])
def test_hostile_plugins_cannot_touch_other_methods(data: FakeData, tmp_path: Path, reference: Any,
                                                    first: bool) -> None:
    """Each hostile plug-in, all in one run before (or after) gradient: gradient's records and heatmaps are
    byte-identical to a run without them, each plug-in is one failure naming what it changed, nothing
    they touched is cached, and a later clean run into the same folder reads the clean records back."""
    out = tmp_path / "o"
    names = [MOD + p for p in HOSTILE]
    res = run(data, out, *((*names, "gradient") if first else ("gradient", *names)))
    rows, ex = reference
    assert method_rows(out, "gradient") == rows
    assert example_tensors(out, "gradient") == ex
    for plugin, words in HOSTILE.items():
        name = MOD + plugin
        mine = res.records[res.records["method"] == name]
        assert len(mine) == 36 and (mine["status"] == "method_failed").all()
        msg = res.failed_everywhere[name]
        assert words in msg and msg.startswith(f"method {name!r} ") and "\n" not in msg, msg
        assert not example_tensors(out, name)
    assert cached_methods(out) == {"gradient"}  # nothing a plug-in touched is cached
    again = run(data, out, "gradient")
    assert method_rows(out, "gradient") == rows and again.provenance["cache"]["records_from_cache"] == 36
    assert example_tensors(out, "gradient") == ex


BAD = {
    "exits_0": "SystemExit: the method called sys.exit(0)",
    "exits_3": "SystemExit: the method called sys.exit(3)",
    "returns_numpy": "returned a numpy.ndarray of shape (8, 3, 16, 16); accepted: a floating tensor of the "
                     "input's shape (8, 3, 16, 16) on cpu",
    "returns_tuple": "returned a tuple of 2 item(s); accepted: a floating tensor",
    "returns_none": "returned None; accepted: a floating tensor",
    "returns_int64": "returned a int64 tensor of shape (8, 3, 16, 16) on cpu; accepted: a floating tensor",
    "returns_complex": "returned a complex64 tensor of shape (8, 3, 16, 16) on cpu; accepted",
    "returns_meta": "returned a float32 tensor of shape (8, 3, 16, 16) on meta; accepted: a floating tensor of "
                    "the input's shape (8, 3, 16, 16) on cpu",
}


def test_bad_plugins_are_one_failure_each_and_the_others_complete(data: FakeData, tmp_path: Path,
                                                                  reference: Any) -> None:
    out = tmp_path / "o"
    res = run(data, out, *(MOD + p for p in BAD), "gradient")
    for plugin, words in BAD.items():
        msg = res.failed_everywhere[MOD + plugin]
        assert words in msg and "\n" not in msg, msg
    assert method_rows(out, "gradient") == reference[0] and example_tensors(out, "gradient") == reference[1]
    assert set(res.results["method"]) == {*(MOD + p for p in BAD), "gradient"}
    assert res.results.loc[res.results["method"] == "gradient", "value"].notna().all()
    assert (out / "outputs.json").is_file() and cached_methods(out) == {"gradient"}


def test_plugin_parameter_typo_is_refused_before_any_work(data: FakeData, tmp_path: Path) -> None:
    from bam.errors import BamError

    cfg = EvalConfig(methods=(MOD + "powered",), metrics=("mcs",), method_params={MOD + "powered": {"powr": 2}})
    with pytest.raises(BamError, match=r"unknown parameter\(s\) powr for plug-in method 'test_eval_isolation:"
                                       r"powered'; accepted \(from its signature\): power"):
        evaluate(data, bn_models(data), cfg, tmp_path / "o")
    assert not (tmp_path / "o").exists()
    ok = EvalConfig(methods=(MOD + "powered",), metrics=("mcs",), examples=0, method_params={MOD + "powered": {"power": 2}})
    res = evaluate(data, bn_models(data), ok, tmp_path / "o")
    assert res is not None and not res.failed_everywhere


def test_isolation_cost_is_recorded(data: FakeData, tmp_path: Path) -> None:
    res = run(data, tmp_path / "o", "gradient", "random")
    iso = res.provenance["isolation"]
    assert iso["checks"] == 2 * 2 * 3 and iso["seconds"] > 0  # 2 methods x 2 units x 3 chunks of 8/18 images
    assert np.isfinite(iso["seconds"])


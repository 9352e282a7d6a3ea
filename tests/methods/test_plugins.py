"""Plug-in methods: ``package.module:callable`` through the uniform call, and the shipped example."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

from bam.errors import BamError
from bam.methods import attribute, attribute_full, get_info

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

PLUGIN = '''
import torch
from bam.methods import MethodInfo

def grad_sign(model, inputs, target, *, scale=2.0, micro_batch=0):
    """Sign of the gradient times scale."""
    x = inputs.detach().requires_grad_(True)
    model(x).gather(1, target.view(-1, 1)).sum().backward()
    return scale * x.grad.sign()

def wrong_shape(model, inputs, target):
    return inputs[:, :1]

def half_nan(model, inputs, target):
    out = torch.zeros_like(inputs)
    out[0] = float("nan")
    return out

def anything(model, inputs, target, **params):
    return inputs * params.get("gain", 1.0)

def as_numpy(model, inputs, target):
    return inputs.numpy()

def described(model, inputs, target, *, k=1):
    return inputs * k

described.bam_info = MethodInfo(name="described", title="Input times k", paper="none", family="plugin",
                                defaults={"k": 3})
'''


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    name = f"bam_test_plugin_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PLUGIN))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_plugin_runs_through_attribute(plugin_module, linear_net, targets):
    x = torch.rand(5, 3, 4, 4)
    w = linear_net.fc.weight.detach()[targets].view_as(x)
    got = attribute(f"{plugin_module}:grad_sign", linear_net, x, targets)
    torch.testing.assert_close(got, 2.0 * w.sign())
    torch.testing.assert_close(attribute(f"{plugin_module}:grad_sign", linear_net, x, targets, scale=0.5),
                               0.5 * w.sign())
    info = get_info(f"{plugin_module}:grad_sign")
    assert info.family == "plugin" and dict(info.defaults) == {"scale": 2.0, "micro_batch": 0}
    assert info.title == "Sign of the gradient times scale."


def test_plugin_with_bam_info_keeps_defaults(plugin_module, linear_net):
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(attribute(f"{plugin_module}:described", linear_net, x, 0), 3 * x)
    assert get_info(f"{plugin_module}:described").name == f"{plugin_module}:described"


def test_plugin_wrong_shape_raises(plugin_module, linear_net):
    with pytest.raises(BamError, match="returned a float32 tensor of shape"):
        attribute(f"{plugin_module}:wrong_shape", linear_net, torch.rand(2, 3, 4, 4), 0)


def test_plugin_nan_rows_are_invalid(plugin_module, linear_net):
    res = attribute_full(f"{plugin_module}:half_nan", linear_net, torch.rand(3, 3, 4, 4), 0)
    assert res.valid.tolist() == [False, True, True]
    assert res.extras["nonfinite"].tolist() == [1.0, 0.0, 0.0]
    assert torch.isnan(attribute(f"{plugin_module}:half_nan", linear_net, torch.rand(3, 3, 4, 4), 0)[0]).all()


@pytest.mark.parametrize("spec, words", [
    ("no_such_module_xyz:fn", "cannot import plug-in module"),
    (":fn", "expected package.module:callable"),
])
def test_bad_plugin_specs(spec, words):
    with pytest.raises(BamError, match=words):
        attribute(spec, torch.nn.Identity(), torch.rand(1, 3, 4, 4), 0)


def test_plugin_missing_attribute(plugin_module):
    with pytest.raises(BamError, match="no attribute 'nope'"):
        attribute(f"{plugin_module}:nope", torch.nn.Identity(), torch.rand(1, 3, 4, 4), 0)


def test_example_occlusion_plugin(monkeypatch, linear_net, targets):
    """On a linear model, occluding a patch drops the logit by Σ_patch w·(x - fill): check one pixel by hand."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    x = torch.rand(5, 3, 4, 4)
    got = attribute("my_method:occlusion", linear_net, x, targets, patch=2, stride=2, fill=0.5, micro_batch=3)
    w = linear_net.fc.weight.detach()[targets].view_as(x)
    # stride = patch: each pixel is covered by exactly one patch; pixel (0, 0) by the top-left one
    drop = (w * (x - 0.5))[:, :, :2, :2].sum((1, 2, 3))
    torch.testing.assert_close(got[:, 0, 0, 0], drop)
    torch.testing.assert_close(got[:, 2, 1, 1], drop)
    big = attribute("my_method:occlusion", linear_net, x, targets, patch=2, stride=2, fill=0.5, micro_batch=1000)
    torch.testing.assert_close(got, big)


def test_plugin_parameters_come_from_its_signature(plugin_module, linear_net):
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(BamError, match=r"unknown parameter\(s\) powr for plug-in method .*grad_sign'; accepted "
                                       r"\(from its signature\): micro_batch, scale"):
        attribute(f"{plugin_module}:grad_sign", linear_net, x, 0, powr=2)
    torch.testing.assert_close(attribute(f"{plugin_module}:anything", linear_net, x, 0, gain=3.0), 3 * x)  # **params
    assert get_info(f"{plugin_module}:anything").accepts is None
    assert get_info(f"{plugin_module}:grad_sign").accepts == {"scale", "micro_batch"}


def test_plugin_identity_is_its_code_and_module_source(plugin_module, tmp_path):
    from bam.methods._plugin import code_sha256

    a, b = get_info(f"{plugin_module}:grad_sign"), get_info(f"{plugin_module}:half_nan")
    assert a.code_sha256 != b.code_sha256 and len(a.code_sha256) == 64 and not a.reads_inputs_only
    assert get_info("gradient").code_sha256 == "" and get_info("gradient").reads_inputs_only

    def f(model, inputs, target):
        return inputs * 2

    def g(model, inputs, target):
        return inputs * 3

    assert code_sha256(f) != code_sha256(g)  # same module, other constants


def test_plugin_numpy_return_is_one_clear_error(plugin_module, linear_net):
    with pytest.raises(BamError, match=r"returned a numpy.ndarray of shape \(2, 3, 4, 4\); accepted: a floating "
                                       r"tensor of the input's shape \(2, 3, 4, 4\) on cpu"):
        attribute(f"{plugin_module}:as_numpy", linear_net, torch.rand(2, 3, 4, 4), 0)

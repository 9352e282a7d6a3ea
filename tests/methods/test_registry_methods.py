"""Every registered method (built-in and written by others) on tiny bam models: the shared contract."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import bam.models as models
from bam.errors import BamError
from bam.methods import METHODS, attribute, attribute_full, get_info, list_methods


def _shipped() -> list[str]:
    """Every method bam ships (registered from bam.methods); test-only fakes elsewhere are excluded."""
    return [n for n in list_methods() if METHODS.get(n).__module__.startswith("bam.methods.")]


def test_every_protocol_method_is_registered() -> None:
    spec = {"gradient", "smoothgrad", "grad_x_input", "integrated_gradients", "ig_smoothgrad", "guided_backprop",
            "gradcam", "guided_gradcam", "deeplift", "boundary_ig", "boundary_gradient", "invertible_projection",
            "invertible_taylor", "guided_feature_inversion", "random", "edge", "center"}
    assert spec <= set(_shipped())

IMAGE_SIZE = 32
NUM_CLASSES = 3


def _fast_params(name: str) -> dict[str, Any]:
    """Shrink step/sample counts (any int default named *steps or *samples) so the suite stays fast."""
    info = get_info(name)
    fast: dict[str, Any] = {}
    for key, value in info.defaults.items():
        if isinstance(value, int) and not isinstance(value, bool) and key.endswith(("steps", "samples")):
            fast[key] = min(value, 3)
    return fast


_MODELS: dict[str, torch.nn.Module] = {}


def _model(arch: str) -> torch.nn.Module:
    if arch not in models.list_models():
        pytest.skip(f"arch {arch!r} not registered yet")
    if arch not in _MODELS:
        torch.manual_seed(0)
        _MODELS[arch] = models.create_model(arch, num_classes=NUM_CLASSES, image_size=IMAGE_SIZE).eval()
    return _MODELS[arch]


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(4)
    return torch.rand(3, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen), torch.tensor([0, 1, 2])


def _invertible_archs() -> list[str]:
    """Registered archs whose factory declares the protocol's ``is_invertible`` flag (iresnet, irevnet, ...);
    :func:`test_invertible_archs_are_discovered` checks this against the built models."""
    return [a for a in models.list_models() if getattr(models.MODELS.get(a), "is_invertible", False)]


def _arch_for(name: str) -> tuple[str, str | None]:
    """(default arch to run on, arch the method must refuse or None)."""
    if "invertible" in get_info(name).requires:
        return "irevnet", "small_resnet"
    return "small_resnet", None


def _cases() -> list[tuple[str, str]]:
    """(method, arch): invertible methods on every invertible arch, the CAM family on irevnet too."""
    out: list[tuple[str, str]] = []
    for name in _shipped():
        requires = get_info(name).requires
        if "invertible" in requires:
            out += [(name, arch) for arch in _invertible_archs()]
        else:
            out.append((name, "small_resnet"))
            if "conv_layer" in requires:
                out.append((name, "irevnet"))
    return out


def test_invertible_archs_are_discovered() -> None:
    from bam.models.protocols import is_invertible

    found = _invertible_archs()
    assert {"iresnet", "irevnet"} <= set(found)
    for arch in models.list_models():
        assert is_invertible(_model(arch)) == (arch in found), arch


@pytest.mark.parametrize("name, arch", _cases())
def test_method_contract(name: str, arch: str) -> None:
    info = get_info(name)
    model = _model(arch)
    x, t = _batch()
    params = _fast_params(name)
    seed = {"seed": 0} if info.stochastic else {}

    res = attribute_full(name, model, x, t, **params, **seed)
    assert res.attributions.shape == x.shape
    assert res.valid.shape == (x.shape[0],) and res.valid.dtype == torch.bool
    assert res.valid.any(), f"{name}: no valid row"
    assert torch.isfinite(res.attributions[res.valid]).all()
    for key, value in res.extras.items():
        assert value.shape == (x.shape[0],), f"{name}: extra {key} has shape {tuple(value.shape)}"

    first = attribute(name, model, x, t, micro_batch=64, **params, **seed)
    again = attribute(name, model, x, t, micro_batch=64, **params, **seed)
    torch.testing.assert_close(first, again, rtol=0, atol=0, equal_nan=True)

    one = attribute(name, model, x, t, micro_batch=1, **params, **seed)
    scale = float(torch.nan_to_num(first).abs().max()) or 1.0
    torch.testing.assert_close(one, first, rtol=1e-4, atol=1e-4 * scale, equal_nan=True)

    if info.stochastic:
        other = attribute(name, model, x, t, micro_batch=64, **params, seed=1)
        assert not torch.allclose(torch.nan_to_num(other), torch.nan_to_num(first)), f"{name}: seed ignored"

    resolved = {**info.defaults, **params}
    if info.uses_model:
        assert info.passes(resolved) >= 1
    else:
        assert info.passes(resolved) == 0
    assert info.title and info.paper and info.family


@pytest.mark.parametrize("name", [n for n in _shipped() if _arch_for(n)[1] is not None])
def test_method_refuses_incapable_model(name: str) -> None:
    _, refused = _arch_for(name)
    x, t = _batch()
    with pytest.raises(BamError) as info:
        attribute(name, _model(refused), x, t, **_fast_params(name))
    assert "\n" not in str(info.value) and name in str(info.value)


def test_conv_layer_methods_refuse_model_without_gradcam_layer() -> None:
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2)).eval()
    for name in _shipped():
        if "conv_layer" in get_info(name).requires:
            with pytest.raises(BamError, match="gradcam_layer"):
                attribute(name, net, torch.rand(1, 3, 4, 4), 0)


def test_unknown_method_lists_names_and_plugin_syntax() -> None:
    with pytest.raises(BamError) as info:
        attribute("no_such_method", None, torch.rand(1, 3, 4, 4), 0)
    msg = str(info.value)
    assert "'no_such_method'" in msg and "integrated_gradients" in msg and "gradcam" in msg
    assert "package.module:callable" in msg and "\n" not in msg


def test_controls_known_values() -> None:
    x = torch.zeros(2, 3, 5, 5)
    x[:, :, :, 3:] = 1.0  # vertical step edge between columns 2 and 3
    e = attribute("edge", None, x, 0)
    assert torch.equal(e[:, 0], e[:, 2])
    # Sobel x on a unit step: |(-1 -2 -1) * 0 + (1 2 1) * 1| = 4 on the two columns next to the edge
    torch.testing.assert_close(e[0, 0, 2, 2:4], torch.tensor([4.0, 4.0]))
    assert e[0, 0, :, 0].abs().max() == 0
    c = attribute("center", None, torch.zeros(1, 3, 5, 5), 0, sigma=0.2)
    assert c[0, 0, 2, 2] == 1.0 and c[0, 0].argmax() == 12
    torch.testing.assert_close(c[0, 0, 2, 3], torch.exp(torch.tensor(-1 / (2 * 1.0 ** 2))))
    r1 = attribute("random", None, x, 0, seed=3)
    assert r1.min() >= 0 and r1.max() < 1 and torch.equal(r1[:, 0], r1[:, 1])
    assert torch.equal(r1, attribute("random", None, x, 0, seed=3))

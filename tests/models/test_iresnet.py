"""i-ResNet (Behrmann et al. 2019) as bam builds it: bijective T, exact affine head, Lip(g) < 1,
exact reload. Known answers: dense-matrix operator norms, permutation squeeze, reconstruction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from bam.errors import BamError
from bam.models._iresnet_blocks import ActNorm2d, SpectralConv2d, conv_operator_norm, squeeze, unsqueeze
from bam.models.iresnet import IResNet

SMALL = {"blocks": (1, 1, 1), "hidden": (8, 16, 32)}


def _images(n: int, size: int, seed: int = 0) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _rel_rec(model: IResNet, x: Tensor) -> Tensor:
    with torch.no_grad():
        xr = model.inverse(model.features(x))
    return (x - xr).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)


def _train_steps(model: IResNet, steps: int = 4, size: int = 32, n: int = 8) -> None:
    """A few Adam steps on random labels (moves weights, ActNorm, BatchNorm statistics)."""
    gen = torch.Generator().manual_seed(42)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _s in range(steps):
        x = torch.rand(n, 3, size, size, generator=gen)
        y = torch.randint(0, model.num_classes, (n,), generator=gen)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module")
def trained() -> IResNet:
    torch.manual_seed(1)
    model = IResNet(num_classes=4, image_size=32, **SMALL)
    _train_steps(model)
    return model


def test_default_size_reconstructs_at_init() -> None:
    model = IResNet(num_classes=10, image_size=64).eval()
    x = _images(3, 64)
    assert float(_rel_rec(model, x).max()) < 1e-4
    z = model.features(x)
    assert tuple(z.shape) == (3, 192, 8, 8) and z[0].numel() == x[0].numel()  # bijective: no padding


def test_reconstruction_after_training(trained: IResNet) -> None:
    x = _images(5, 32, seed=3)
    assert float(_rel_rec(trained, x).max()) < 1e-4
    # also far outside the training distribution
    assert float(_rel_rec(trained, 3 * x - 1).max()) < 1e-4


def test_logits_equal_affine_form(trained: IResNet) -> None:
    x = _images(6, 32, seed=4)
    a, b = trained.affine_head()
    with torch.no_grad():
        z = trained.features(x)
        logits = trained(x)
    assert tuple(a.shape) == (4, z[0].numel()) and tuple(b.shape) == (4,)
    assert float(trained.head_norm.running_mean.abs().max()) > 0  # the BatchNorm statistics were trained
    torch.testing.assert_close(z.flatten(1) @ a.T + b, logits, atol=1e-5, rtol=1e-5)


def _jacobian_norm(g: torch.nn.Module, x: Tensor, n_iter: int = 30) -> float:
    """Local Lipschitz constant of g at x: power iteration on J^T J (jvp then vjp)."""
    v = torch.randn_like(x)
    v = v / v.norm()
    for _ in range(n_iter):
        _, jv = torch.func.jvp(g, (x,), (v,))
        _, vjp = torch.func.vjp(g, x)
        (v,) = vjp(jv)
        v = v / v.norm()
    _, jv = torch.func.jvp(g, (x,), (v,))
    return float(jv.detach().norm())


def test_lipschitz_below_one_after_training(trained: IResNet) -> None:
    bounds = trained.lipschitz_bounds(n_iter=100)
    assert len(bounds) == 3 and max(bounds) < 1.0
    # each conv is scaled to <= coeff = 0.9, so the product bound is ~0.9**3 (power iteration slack 2%)
    assert max(bounds) < 0.9**3 * 1.02
    blocks = [blk for st in trained.stages for blk in st.blocks]
    with torch.no_grad():
        h = trained.stages[0].norm(squeeze((_images(1, 32, seed=5) - trained.mean) / trained.std))
    local = _jacobian_norm(blocks[0].g, h)
    assert local <= bounds[0] + 1e-4


def test_conv_operator_norm_matches_dense_matrix() -> None:
    gen = torch.Generator().manual_seed(7)
    w = torch.randn(3, 2, 3, 3, generator=gen, dtype=torch.float64)
    basis = torch.eye(2 * 5 * 5, dtype=torch.float64).view(-1, 2, 5, 5)
    dense = F.conv2d(basis, w, padding=1).flatten(1).T  # [out, in]
    expected = torch.linalg.matrix_norm(dense, ord=2)
    sigma, _ = conv_operator_norm(w, (2, 5, 5), padding=1, n_iter=500, generator=gen)
    assert abs(float(sigma) - float(expected)) < 1e-6 * float(expected)


def test_spectral_conv_is_scaled_to_coeff() -> None:
    torch.manual_seed(2)
    conv = SpectralConv2d(4, 6, 3, in_hw=6, coeff=0.5, init_iterations=300).eval()
    with torch.no_grad():
        conv.weight.mul_(10.0)  # far above the bound: the rescaling must bring it back
        sigma, _ = conv_operator_norm(conv.effective_weight(), (4, 6, 6), 1, 300)
    assert abs(float(sigma) - 0.5) < 1e-3
    small = SpectralConv2d(4, 6, 1, in_hw=6, coeff=0.9).eval()
    with torch.no_grad():
        small.weight.mul_(1e-3)  # below the bound: untouched
        torch.testing.assert_close(small.effective_weight(), small.weight)
    # 1x1 conv operator norm equals the spectral norm of the channel matrix (any input size)
    s1, _ = conv_operator_norm(small.weight.detach(), (4, 3, 3), 0, 300)
    torch.testing.assert_close(s1, torch.linalg.matrix_norm(small.weight.detach()[:, :, 0, 0], ord=2),
                               atol=1e-6, rtol=1e-4)


def test_squeeze_is_a_permutation() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    s = squeeze(x)
    assert tuple(s.shape) == (2, 12, 2, 2)
    assert torch.equal(s.flatten().sort().values, x.flatten())
    assert torch.equal(unsqueeze(s), x)


def test_haar_squeeze_is_orthogonal_and_known() -> None:
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    s = squeeze(x, "haar")
    assert tuple(s.shape) == (2, 12, 2, 3)
    torch.testing.assert_close(s.norm(), x.norm())  # orthogonal: norms kept
    torch.testing.assert_close(unsqueeze(s, "haar"), x, atol=1e-12, rtol=0)
    a, b, c, d = x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]
    want = torch.stack([a + b + c + d, a - b + c - d, a + b - c - d, a - b - c + d], dim=2) / 2
    torch.testing.assert_close(s, want.flatten(1, 2))  # channel 4c + k: Haar band k of channel c
    with pytest.raises(BamError, match="squeeze"):
        squeeze(x, "wavelet")


def test_actnorm_data_init_and_flag_survives_reload() -> None:
    x = torch.randn(16, 5, 4, 4) * 3 + 2
    norm = ActNorm2d(5).train()
    y = norm(x)
    assert bool(norm.initialized)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std((0, 2, 3)), torch.ones(5), atol=1e-4, rtol=0)
    torch.testing.assert_close(norm.inverse(y), x, atol=1e-5, rtol=1e-5)
    fresh = ActNorm2d(5)
    fresh.load_state_dict(norm.state_dict())
    fresh.train()
    fresh(torch.randn(16, 5, 4, 4))  # a new batch must not re-initialise a loaded layer
    torch.testing.assert_close(fresh.bias, norm.bias, atol=0, rtol=0)
    torch.testing.assert_close(fresh.logscale, norm.logscale, atol=0, rtol=0)


def test_state_dict_round_trip_through_safetensors(trained: IResNet, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from bam._io import save_tensors

    save_tensors(tmp_path / "model.safetensors", trained.state_dict())
    torch.manual_seed(99)  # a different random init: everything must come from the file
    fresh = IResNet(num_classes=4, image_size=32, **SMALL)
    fresh.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=True)
    fresh.eval()
    x = _images(3, 32, seed=6)
    with torch.no_grad():
        assert torch.equal(fresh(x), trained(x))
        z = trained.features(x)
        assert torch.equal(fresh.inverse(z), trained.inverse(z))
    assert all(bool(st.norm.initialized) for st in fresh.stages)
    a1, b1 = fresh.affine_head()
    a2, b2 = trained.affine_head()
    assert torch.equal(a1, a2) and torch.equal(b1, b2)


def test_train_forward_then_eval_is_consistent() -> None:
    """The effective weights depend only on the state dict: eval after a train step of the power
    iteration gives what a reloaded copy gives."""
    torch.manual_seed(3)
    model = IResNet(num_classes=3, image_size=16, blocks=(1, 1), hidden=(4, 8))
    model.train()
    model(_images(4, 16))
    model.eval()
    copy = IResNet(num_classes=3, image_size=16, blocks=(1, 1), hidden=(4, 8))
    copy.load_state_dict(model.state_dict())
    copy.eval()
    x = _images(2, 16, seed=8)
    with torch.no_grad():
        assert torch.equal(copy(x), model(x))


def test_same_seed_same_model() -> None:
    torch.manual_seed(5)
    m1 = IResNet(num_classes=3, image_size=16, blocks=(1, 1), hidden=(4, 8))
    torch.manual_seed(5)
    m2 = IResNet(num_classes=3, image_size=16, blocks=(1, 1), hidden=(4, 8))
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k


def test_gradcam_layer_is_last_block_output() -> None:
    model = IResNet(num_classes=3, image_size=32, **SMALL).eval()
    seen = []
    handle = model.gradcam_layer.register_forward_hook(lambda m, i, o: seen.append(o))
    x = _images(2, 32)
    with torch.no_grad():
        z = model.features(x)
    handle.remove()
    assert len(seen) == 1 and torch.equal(seen[0], z)
    assert "gradcam_layer" not in "".join(model.state_dict())  # not registered twice


def test_registry_and_protocol() -> None:
    from bam.models._registry import create_model
    from bam.models.protocols import is_invertible

    model = create_model("iresnet", num_classes=5, image_size=32, blocks=[1, 1], hidden=[4, 8])
    assert isinstance(model, IResNet) and is_invertible(model)
    assert model.normalization["name"] == "centered" and model.input_size == 32
    with pytest.raises(BamError, match="input_size"):
        create_model("iresnet", num_classes=5, image_size=32, input_size=64)


@pytest.mark.parametrize("kwargs, match", [
    ({"image_size": 36}, "divisible"),
    ({"coeff": 1.0}, "coeff"),
    ({"blocks": (1, 1), "hidden": (4,)}, "blocks"),
    ({"activation": "relu"}, "activation"),
    ({"normalization": "bogus"}, "normalization"),
])
def test_bad_arguments_raise(kwargs: dict, match: str) -> None:
    args = {"num_classes": 3, "image_size": 32, **SMALL, **kwargs}
    with pytest.raises(BamError, match=match):
        IResNet(**args)


def test_bad_shapes_raise() -> None:
    model = IResNet(num_classes=3, image_size=16, blocks=(1, 1), hidden=(4, 8)).eval()
    with pytest.raises(BamError, match="input of shape"):
        model(torch.rand(1, 3, 32, 32))
    with pytest.raises(BamError, match="feature map"):
        model.inverse(torch.rand(1, 3, 16, 16))


def test_checkpoint_save_load_round_trip(trained: IResNet, tmp_path: Path) -> None:
    from bam.models import ModelCard, load, save

    card = ModelCard(arch="iresnet", role="obj", num_classes=4, image_size=32, arch_kwargs=dict(SMALL))
    card = save(trained, tmp_path / "iresnet-obj", card)
    assert card.invertible and card.normalization["name"] == "centered"
    loaded = load(tmp_path / "iresnet-obj")
    x = _images(3, 32, seed=9)
    with torch.no_grad():
        assert torch.equal(loaded(x), trained(x))
        z = trained.features(x)
        assert torch.equal(loaded.inverse(z), trained.inverse(z))


def test_card_records_the_squeeze_and_old_cards_load_as_pixel(tmp_path: Path) -> None:
    """Haar became the default later: new cards always name the squeeze, cards without it are pixel."""
    import dataclasses
    import json

    from bam.models import ModelCard, load, save

    torch.manual_seed(0)
    pixel = IResNet(num_classes=4, image_size=32, squeeze="pixel", **SMALL).eval()
    card = save(pixel, tmp_path / "old", ModelCard(arch="iresnet", role="obj", num_classes=4, image_size=32,
                                                   arch_kwargs=dict(SMALL)))
    assert card.arch_kwargs["squeeze"] == "pixel"  # recorded although the config did not say
    raw = json.loads((tmp_path / "old" / "card.json").read_text())
    del raw["arch_kwargs"]["squeeze"]  # a card written before the option existed
    (tmp_path / "old" / "card.json").write_text(json.dumps(raw))
    loaded = load(tmp_path / "old")
    assert loaded.recorded_arch_kwargs == {"squeeze": "pixel"}
    x = _images(2, 32, seed=3)
    with torch.no_grad():
        assert torch.equal(loaded(x), pixel(x))
    haar = save(IResNet(num_classes=4, image_size=32, **SMALL).eval(), tmp_path / "new",
                dataclasses.replace(card, arch_kwargs=dict(SMALL)))
    assert haar.arch_kwargs["squeeze"] == "haar"

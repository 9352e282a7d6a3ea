"""i-RevNet (Jacobsen et al. 2018) as bam builds it: additive couplings with an exact analytic inverse,
bijective T (no padding), exact affine head, exact reload. Known answers: zero branches are the
identity (T is then an orthogonal map of the normalised input), the coupling formula, the
Jacobian-transpose closed form of the projection on a model whose T is linear."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bam.errors import BamError
from bam.models._coupling import AdditiveCoupling, deinterleave, interleave, residual_branch, swap_halves
from bam.models._iresnet_blocks import squeeze
from bam.models.irevnet import IRevNet

SMALL = {"blocks": (1, 2, 1), "hidden": (8, 8, 16)}


def _images(n: int, size: int = 32, seed: int = 0) -> Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights everywhere, including the zero-initialised last BN of each branch, and random
    BatchNorm running statistics (gains of order one, as after training); returns the model in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (1.0 / m.weight[0].numel()) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + 0.5 * torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(1.0 + torch.rand(m.running_var.shape, generator=gen))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen))
    return model.eval()


def _zero_branches(model: nn.Module) -> nn.Module:
    """F = G = 0 exactly in every coupling: zero convolutions, and BatchNorms that map 0 to 0."""
    with torch.no_grad():
        for block in model.modules():
            if isinstance(block, AdditiveCoupling):
                for m in block.modules():
                    if isinstance(m, nn.Conv2d):
                        m.weight.zero_()
                    elif isinstance(m, nn.BatchNorm2d):
                        m.bias.zero_()
                        m.running_mean.zero_()
    return model.eval()


def _rel_rec(model: IRevNet, x: Tensor) -> Tensor:
    with torch.no_grad():
        xr = model.inverse(model.features(x))
    return (x - xr).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)


@pytest.fixture(scope="module")
def random_model() -> IRevNet:
    torch.manual_seed(1)
    model = _randomize(IRevNet(num_classes=5, image_size=32, **SMALL))
    assert isinstance(model, IRevNet)
    return model


def test_zero_couplings_are_the_identity() -> None:
    x = torch.randn(3, 8, 5, 5)
    block = _randomize(AdditiveCoupling(8, 4))
    assert not torch.allclose(block(x), x)
    _zero_branches(block)
    assert torch.equal(block(x), x) and torch.equal(block.inverse(x), x)


def test_zero_branch_network_is_an_orthogonal_map_of_the_normalised_input() -> None:
    """With F = G = 0, T is normalisation then Haar squeezes and channel permutations: its output is
    the hand-composed transform, and it keeps the norm of the normalised input."""
    model = _zero_branches(_randomize(IRevNet(num_classes=3, image_size=16, blocks=(1, 1), hidden=(4, 4))))
    x = _images(2, 16)
    h = (x - 0.5) / 0.25
    want = deinterleave(squeeze(deinterleave(squeeze(h, "haar")), "haar"))  # the swap only comes between couplings
    with torch.no_grad():
        z = model.features(x)
    torch.testing.assert_close(z, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(z.flatten(1).norm(dim=1), h.flatten(1).norm(dim=1))


def test_coupling_formula_and_exact_inverse() -> None:
    torch.manual_seed(0)
    block = _randomize(AdditiveCoupling(6, 5), seed=2)
    assert isinstance(block, AdditiveCoupling)
    x = torch.randn(4, 6, 7, 7, dtype=torch.float64)
    block = block.double()
    with torch.no_grad():
        y = block(x)
        x1, x2 = x[:, :3], x[:, 3:]
        y1 = x1 + block.f(x2)
        torch.testing.assert_close(y, torch.cat([y1, x2 + block.g(y1)], 1), atol=0, rtol=0)
        torch.testing.assert_close(block.inverse(y), x, atol=1e-12, rtol=0)


def test_permutations_are_exact_inverses() -> None:
    x = torch.arange(2 * 8 * 2 * 3, dtype=torch.float32).view(2, 8, 2, 3)
    d = deinterleave(x)
    assert d[:, :4].equal(x[:, 0::2]) and d[:, 4:].equal(x[:, 1::2])
    assert torch.equal(interleave(d), x)
    assert torch.equal(swap_halves(swap_halves(x)), x) and torch.equal(swap_halves(x)[:, :4], x[:, 4:])


def test_inverse_exact_on_random_weights(random_model: IRevNet) -> None:
    x = _images(6, seed=3)
    z = random_model.features(x)
    assert tuple(z.shape) == (6, 192, 4, 4) and z[0].numel() == x[0].numel()  # bijective: no padding
    assert float(_rel_rec(random_model, x).max()) < 1e-5  # float32: ~1e-6
    assert float(_rel_rec(random_model, 4 * x - 2).max()) < 1e-5  # far outside [0, 1]
    double = random_model.double()
    try:
        assert float(_rel_rec(double, x.double()).max()) < 1e-12
    finally:
        random_model.float()


def test_inverse_of_moved_features_and_batch_independence(random_model: IRevNet) -> None:
    """T(T^-1(z)) = z for features moved away from any T(x) (as a projection moves them)."""
    with torch.no_grad():
        z0 = random_model.features(_images(3, seed=10))
        z = z0 + 0.3 * z0.std() * torch.randn(z0.shape, generator=torch.Generator().manual_seed(4))
        x = random_model.inverse(z)
        back = random_model.features(x)
        rows = torch.cat([random_model.features(x[i:i + 1]) for i in range(3)])
    assert float(((back - z).flatten(1).norm(dim=1) / z.flatten(1).norm(dim=1)).max()) < 1e-5  # T(T^-1(z)) = z
    torch.testing.assert_close(rows, back, atol=1e-5, rtol=1e-5)


def test_logits_equal_affine_form(random_model: IRevNet) -> None:
    x = _images(7, seed=5)
    a, b = random_model.affine_head()
    with torch.no_grad():
        z = random_model.features(x)
        logits = random_model(x)
    assert tuple(a.shape) == (5, z[0].numel()) and tuple(b.shape) == (5,)
    torch.testing.assert_close(z.flatten(1) @ a.T + b, logits, atol=1e-5, rtol=1e-5)


def test_projection_onto_a_known_hyperplane() -> None:
    """T linear (F = G = 0, normalisation none): T is orthogonal, so the projection moves x by exactly
    the feature distance, along J^T (m d / |d|^2) with J the Jacobian of T (by autograd)."""
    from bam.methods import attribute_full

    model = _zero_branches(_randomize(IRevNet(num_classes=4, image_size=16, blocks=(1, 1), hidden=(4, 4),
                                              normalization="none")))
    with torch.no_grad():
        model.fc.weight.copy_(torch.randn(4, 48, generator=torch.Generator().manual_seed(6)))
        model.fc.bias.copy_(torch.tensor([0.3, -0.2, 0.1, 0.0]))
    x = _images(5, 16, seed=7)
    c = model(x).argmax(1)
    res = attribute_full("invertible_projection", model, x, c)
    a, b = model.affine_head()
    z = model.features(x).flatten(1)
    logits = z @ a.T + b
    j = res.extras["boundary_class"].long()
    d = a[c] - a[j]
    m = logits.gather(1, c.view(-1, 1)) - logits.gather(1, j.view(-1, 1))
    step = (m / (d * d).sum(1, keepdim=True)) * d  # z - z_p
    xv = x.clone().requires_grad_(True)
    (jt,) = torch.autograd.grad(model.features(xv).flatten(1), xv, grad_outputs=step)
    torch.testing.assert_close(res.attributions, jt, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(res.extras["projection_distance"], res.extras["feature_distance"], atol=1e-5,
                               rtol=1e-5)
    assert bool(res.valid.all()) and float(res.extras["logit_gap_after"].max()) < 1e-4


def test_gradcam_layer_and_bottlenecks(random_model: IRevNet) -> None:
    b = random_model.bottlenecks
    assert list(b) == ["block_layer1", "block_layer2", "block_layer3"]
    assert list(b.values()) == list(random_model.stages)
    assert random_model.gradcam_layer is b["block_layer3"]
    seen: list[Tensor] = []
    handles = [m.register_forward_hook(lambda mod, i, o: seen.append(o)) for m in b.values()]
    x = _images(2, seed=8)
    with torch.no_grad():
        z = random_model.features(x)
    for h in handles:
        h.remove()
    assert [tuple(o.shape) for o in seen] == [(2, 12, 16, 16), (2, 48, 8, 8), (2, 192, 4, 4)]
    assert torch.equal(seen[-1], z)
    keys = "".join(random_model.state_dict())
    assert "bottleneck" not in keys and "gradcam" not in keys  # not registered twice


def test_deeplift_safe_relus(random_model: IRevNet) -> None:
    relus = [m for m in random_model.modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)
    fired: dict[int, int] = {}
    handles = [m.register_forward_hook(lambda mod, i, o: fired.__setitem__(id(mod), fired.get(id(mod), 0) + 1))
               for m in relus]
    with torch.no_grad():
        random_model(_images(1))
    for h in handles:
        h.remove()
    assert sorted(fired.values()) == [1] * len(relus)


def test_inverse_in_training_mode_raises() -> None:
    model = IRevNet(num_classes=3, image_size=16, blocks=(1, 1), hidden=(4, 4)).train()
    with pytest.raises(BamError, match="eval"):
        model.inverse(torch.zeros(1, 48, 4, 4))


def test_trains_and_stays_invertible() -> None:
    """A few optimiser steps (BatchNorm statistics move): the eval-mode model still inverts exactly."""
    torch.manual_seed(2)
    model = IRevNet(num_classes=3, image_size=16, blocks=(1, 1), hidden=(8, 8))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        x = torch.rand(8, 3, 16, 16, generator=gen)
        loss = F.cross_entropy(model(x), torch.randint(0, 3, (8,), generator=gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert float(_rel_rec(model, _images(4, 16)).max()) < 1e-5


def test_registry_protocol_and_recorded_kwargs() -> None:
    from bam.models._registry import create_model
    from bam.models.protocols import is_invertible

    model = create_model("irevnet", num_classes=5, image_size=32)
    assert isinstance(model, IRevNet) and is_invertible(model)
    assert model.normalization["name"] == "centered" and model.input_size == 32
    assert model.recorded_arch_kwargs == {"blocks": [1, 1, 1], "hidden": [16, 32, 64], "kernels": [1, 3, 1],
                                          "squeeze": "haar", "normalization": "centered"}
    assert len(residual_branch(4, 8, 4, (3, 3, 1))) == 8  # 3 convs, 3 BNs, 2 ReLUs


@pytest.mark.parametrize("kwargs, match", [
    ({"image_size": 36}, "image_size 36 is not divisible by 8"),
    ({"image_size": 32, "blocks": (1, 1, 1, 1, 1, 1), "hidden": (4,) * 6}, "not divisible by 64"),
    ({"input_size": 64}, "resizing is not bijective"),
    ({"blocks": (1, 1), "hidden": (4,)}, "blocks"),
    ({"blocks": (0, 0), "hidden": (4, 4)}, "at least one"),
    ({"kernels": (3, 2)}, "kernels"),
    ({"squeeze": "wavelet"}, "squeeze"),
    ({"normalization": "bogus"}, "normalization"),
])
def test_bad_arguments_raise_one_line(kwargs: dict, match: str) -> None:
    args = {"num_classes": 3, "image_size": 32, **kwargs}
    with pytest.raises(BamError, match=match) as info:
        IRevNet(**args)
    assert "\n" not in str(info.value) and "accepted" in str(info.value)


def test_bad_shapes_raise() -> None:
    model = IRevNet(num_classes=3, image_size=16, blocks=(1, 1), hidden=(4, 8)).eval()
    with pytest.raises(BamError, match="input of shape"):
        model(torch.rand(1, 3, 32, 32))
    with pytest.raises(BamError, match="feature map"):
        model.inverse(torch.rand(1, 3, 16, 16))


def test_same_seed_same_model() -> None:
    torch.manual_seed(5)
    m1 = IRevNet(num_classes=3, image_size=16, blocks=(1, 1), hidden=(4, 8))
    torch.manual_seed(5)
    m2 = IRevNet(num_classes=3, image_size=16, blocks=(1, 1), hidden=(4, 8))
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k


def test_checkpoint_save_load_round_trip(random_model: IRevNet, tmp_path: Path) -> None:
    from bam.models import ModelCard, load, save

    card = save(random_model, tmp_path / "irevnet-obj",
                ModelCard(arch="irevnet", role="obj", num_classes=5, image_size=32, arch_kwargs=dict(SMALL)))
    assert card.invertible and card.normalization["name"] == "centered" and card.input_size == 32
    assert card.arch_kwargs["blocks"] == [1, 2, 1] and card.arch_kwargs["kernels"] == [1, 3, 1]
    torch.manual_seed(99)  # a different random init: everything must come from the file
    loaded = load(tmp_path / "irevnet-obj")
    assert isinstance(loaded, IRevNet) and not loaded.training
    x = _images(3, seed=9)
    with torch.no_grad():
        assert torch.equal(loaded(x), random_model(x))
        z = random_model.features(x)
        assert torch.equal(loaded.inverse(z), random_model.inverse(z))
    a1, b1 = loaded.affine_head()
    a2, b2 = random_model.affine_head()
    assert torch.equal(a1, a2) and torch.equal(b1, b2)

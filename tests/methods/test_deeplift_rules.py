"""DeepLIFT internals: the closed-form ReLU rule, the baseline tape, module restoration."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from bam.errors import BamError
from bam.methods import attribute, attribute_full
from bam.methods.deeplift import _ReluRescale


def _reference_multiplier(x: Tensor, r: Tensor) -> Tensor:
    """Rescale multiplier written from the definition: Δrelu / Δx, the gradient 1[x > 0] where x == x'."""
    ratio = (x.clamp_min(0) - r.clamp_min(0)) / (x - r)
    return torch.where(x == r, (x > 0).to(x.dtype), ratio)


def test_relu_rule_matches_the_definition_including_ties_and_zero_reference():
    torch.manual_seed(0)
    r = torch.randn(1, 4, 5, 5)
    r[0, 0] = 0.0  # reference exactly at the kink
    x = torch.randn(6, 4, 5, 5)
    x[:, 1] = r[:, 1]  # x == x' everywhere in channel 1 (both signs present)
    x[0, 0] = 0.0  # x == x' == 0
    x[1, 0, :2] = -1.5  # x < 0 == x'
    g = torch.randn_like(x)
    xi = x.clone().requires_grad_(True)
    (got,) = torch.autograd.grad(_ReluRescale.apply(xi, r), xi, g)
    torch.testing.assert_close(got, g * _reference_multiplier(x, r), rtol=1e-6, atol=1e-7)


def test_relu_rule_is_one_and_zero_on_same_sign_pairs():
    r = torch.tensor([[2.0, -1.0, 3.0, -2.0]])
    x = torch.tensor([[5.0, -4.0, 1e-30, -1e-30]])
    xi = x.clone().requires_grad_(True)
    (got,) = torch.autograd.grad(_ReluRescale.apply(xi, r), xi, torch.ones_like(x))
    assert got.tolist() == [[1.0, 0.0, 1.0, 0.0]]  # exactly, not approximately


class _InputDependentNet(nn.Module):
    """Applies its Tanh a second time only when the input is bright: the baseline takes another path."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 3, padding=1)
        self.act = nn.Tanh()
        self.fc = nn.Linear(2, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.conv(x))
        if bool(x.mean() > 0.25):
            h = self.act(h)
        return self.fc(h.mean(dim=(2, 3)))


def test_forward_that_depends_on_the_input_is_refused():
    net = _InputDependentNet().eval()
    with pytest.raises(BamError, match="runs more often on the images than on the baseline") as info:
        attribute("deeplift", net, torch.rand(2, 3, 6, 6) + 0.5, 0)
    assert "\n" not in str(info.value)


class _PoolNet(nn.Module):
    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool = pool
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Tensor) -> Tensor:
        p = self.pool(self.relu(self.conv(x)))
        p = p[0] if isinstance(p, tuple) else p  # MaxPool2d(return_indices=True)
        return self.fc(p.mean(dim=(2, 3)))


def test_modules_are_restored_after_attribution():
    net = _PoolNet(nn.MaxPool2d(3, 2, 1)).eval()
    x = torch.rand(3, 3, 8, 8)
    res = attribute_full("deeplift", net, x, torch.tensor([0, 1, 2]), micro_batch=2)
    assert torch.isfinite(res.attributions).all()
    assert "forward" not in vars(net.relu) and "forward" not in vars(net.pool)
    assert net.relu.inplace and not net.relu._forward_hooks and not net.pool._forward_hooks
    with torch.no_grad():
        gap = net(x)[torch.arange(3), torch.tensor([0, 1, 2])] - net(torch.zeros_like(x))[:, [0, 1, 2]].diagonal()
    torch.testing.assert_close(res.attributions.flatten(1).sum(1), gap, atol=1e-5, rtol=0)


class _OwnPool(nn.MaxPool2d):
    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x) * 2


@pytest.mark.parametrize("pool", [_OwnPool(2), nn.MaxPool2d(2, return_indices=True)], ids=["own-forward", "indices"])
def test_maxpool_variants_without_a_rule_are_refused(pool):
    with pytest.raises(BamError, match="plain MaxPool2d"):
        attribute("deeplift", _PoolNet(pool).eval(), torch.rand(2, 3, 8, 8), 0)


def test_prepared_deeplift_reuses_the_baseline_and_nothing_global_remembers_models():
    """The state prepared for a model (MethodInfo.prepare) keeps the audit and the baseline's activations across
    calls; a plain call prepares afresh, so a weight edit between plain calls is always seen."""
    from bam.methods import get_info
    from bam.methods._call import call_method

    torch.manual_seed(0)
    net = _PoolNet(nn.MaxPool2d(2)).eval()
    rows: list[int] = []
    net.conv.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    x, t = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    first = attribute("deeplift", net, x, t)
    assert rows.count(1) == 2  # the audit's one-row forward + one baseline pass
    prepared = get_info("deeplift").prepare(net)
    for _ in range(3):
        res = call_method("deeplift", prepared, net, x, t, {"baseline": 0.0})
        assert torch.equal(res.attributions, first)
    assert rows.count(1) == 4  # prepared once: one audit and one baseline for three calls
    with torch.no_grad():
        net.conv.weight.data.copy_(net.conv.weight.data.flip(0))  # a .data edit: no version bump
    edited = attribute("deeplift", net, x, t)
    assert rows.count(1) == 6  # a plain call prepares afresh: audit and baseline again
    fresh = _PoolNet(nn.MaxPool2d(2)).eval()
    fresh.load_state_dict(net.state_dict())
    torch.testing.assert_close(edited, attribute("deeplift", fresh, x, t))
    assert not torch.equal(edited, first)

"""Bottlenecks of the built-in archs, activations, and every layer's gradient from one backward."""

from __future__ import annotations

import math

import pytest
import torch
from _toy import ToyNet
from torch import nn

from bam.concepts import LOGIT, find_bottlenecks, resolve_layers
from bam.concepts._capture import layer_activations, objective_seed, summary_layer, target_gradients
from bam.errors import BamError
from bam.models import create_model

ARCHS = [("small_resnet", {}, 3, [(8, 16, 16), (16, 8, 8), (32, 4, 4)]),
         ("resnet18", {}, 4, [(64, 8, 8), (128, 4, 4), (256, 2, 2), (512, 1, 1)]),
         ("iresnet", {"blocks": [1, 1], "hidden": [8, 8]}, 2, [(12, 16, 16), (48, 8, 8)])]


def _model(arch: str, kw: dict[str, object]) -> nn.Module:
    extra = {"widths": [8, 16, 32]} if arch == "small_resnet" else kw
    return create_model(arch, num_classes=5, image_size=32, **extra).eval()


@pytest.mark.parametrize(("arch", "kw", "n", "shapes"), ARCHS)
def test_fallback_finds_the_residual_stages_in_order(arch: str, kw: dict[str, object], n: int,
                                                     shapes: list[tuple[int, ...]]) -> None:
    model = _model(arch, kw)
    stages = find_bottlenecks(model)
    assert list(stages) == [f"block_layer{i}" for i in range(1, n + 1)]
    x = torch.rand(3, 3, 32, 32)
    got = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: got.append(tuple(o.shape[1:]))) for m in stages.values()]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert got == shapes
    layers = resolve_layers(model, ())
    assert list(layers) == [*stages, LOGIT] and layers[LOGIT] is None
    assert summary_layer(list(layers), "last") == f"block_layer{n}"
    assert summary_layer(list(layers), "penultimate") == f"block_layer{n - 1}"


def test_model_attribute_wins_and_unknown_layer_is_one_line() -> None:
    model = ToyNet()
    assert list(find_bottlenecks(model)) == ["block_layer1"]
    with pytest.raises(BamError, match=r"ToyNet has no bottleneck 'block_layer4'; accepted: block_layer1, logit"):
        resolve_layers(model, ("block_layer4",))
    with pytest.raises(BamError, match="has no bottleneck 'block_layer1'; accepted: logit"):
        resolve_layers(nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 2)), ("block_layer1",))
    with pytest.raises(BamError, match="summary_layer 'block_layer2' is not computed"):
        summary_layer(["block_layer1", "logit"], "block_layer2")
    assert summary_layer(["logit"], "last") == "logit" == summary_layer(["logit"], "penultimate")
    assert summary_layer(["block_layer1", "logit"], "penultimate") == "block_layer1"


def test_activations_stop_after_the_layer_and_match_a_full_pass() -> None:
    model = _model("small_resnet", {})
    stages = find_bottlenecks(model)
    calls = []
    model.net.fc.register_forward_hook(lambda *a: calls.append(1))
    x = torch.rand(10, 3, 32, 32)
    act = layer_activations(model, "block_layer2", stages["block_layer2"], x, batch_size=4)
    assert act.shape == (10, 16 * 8 * 8) and not calls  # the head never ran
    ref = []
    h = stages["block_layer2"].register_forward_hook(lambda _m, _i, o: ref.append(o.flatten(1)))
    with torch.no_grad():
        logits = model(x)
    h.remove()
    torch.testing.assert_close(act, ref[0])
    torch.testing.assert_close(layer_activations(model, LOGIT, None, x, batch_size=3), logits)


@pytest.mark.parametrize(("arch", "kw", "n", "shapes"), ARCHS)
def test_all_layer_gradients_from_one_backward_equal_separate_ones(arch: str, kw: dict[str, object], n: int,
                                                                   shapes: list[tuple[int, ...]]) -> None:
    model = _model(arch, kw)
    layers = resolve_layers(model, ())
    x = torch.rand(4, 3, 32, 32)
    forwards = []
    model.register_forward_hook(lambda *a: forwards.append(1))
    grads, logits, scale = target_gradients(model, layers, x, target=2, gradient="logit")
    assert len(forwards) == 1 and torch.equal(scale, torch.ones(4, dtype=torch.float64))
    for name, module in layers.items():
        outs: list[torch.Tensor] = []
        if module is not None:
            h = module.register_forward_hook(lambda _m, _i, o, outs=outs: outs.append(o))
        out = model(x)
        if module is not None:
            h.remove()
        ref = torch.autograd.grad(out[:, 2].sum(), outs[0] if module is not None else out)[0]
        torch.testing.assert_close(grads[name], ref.flatten(1), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(logits, out.detach())
    assert torch.allclose(grads[LOGIT], torch.nn.functional.one_hot(torch.full((4,), 2), 5).float())


def test_log_softmax_gradient_is_exact_and_keeps_its_sign_when_confident() -> None:
    model = _model("small_resnet", {})
    layers = resolve_layers(model, ())
    x = torch.rand(3, 3, 32, 32)
    grads, _, scale = target_gradients(model, layers, x, target=1, gradient="log_softmax")
    xx = x.clone().requires_grad_(True)
    ref = torch.autograd.grad(torch.log_softmax(model(xx).double(), 1)[:, 1].sum(), xx)[0]
    outs: list[torch.Tensor] = []
    h = layers["block_layer1"].register_forward_hook(lambda _m, _i, o: outs.append(o))
    out = model(x)
    h.remove()
    ref1 = torch.autograd.grad(torch.log_softmax(out, 1)[:, 1].sum(), outs[0])[0].flatten(1)
    torch.testing.assert_close(grads["block_layer1"] * scale[:, None].float(), ref1, rtol=1e-4, atol=1e-7)
    assert ref.abs().sum() > 0
    # logits (40, 0, 0): float32 rounds p_0 to 1, yet d log p_0 / dz = (2e, -e, -e), e = p_1
    seed, s = objective_seed(torch.tensor([[40.0, 0.0, 0.0]]), 0, "log_softmax")
    torch.testing.assert_close(seed, torch.tensor([[1.0, -0.5, -0.5]], dtype=torch.float64))
    assert s.item() == pytest.approx(2 * math.exp(-40), rel=1e-12)
    seed, s = objective_seed(torch.tensor([[0.0, 5.0]]), 1, "logit")
    assert seed.tolist() == [[0.0, 1.0]] and s.item() == 1.0


def test_a_module_that_runs_twice_is_refused() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = nn.Linear(4, 4)
            self.bottlenecks = {"block_layer1": self.block}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(self.block(x.flatten(1)[:, :4]))

    model = Twice()
    with pytest.raises(BamError, match="'block_layer1' ran 2 times in one forward pass"):
        target_gradients(model, resolve_layers(model, ()), torch.rand(2, 3, 2, 2), 0, "logit")
    toy = ToyNet()
    with pytest.raises(BamError, match=r"target class 2 is out of range for a model with 2 outputs; accepted: 0\.\.1"):
        target_gradients(toy, resolve_layers(toy, ()), torch.rand(2, 3, 8, 8), 2, "logit")

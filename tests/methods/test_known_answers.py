"""Known answers: closed forms on a linear model, axioms on a ReLU net, hand-derived values."""

from __future__ import annotations

import pytest
import torch
from method_nets import ConvNet, FunctionalReluNet, ReusedReluNet
from torch import nn

from bam.errors import BamError
from bam.methods import attribute, attribute_full, get_info


def _weight_rows(net: nn.Module, target: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return net.fc.weight.detach()[target].view_as(like)


def _logit(net: nn.Module, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return net(x).gather(1, t.view(-1, 1)).squeeze(1)


# --- linear model: closed forms -------------------------------------------------------------------

def test_linear_gradient_is_weight_row(linear_net, targets):
    x = torch.rand(5, 3, 4, 4)
    w = _weight_rows(linear_net, targets, x)
    torch.testing.assert_close(attribute("gradient", linear_net, x, targets), w)
    torch.testing.assert_close(attribute("grad_x_input", linear_net, x, targets), w * x)


@pytest.mark.parametrize("baseline", [0.0, 0.3])
def test_linear_ig_and_deeplift_are_exact(linear_net, targets, baseline):
    x = torch.rand(5, 3, 4, 4)
    expected = (x - baseline) * _weight_rows(linear_net, targets, x)
    ig = attribute("integrated_gradients", linear_net, x, targets, steps=7, baseline=baseline)
    dl = attribute("deeplift", linear_net, x, targets, baseline=baseline)
    torch.testing.assert_close(ig, expected)
    torch.testing.assert_close(dl, expected)


def test_linear_smoothgrad_is_squared_weight(linear_net, targets):
    x = torch.rand(5, 3, 4, 4)
    w = _weight_rows(linear_net, targets, x)
    torch.testing.assert_close(attribute("smoothgrad", linear_net, x, targets, samples=3), w * w)


def test_linear_ig_smoothgrad_closed_form(linear_net, targets):
    """IG(x + n) = (x + n) * w on a linear model with a black baseline, so IG-SG = w² mean((x+n)²)."""
    from bam.methods._grad import smoothgrad_noise

    x = torch.rand(5, 3, 4, 4)
    w = _weight_rows(linear_net, targets, x)
    noise = smoothgrad_noise(x, 4, 0.15, seed=9)
    expected = (w * w * (x.unsqueeze(0) + noise) ** 2).mean(0)
    got = attribute("ig_smoothgrad", linear_net, x, targets, samples=4, steps=3, seed=9)
    torch.testing.assert_close(got, expected)


def test_ig_quadrature_is_original_not_captum_trapezoid(linear_net, targets):
    """captum's riemann_trapezoid weights sum to 1 - 1/n; the original average sums to 1."""
    from captum.attr import IntegratedGradients

    x = torch.rand(5, 3, 4, 4)
    exact = x * _weight_rows(linear_net, targets, x)
    trap = IntegratedGradients(linear_net).attribute(x, target=targets, n_steps=5, method="riemann_trapezoid")
    torch.testing.assert_close(trap, exact * (1 - 1 / 5))
    torch.testing.assert_close(attribute("integrated_gradients", linear_net, x, targets, steps=5), exact)


# --- ReLU net: axioms and parity -----------------------------------------------------------------

def test_ig_completeness_many_steps(conv_net, images, targets):
    res = attribute_full("integrated_gradients", conv_net, images, targets, steps=400)
    gap = _logit(conv_net, images, targets) - _logit(conv_net, torch.zeros_like(images), targets)
    torch.testing.assert_close(res.attributions.flatten(1).sum(1), gap, atol=2e-2 * gap.abs().max().item(), rtol=0)
    torch.testing.assert_close(res.extras["ig_delta"], res.attributions.flatten(1).sum(1) - gap, atol=1e-4, rtol=0)


def test_ig_parity_with_captum_trapezoid_plus_end_points(conv_net, images, targets):
    """ours(n) = captum trapezoid(n) + (x - x') * (g(x') + g(x)) / 2n: same points, the end weights differ."""
    from captum.attr import IntegratedGradients

    n = 6
    ours = attribute("integrated_gradients", conv_net, images, targets, steps=n)
    trap = IntegratedGradients(conv_net).attribute(images, target=targets, n_steps=n, method="riemann_trapezoid")
    g0 = attribute("gradient", conv_net, torch.zeros_like(images), targets)
    g1 = attribute("gradient", conv_net, images, targets)
    torch.testing.assert_close(ours, trap + images * (g0 + g1) / (2 * n), atol=1e-5, rtol=1e-4)


def test_ig_hand_computed_three_steps():
    """f(x) = relu(2x - 1) summed over 1 pixel; x = 1, baseline 0, alphas 0, .5, 1.

    gradients at 0, 0.5, 1: 0, 0 (relu'(0) = 0), 2 -> IG = 1 * (0 + 0 + 2) / 3 = 2/3.
    """

    class F1(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.relu = nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(2 * x - 1).flatten(1)

    x = torch.ones(1, 1, 1, 1)
    got = attribute("integrated_gradients", F1(), x, 0, steps=3)
    torch.testing.assert_close(got, torch.full_like(x, 2 / 3))


def test_deeplift_completeness_exact(conv_net, images, targets):
    res = attribute_full("deeplift", conv_net, images, targets, micro_batch=2)
    gap = _logit(conv_net, images, targets) - _logit(conv_net, torch.zeros_like(images), targets)
    torch.testing.assert_close(res.attributions.flatten(1).sum(1), gap, atol=1e-4, rtol=0)
    assert res.extras["deeplift_delta"].abs().max() < 1e-4


def test_deeplift_parity_with_captum():
    """Where captum is exact (no two non-linear modules back to back), both agree."""
    from captum.attr import DeepLift

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1),
                        nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(5, 3)).eval()
    x = torch.rand(4, 3, 8, 8)
    t = torch.tensor([0, 1, 2, 0])
    for baseline in (0.0, 0.4):
        ours = attribute("deeplift", net, x, t, baseline=baseline)
        ref = DeepLift(net).attribute(x, baselines=torch.full_like(x, baseline), target=t)
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)


def test_deeplift_is_not_gradient_times_input(conv_net, images, targets):
    """On a ReLU net DeepLIFT differs from grad x input (the silent-degradation failure mode)."""
    dl = attribute("deeplift", conv_net, images, targets)
    gxi = attribute("grad_x_input", conv_net, images, targets)
    assert (dl - gxi).abs().max() > 1e-3


@pytest.mark.parametrize("net_cls, words", [(ReusedReluNet, "more than once"), (FunctionalReluNet, "functional")])
def test_deeplift_refuses_unsafe_relus(net_cls, words, images, targets):
    with pytest.raises(BamError, match=words) as info:
        attribute("deeplift", net_cls().eval(), images, targets)
    assert "\n" not in str(info.value)


def test_guided_backprop_refuses_functional_relu(images, targets):
    with pytest.raises(BamError, match="functional"):
        attribute("guided_backprop", FunctionalReluNet().eval(), images, targets)


def test_guided_backprop_works_with_reused_relu(images, targets):
    from captum.attr import GuidedBackprop

    net = ReusedReluNet().eval()
    ours = attribute("guided_backprop", net, images, targets)
    torch.testing.assert_close(ours, GuidedBackprop(net).attribute(images, target=targets))


def test_gradient_parity_with_captum_saliency(conv_net, images, targets):
    from captum.attr import Saliency

    ours = attribute("gradient", conv_net, images, targets)
    torch.testing.assert_close(ours, Saliency(conv_net).attribute(images, target=targets, abs=False))
    assert (ours < 0).any(), "gradient must be signed"


def test_smoothgrad_zero_noise_one_sample_is_squared_gradient(conv_net, images, targets):
    g = attribute("gradient", conv_net, images, targets)
    sg = attribute("smoothgrad", conv_net, images, targets, samples=1, noise_level=0.0)
    torch.testing.assert_close(sg, g * g)


def test_smoothgrad_matches_slow_reference(conv_net, images, targets):
    """Per-image, per-sample loop from the definition with the same (documented) noise."""
    from bam.methods._grad import smoothgrad_noise

    noise = smoothgrad_noise(images, 4, 0.15, seed=5)
    ref = torch.zeros_like(images)
    for i in range(images.shape[0]):
        for s in range(4):
            x = (images[i:i + 1] + noise[s, i:i + 1]).requires_grad_(True)
            conv_net(x)[0, targets[i]].backward()
            ref[i] += x.grad[0] ** 2 / 4
    sigma = 0.15 * (images.flatten(1).amax(1) - images.flatten(1).amin(1))
    torch.testing.assert_close(noise.flatten(2).std(2).mean(0), sigma, rtol=0.1, atol=0)
    torch.testing.assert_close(attribute("smoothgrad", conv_net, images, targets, samples=4, seed=5), ref)


def test_guided_backprop_hand_computed():
    """f = w2 · relu(W1 x); x = (1, 2): h = (-1, 4, 1), mask (0, 1, 1), w2 = (3, -2, 5).

    gradient = W1ᵀ (w2 ⊙ mask) = (-9, 3); guided = W1ᵀ (max(w2, 0) ⊙ mask) = (-5, 5).
    """
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 1.0], [-1.0, 1.0]]))
        net[3].weight.copy_(torch.tensor([[3.0, -2.0, 5.0]]))
    x = torch.tensor([1.0, 2.0]).view(1, 2, 1, 1)
    torch.testing.assert_close(attribute("gradient", net, x, 0).flatten(), torch.tensor([-9.0, 3.0]))
    torch.testing.assert_close(attribute("guided_backprop", net, x, 0).flatten(), torch.tensor([-5.0, 5.0]))


# --- GradCAM --------------------------------------------------------------------------------------

def _gradcam_reference(net: ConvNet, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Slow GradCAM from the definition: per image, per channel loops."""
    out = []
    for i in range(x.shape[0]):
        acts = {}
        h = net.gradcam_layer.register_forward_hook(lambda m, a, o, acts=acts: acts.setdefault("a", o))
        logit = net(x[i:i + 1])[0, t[i]]
        h.remove()
        a = acts["a"]
        (g,) = torch.autograd.grad(logit, a)
        cam = torch.zeros(a.shape[2:])
        for k in range(a.shape[1]):
            cam += g[0, k].mean() * a[0, k].detach()
        cam = cam.clamp(min=0)
        up = torch.nn.functional.interpolate(cam[None, None], size=x.shape[2:], mode="bilinear", align_corners=False)
        out.append((up / up.max() if up.max() > 0 else up)[0].expand(x.shape[1], -1, -1))
    return torch.stack(out)


def test_gradcam_matches_reference(conv_net, images, targets):
    got = attribute("gradcam", conv_net, images, targets, micro_batch=2)
    torch.testing.assert_close(got, _gradcam_reference(conv_net, images, targets))
    assert got.amax((1, 2, 3)).max() == pytest.approx(1.0)
    assert got.min() >= 0


def test_gradcam_hand_made_weights():
    """One conv channel A = x (identity 1x1 conv), head = mean(A) * w: GradCAM = relu(w/hw * x) / max."""

    class Net(nn.Module):
        def __init__(self, w: float) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 1, bias=False)
            self.conv.weight.data.fill_(1.0)
            self.gradcam_layer = self.conv
            self.w = w

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            a = self.conv(x).mean((1, 2, 3))
            return torch.stack([self.w * a, -self.w * a], 1)

    x = torch.tensor([[0.0, 1.0], [2.0, 4.0]]).view(1, 1, 2, 2)
    pos = attribute("gradcam", Net(3.0), x, 0)
    up = torch.nn.functional.interpolate(x, size=(2, 2), mode="bilinear", align_corners=False)
    torch.testing.assert_close(pos, up / 4.0)
    neg = attribute("gradcam", Net(3.0), x, 1)  # negative weight: ReLU kills everything
    assert torch.equal(neg, torch.zeros_like(neg))


def test_gradcam_upsamples_bilinear_not_nearest(conv_net, images, targets):
    got = attribute("gradcam", conv_net, images, targets)[:, 0]
    # nearest upsampling by 2 gives 2x2 constant blocks; bilinear does not
    assert not torch.equal(got[:, 0::2, 0::2], got[:, 1::2, 1::2])


def test_guided_gradcam_is_product(conv_net, images, targets):
    gb = attribute("guided_backprop", conv_net, images, targets)
    cam = attribute("gradcam", conv_net, images, targets)
    torch.testing.assert_close(attribute("guided_gradcam", conv_net, images, targets), gb * cam)
    assert get_info("guided_gradcam").passes(get_info("guided_gradcam").defaults) == 2


# --- micro-batch invariance of the expanding methods -----------------------------------------------

@pytest.mark.parametrize("name, params", [
    ("smoothgrad", {"samples": 5}),
    ("integrated_gradients", {"steps": 5}),
    ("ig_smoothgrad", {"samples": 3, "steps": 4}),
])
def test_expanding_methods_micro_batch_invariant(conv_net, images, targets, name, params):
    ref = attribute(name, conv_net, images, targets, micro_batch=1000, **params)
    for mb in (1, 3, 7):
        torch.testing.assert_close(attribute(name, conv_net, images, targets, micro_batch=mb, **params), ref,
                                   rtol=1e-5, atol=1e-7)
    assert get_info(name).expands_batch


def test_level_segments_cover_rows_in_level_order():
    from bam.methods._grad import level_segments

    for mb in (1, 2, 3, 5, 7, 100):
        flat = [(lvl, i) for segs in level_segments(3, 4, mb) for lvl, sl in segs for i in range(sl.start, sl.stop)]
        assert flat == [(lvl, i) for lvl in range(4) for i in range(3)]
        assert all(sum(sl.stop - sl.start for _, sl in segs) <= mb for segs in level_segments(3, 4, mb))


def test_passes_counts():
    assert get_info("integrated_gradients").passes({"steps": 25, "baseline": 0.0}) == 25
    info = get_info("ig_smoothgrad")
    assert info.passes(info.defaults) == 625
    assert get_info("smoothgrad").passes(get_info("smoothgrad").defaults) == 25
    assert get_info("deeplift").passes({}) == 1
    assert get_info("gradient").passes({}) == 1


@pytest.mark.parametrize("name, params, words", [
    ("integrated_gradients", {"steps": 1}, "steps=1"),
    ("smoothgrad", {"samples": 0}, "samples=0"),
    ("smoothgrad", {"noise_level": -1.0}, "noise_level=-1.0"),
    ("center", {"sigma": 0}, "sigma=0"),
    ("gradient", {"steps": 3}, "unknown parameter"),
])
def test_bad_parameters_raise_one_line(conv_net, images, targets, name, params, words):
    with pytest.raises(BamError, match=words) as info:
        attribute(name, conv_net, images, targets, **params)
    assert "\n" not in str(info.value)


class _InplaceNet(nn.Module):
    """In-place ReLU modules and an in-place add on a ReLU output (common in ResNet code)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.r1 = nn.ReLU(inplace=True)
        self.r2 = nn.ReLU(inplace=True)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor, relu=None) -> torch.Tensor:
        h = relu(self.conv(x)) if relu else self.r1(self.conv(x))
        h += x
        h = relu(h) if relu else self.r2(h)
        return self.fc(h.mean((2, 3)))


class _GuidedRelu(torch.autograd.Function):
    """Reference guided ReLU written from the definition: grad_in = max(grad_out, 0) * [x > 0]."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g.clamp(min=0) * (x > 0).to(g.dtype)


def test_guided_backprop_matches_reference_with_inplace_ops(images):
    net = _InplaceNet().eval()
    x = images[:, :, :6, :6]
    got = attribute("guided_backprop", net, x, 1)
    xr = x.clone().requires_grad_(True)
    net(xr, relu=_GuidedRelu.apply)[:, 1].sum().backward()
    torch.testing.assert_close(got, xr.grad)
    assert all(m.inplace for m in (net.r1, net.r2))


def test_deeplift_with_inplace_ops_is_complete(images):
    net = _InplaceNet().eval()
    x = images[:, :, :6, :6]
    res = attribute_full("deeplift", net, x, 0)
    t = torch.zeros(5, dtype=torch.long)
    gap = _logit(net, x, t) - _logit(net, torch.zeros_like(x), t)
    torch.testing.assert_close(res.attributions.flatten(1).sum(1), gap, atol=1e-5, rtol=0)
    assert all(m.inplace for m in (net.r1, net.r2)), "in-place flags must be restored"


def test_deeplift_overlapping_maxpool_hand_computed():
    """Windows [1, 3] and [3, 2] share their max: f = 3 + 3 = 6, all of it on the middle pixel.

    captum's max_unpool overwrites instead of summing and gives 3 there.
    """
    net = nn.Sequential(nn.MaxPool2d((1, 2), stride=1), nn.Flatten(), nn.Linear(2, 1, bias=False))
    net[2].weight.data.fill_(1.0)
    x = torch.tensor([1.0, 3.0, 2.0]).view(1, 1, 1, 3)
    torch.testing.assert_close(attribute("deeplift", net, x, 0).flatten(), torch.tensor([0.0, 6.0, 0.0]))


def test_deeplift_complete_on_resnet18():
    """ReLU -> overlapping 3x3/2 max-pool stem and a non-zero normalised baseline: captum is off here."""
    import bam.models as models
    torch.manual_seed(0)
    net = models.create_model("resnet18", num_classes=3, image_size=32, normalization="imagenet").eval()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 2])
    res = attribute_full("deeplift", net, x, t)
    gap = _logit(net, x, t) - _logit(net, torch.zeros_like(x), t)
    torch.testing.assert_close(res.attributions.flatten(1).sum(1), gap, atol=1e-4, rtol=0)
    assert res.extras["deeplift_delta"].abs().max() < 1e-4


@pytest.mark.parametrize("grad_on", [True, False])
def test_gradcam_leaves_the_gradient_mode_as_it_found_it(conv_net, images, targets, grad_on):
    """GradCAM records the part after its layer by switching gradients on there; it restores the caller's mode
    itself, also when the forward raises after the layer."""
    from bam.methods.gradcam import gradcam_maps

    reference = _gradcam_reference(conv_net, images, targets)
    with torch.set_grad_enabled(grad_on):
        maps = gradcam_maps(conv_net, images, targets, micro_batch=2)
        assert torch.is_grad_enabled() is grad_on
        torch.testing.assert_close(maps.expand_as(images), reference)

        def boom(module, args, output):
            raise RuntimeError("after the layer")

        handle = conv_net.gradcam_layer.register_forward_hook(boom)
        try:
            with pytest.raises(RuntimeError, match="after the layer"):
                gradcam_maps(conv_net, images, targets, micro_batch=2)
        finally:
            handle.remove()
        assert torch.is_grad_enabled() is grad_on

"""Attribution space (SPEC §5.8): closed forms in model space, the original's g at 224 px, end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from method_nets import LinearNet
from PIL import Image

from bam.errors import BamError
from bam.methods import METHODS, attribute, attribute_full
from bam.methods._grad import smoothgrad_noise
from bam.methods._space import (
    AttributionSpace,
    ModelSpaceModel,
    baseline_image,
    method_space,
    model_space,
    resize_masks,
    to_space,
)
from bam.metrics import object_attribution
from bam.models import create_model
from bam.models._wrap import InputWrapper

IMAGE, NET = 16, 28  # 16 px images resized to 28 inside the model: the paper's 128 -> 224 ratio (1.75)


def linear_wrapper(normalization: str = "paper", image: int = IMAGE, net: int = NET) -> InputWrapper:
    """A bam model whose network is linear: logits = W · flatten(preprocess(x)) + b."""
    lin = LinearNet(shape=(3, net, net))
    with torch.no_grad():
        lin.fc.weight.mul_(0.05)
    return InputWrapper(lin, lin.fc, image_size=image, input_size=net, normalization=normalization).eval()


def pixels(n: int = 3, seed: int = 0, size: int = IMAGE) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def weight_rows(model: InputWrapper, target: torch.Tensor) -> torch.Tensor:
    return model.net.fc.weight.detach()[target].view(-1, 3, model.input_size, model.input_size)


TARGET = torch.tensor([0, 2, 1])


# --- the model-space view -------------------------------------------------------------------------

def test_view_is_the_network_on_the_preprocessed_input() -> None:
    model = create_model("small_resnet", num_classes=3, image_size=IMAGE, input_size=NET, normalization="paper").eval()
    x = pixels()
    view = to_space(model, x, torch.ones(3, 1, IMAGE, IMAGE), "model")
    assert isinstance(view.model, ModelSpaceModel) and view.model.net is model_space(model).net is model.net
    mine = model_space(model)
    assert to_space(model, x, torch.ones(3, 1, IMAGE, IMAGE), "model", view=mine).model is mine  # the caller's view
    assert view.inputs.shape == (3, 3, NET, NET) and view.masks.shape == (3, 1, NET, NET)
    with torch.no_grad():
        torch.testing.assert_close(view.model(view.inputs), model(x))
        torch.testing.assert_close(view.model.pixel_view()(view.model.to_pixels(view.inputs)), model(x))
    assert view.model.gradcam_layer is model.gradcam_layer
    assert not view.model.training
    assert {id(p) for p in view.model.parameters()} == {id(p) for p in model.parameters()}
    same = to_space(model, x, torch.ones(3, 1, IMAGE, IMAGE), "pixel")
    assert same.model is model and same.inputs is x and same.space == "pixel"


def test_view_follows_the_model_mode_and_is_not_remembered() -> None:
    """Each call makes a new view (whoever keeps one owns it: nothing module-level remembers models); its mode is
    the model's, and a method call leaves both in the mode they were in."""
    model = create_model("small_resnet", num_classes=3, image_size=IMAGE, input_size=NET, normalization="paper")
    x, m = pixels(), torch.ones(3, 1, IMAGE, IMAGE)
    model.train()
    view = to_space(model, x, m, "model")
    assert view.model.training and view.model is not to_space(model, x, m, "model").model
    attribute("gradient", view.model, view.inputs, TARGET)
    assert model.training and all(mod.training for mod in model.net.modules())
    model.eval()
    view = to_space(model, x, m, "model")
    assert not view.model.training
    attribute("gradient", view.model, view.inputs, TARGET)
    assert not any(mod.training for mod in model.modules())


def test_space_errors_are_one_line() -> None:
    x, m = pixels(), torch.ones(3, 1, IMAGE, IMAGE)
    for kw, words in ((dict(space="network"), "attribution space 'network'"), (dict(mask_mode="cubic"), "mask_mode")):
        with pytest.raises(BamError, match=words) as err:
            to_space(linear_wrapper(), x, m, **kw)  # type: ignore[arg-type]
        assert "\n" not in str(err.value)
    with pytest.raises(BamError, match="no preprocess") as err:
        to_space(LinearNet(shape=(3, IMAGE, IMAGE)), x, m, "model")
    assert "\n" not in str(err.value) and "space 'pixel'" in str(err.value)
    with pytest.raises(BamError, match="model space"):
        model_space(linear_wrapper())(x)  # pixels at the image size are not the network input
    assert AttributionSpace() == AttributionSpace("pixel", "bilinear")


def test_method_space_keeps_controls_and_invertible_methods_in_pixels() -> None:
    for name in ("random", "edge", "center", "invertible_projection", "invertible_taylor"):
        assert method_space(name, "model") == "pixel"
    for name in ("gradient", "smoothgrad", "gradcam", "deeplift", "boundary_ig", "guided_feature_inversion"):
        assert method_space(name, "model") == "model" and method_space(name, "pixel") == "pixel"


# --- closed forms on a linear network -------------------------------------------------------------

def test_black_baseline_is_preprocessed_black_not_zeros() -> None:
    for norm in ("paper", "imagenet"):
        model = linear_wrapper(norm)
        view = model_space(model)
        z = model.preprocess(pixels())
        base = baseline_image(view, z[:1], 0.0)
        torch.testing.assert_close(base, model.preprocess(torch.zeros(1, 3, IMAGE, IMAGE)))
        mean, std = torch.tensor(model.normalization["mean"]), torch.tensor(model.normalization["std"])
        torch.testing.assert_close(base[0, :, 0, 0], -mean / std)
        assert bool((base != 0).all())
        assert torch.equal(baseline_image(model, z[:1], 0.25), torch.full_like(z[:1], 0.25))  # pixel space


@pytest.mark.parametrize("norm", ["paper", "imagenet"])
def test_linear_network_closed_forms_in_model_space(norm: str) -> None:
    """gradient = w, grad x input = w ⊙ z, IG = DeepLIFT = (z - z0) ⊙ w, SmoothGrad = w², IG-SG = w² mean (z+n-z0)²."""
    model = linear_wrapper(norm)
    x = pixels()
    view = to_space(model, x, torch.ones(3, 1, IMAGE, IMAGE), "model")
    z, m = view.inputs, view.model
    w = weight_rows(model, TARGET)
    z0 = model.preprocess(torch.zeros(1, 3, IMAGE, IMAGE))
    torch.testing.assert_close(attribute("gradient", m, z, TARGET), w)
    gxi = attribute("grad_x_input", m, z, TARGET)
    torch.testing.assert_close(gxi, w * z)
    if norm == "paper":  # the original's sign: negative where a pixel is darker than its channel mean
        assert bool(((gxi < 0) == ((w > 0) & (z < 0) | (w < 0) & (z > 0))).all())
    ig = attribute("integrated_gradients", m, z, TARGET, steps=5)
    torch.testing.assert_close(ig, (z - z0) * w, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(attribute("deeplift", m, z, TARGET), (z - z0) * w, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(attribute("smoothgrad", m, z, TARGET, samples=3), w * w)
    noise = smoothgrad_noise(z, 4, 0.15, seed=7)
    expected = (w * w * (z.unsqueeze(0) + noise - z0) ** 2).mean(0)
    got = attribute("ig_smoothgrad", m, z, TARGET, samples=4, steps=3, seed=7)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-3)


def _net_inputs(model: InputWrapper, name: str, x: torch.Tensor, **params: object) -> torch.Tensor:
    """Every tensor the wrapped network received while ``name`` ran on ``x`` (model or pixels)."""
    seen: list[torch.Tensor] = []
    handle = model.net.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        attribute(name, model_space(model) if x.shape[-1] == NET else model, x, TARGET, **params)
    finally:
        handle.remove()
    return torch.cat(seen)


def _lag1_correlation(noise: torch.Tensor) -> float:
    """Mean correlation of horizontally adjacent noise values."""
    a, b = noise[..., :-1].flatten(), noise[..., 1:].flatten()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def test_smoothgrad_noise_at_the_network_input() -> None:
    """Model space: i.i.d. at the network resolution with sigma = 0.15 (max z - min z), as the original.
    Pixel space: resized with the image, so at the network input it is smaller and correlated."""
    model = linear_wrapper("paper")
    x = pixels(n=3, seed=4)
    z = model.preprocess(x)
    sigma = 0.15 * (z.flatten(1).amax(1) - z.flatten(1).amin(1))
    samples = 8
    noise = _net_inputs(model, "smoothgrad", z, samples=samples, seed=3).view(samples, 3, 3, NET, NET) - z
    torch.testing.assert_close(noise.transpose(0, 1).flatten(1).std(1), sigma, rtol=0.03, atol=0)
    assert abs(_lag1_correlation(noise)) < 0.03
    pix = _net_inputs(model, "smoothgrad", x, samples=samples, seed=3).view(samples, 3, 3, NET, NET) - z
    ratio = pix.transpose(0, 1).flatten(1).std(1) / sigma
    assert bool(((ratio > 0.5) & (ratio < 0.8)).all()), ratio
    assert _lag1_correlation(pix) > 0.3


# --- object masks at the network resolution and g as the original computed it --------------------

def _blob_mask(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    m = np.zeros((h, w), np.uint8)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.2, 0.5) * min(h, w)
        m |= (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r).astype(np.uint8)
    m |= (rng.random((h, w)) > 0.97).astype(np.uint8)  # isolated pixels: the hardest case for resizing
    return m


@pytest.mark.parametrize("src, dst", [((128, 128), (224, 224)), ((300, 200), (120, 90)), ((51, 77), (89, 140))])
def test_bilinear_mask_mode_is_pils_bilinear_resize(src: tuple[int, int], dst: tuple[int, int]) -> None:
    """What the original did to its masks: PIL BILINEAR on a 0/1 uint8 mask (antialiased when shrinking)."""
    masks = [_blob_mask(*src, seed=s) for s in range(4)]
    ours = resize_masks(torch.tensor(np.stack(masks))[:, None].float(), dst, "bilinear")[:, 0].numpy()
    ref = np.stack([np.array(Image.fromarray(m).resize((dst[1], dst[0]), Image.BILINEAR)) for m in masks])
    assert set(np.unique(ref)) <= {0, 1}
    assert np.array_equal(ours, ref)


def test_nearest_mask_mode_uses_half_pixel_centres() -> None:
    m = torch.tensor(_blob_mask(16, 16, seed=1))[None, None].float()
    out = resize_masks(m, 28, "nearest")[0, 0]
    src = ((torch.arange(28) + 0.5) * 16 / 28).floor().long()
    assert torch.equal(out, m[0, 0][src][:, src])
    assert torch.equal(resize_masks(m, 16, "nearest"), m) and torch.equal(resize_masks(m, 16, "bilinear"), m)


def original_pos_map(attr_hwc: np.ndarray, percentile: float = 99) -> np.ndarray:
    """From the definition of the original's visualize_pos_attr: positive part summed over channels,
    scaled by (M - min) / (P99 - min) and clipped to [0, 1]."""
    m = attr_hwc.clip(min=0).sum(axis=2)
    lo, hi = m.min(), np.percentile(m, percentile)
    return np.clip((m - lo) / (hi - lo), 0, 1)


def original_object_attr(map_2d: np.ndarray, loc: list[int], crop_mask: np.ndarray) -> float:
    """From the definition of the original's single_attr: the object's crop mask resized by PIL to its
    224-px box (bilinear, uint8), then the map summed over it divided by its non-zero count."""
    r0, c0, r1, c1 = loc
    resized = np.array(Image.fromarray(crop_mask).resize((c1 - c0, r1 - r0), Image.BILINEAR))
    return float((map_2d[r0:r1, c0:c1] * resized).sum() / np.count_nonzero(resized))


def test_g_at_224_equals_the_original_post_processing() -> None:
    """Random 224-px maps, objects pasted on 128-px images at boxes on a 4-px grid (so the original's
    int(l * 224 / 128) box is exact): bam's g on its model-space masks equals the original's value."""
    model = create_model("small_resnet", num_classes=3, image_size=128, input_size=224, normalization="paper")
    gen = torch.Generator().manual_seed(5)
    boxes = [(8, 12, 84, 96), (40, 0, 128, 76), (0, 52, 72, 128)]  # row0, col0, row1, col1 at 128 px
    crops = [_blob_mask(r1 - r0, c1 - c0, seed=10 + i) for i, (r0, c0, r1, c1) in enumerate(boxes)]
    masks = torch.zeros(3, 1, 128, 128)
    for i, ((r0, c0, r1, c1), crop) in enumerate(zip(boxes, crops, strict=True)):
        masks[i, 0, r0:r1, c0:c1] = torch.tensor(crop).float()
    view = to_space(model.eval(), torch.rand(3, 3, 128, 128, generator=gen), masks, "model", "bilinear")
    maps = torch.randn(3, 3, 224, 224, generator=gen, dtype=torch.float64)
    ours = object_attribution(maps, view.masks)
    ref = []
    for i, box in enumerate(boxes):
        loc = [int(v * 224 / 128) for v in box]
        ref.append(original_object_attr(original_pos_map(maps[i].permute(1, 2, 0).numpy()), loc, crops[i]))
    np.testing.assert_allclose(ours.numpy(), ref, rtol=1e-10, atol=1e-12)


# --- every gradient-family method through to_space + attribute + g ------------------------------

#: every built-in method that runs in model space, with parameters small enough for a CPU test
MODEL_SPACE_METHODS: dict[str, dict[str, object]] = {
    "gradient": {}, "grad_x_input": {}, "smoothgrad": {"samples": 2}, "integrated_gradients": {"steps": 3},
    "ig_smoothgrad": {"samples": 2, "steps": 2}, "guided_backprop": {}, "gradcam": {}, "guided_gradcam": {},
    "deeplift": {}, "guided_feature_inversion": {"stage1_steps": 1, "stage2_steps": 2},
    "boundary_ig": {"epsilons": [0.5, 4.0], "attack_steps": 3, "cw": "off", "bisection_steps": 3, "ig_steps": 3,
                    "skip_factor": 0},
    "boundary_gradient": {"epsilons": [0.5, 4.0], "attack_steps": 3, "cw": "off", "bisection_steps": 3,
                          "skip_factor": 0},
}


def test_the_list_covers_every_built_in_model_space_method() -> None:
    built_in = {n for n in METHODS.names() if METHODS.get(n).__module__.startswith("bam.methods")}
    assert {n for n in built_in if method_space(n, "model") == "model"} == set(MODEL_SPACE_METHODS)


def _end_to_end(model: torch.nn.Module, image: int, net: int) -> None:
    x = torch.rand(2, 3, image, image, generator=torch.Generator().manual_seed(2))
    masks = torch.zeros(2, 1, image, image)
    masks[:, :, image // 4: image // 2, image // 3: 3 * image // 4] = 1
    view = to_space(model.eval(), x, masks, "model", "bilinear")
    with torch.no_grad():
        target = view.model(view.inputs).argmax(1)
    for name, params in MODEL_SPACE_METHODS.items():
        res = attribute_full(name, view.model, view.inputs, target, **params)
        assert res.attributions.shape == (2, 3, net, net), name
        g = object_attribution(res.attributions, view.masks)
        ok = res.valid & torch.isfinite(g)
        assert bool(((g[ok] >= 0) & (g[ok] <= 1)).all()), name
        assert bool(torch.isfinite(res.attributions[res.valid]).all()), name


def test_end_to_end_small_model_in_model_space() -> None:
    torch.manual_seed(0)
    model = create_model("small_resnet", num_classes=3, image_size=IMAGE, input_size=NET, normalization="paper")
    _end_to_end(model, IMAGE, NET)


@pytest.mark.slow
def test_end_to_end_paper_resnet50_in_model_space() -> None:
    """The paper recipe's model: ResNet-50, 128-px images resized to 224 inside, the original's mean subtraction."""
    torch.manual_seed(0)
    model = create_model("resnet50", num_classes=10, image_size=128, input_size=224, normalization="paper")
    _end_to_end(model, 128, 224)


def test_without_resize_only_grad_x_input_depends_on_the_space() -> None:
    """No resize, equal per-channel std: the two spaces differ by an affine map of the input, under which
    every method here is equivariant (same g) except gradient x input (it multiplies by the input)."""
    torch.manual_seed(1)
    model = create_model("small_resnet", num_classes=3, image_size=IMAGE, normalization="centered").eval()
    x = pixels(n=3, seed=6)
    masks = torch.zeros(3, 1, IMAGE, IMAGE)
    masks[:, :, 3:10, 4:12] = 1
    with torch.no_grad():
        target = model(x).argmax(1)
    views = {s: to_space(model, x, masks, s) for s in ("pixel", "model")}
    for name, params in MODEL_SPACE_METHODS.items():
        g = {}
        for s, v in views.items():
            res = attribute_full(name, v.model, v.inputs, target, seed=3, **params) if name in (
                "smoothgrad", "ig_smoothgrad", "boundary_ig", "boundary_gradient") else attribute_full(
                name, v.model, v.inputs, target, **params)
            g[s] = torch.where(res.valid, object_attribution(res.attributions, v.masks), torch.nan)
        if name == "grad_x_input":
            assert not torch.allclose(g["pixel"], g["model"], equal_nan=True)
        else:
            torch.testing.assert_close(g["model"], g["pixel"], atol=1e-4, rtol=0, equal_nan=True, msg=name)


def test_boundary_methods_in_model_space_on_a_linear_network() -> None:
    """The search runs on network-resolution pixels: x' in the [0, 1] box, distances in pixel units
    no shorter than the exact distance to the nearest boundary; BG = w_c and BIG sums to f(z) - f(z')."""
    model = linear_wrapper("imagenet", image=8, net=14)
    x = 0.4 + 0.2 * pixels(n=3, seed=8, size=8)
    view = to_space(model, x, torch.ones(3, 1, 8, 8), "model")
    z, m = view.inputs, view.model
    with torch.no_grad():
        logits = m(z)
    c = logits.argmax(1)
    kw = dict(cw="off", skip_factor=0, attack_steps=20, seed=0)
    big = attribute_full("boundary_ig", m, z, c, ig_steps=5, **kw)
    bg = attribute_full("boundary_gradient", m, z, c, **kw)
    assert bool(big.valid.all()) and bool(bg.valid.all())
    w = model.net.fc.weight.detach()
    std = torch.tensor(model.normalization["std"]).view(1, 3, 1, 1)
    torch.testing.assert_close(bg.attributions, weight_rows(model, c))
    # exact L2 distance in network-resolution pixels to each hyperplane f_c = f_j (u = z * std + mean)
    exact = []
    for i in range(3):
        gaps = logits[i, c[i]] - logits[i]
        normals = ((w[c[i]] - w).view(-1, 3, 14, 14) / std).flatten(1).norm(dim=1)
        gaps[c[i]] = float("inf")
        exact.append(float((gaps / normals).min()))
    dist = big.extras["boundary_distance"]
    assert bool((dist >= torch.tensor(exact) * (1 - 1e-3)).all()), (dist, exact)
    assert bool((dist <= torch.tensor(exact) * 1.1).all()), (dist, exact)
    # x' itself: in the pixel box, at the recorded distance, and BIG = (z - z') ⊙ w_c (linear network)
    from bam.methods.boundary import SEARCH_DEFAULTS, _search

    res, _mb = _search(m, z, {**SEARCH_DEFAULTS, "cw": "off", "skip_factor": 0, "attack_steps": 20}, 0, 0)
    u_prime = m.to_pixels(res.boundary)
    assert float(u_prime.min()) >= -1e-5 and float(u_prime.max()) <= 1 + 1e-5
    torch.testing.assert_close((m.to_pixels(z) - u_prime).flatten(1).norm(dim=1), dist, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(big.attributions, (z - res.boundary) * weight_rows(model, c), rtol=1e-3, atol=1e-4)

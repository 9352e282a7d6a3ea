"""Architectures: torchvision parity, DeepLIFT safety (one ReLU module per call site), registry."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.overrides import TorchFunctionMode

from bam.errors import BamError
from bam.models import create_model, list_models, register_model
from bam.models._registry import MODELS

#: registered archs built on a torchvision model of the same name (their logits must match it)
TORCHVISION_ARCHS = [a for a in list_models() if hasattr(torchvision.models, a)]


class _CountFunctionalRelu(TorchFunctionMode):
    """Counts every relu call made through torch functions (modules and functional calls alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func in (F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_, F.relu_):
            self.calls += 1
        return func(*args, **(kwargs or {}))


def test_torchvision_archs_are_found() -> None:
    assert {"resnet18", "resnet50"} <= set(TORCHVISION_ARCHS) and "small_resnet" not in TORCHVISION_ARCHS


@pytest.mark.parametrize("arch", TORCHVISION_ARCHS)
def test_logits_equal_stock_torchvision(arch: str) -> None:
    model = create_model(arch, num_classes=7, image_size=32, normalization="none").eval()
    stock = getattr(torchvision.models, arch)(num_classes=7).eval()
    missing, unexpected = stock.load_state_dict(model.net.state_dict(), strict=True)
    assert not missing and not unexpected
    # give BN non-trivial statistics so the comparison exercises every layer
    with torch.no_grad():
        for (name, buf), (name2, buf2) in zip(model.net.named_buffers(), stock.named_buffers()):
            assert name == name2
            if "running_mean" in name:
                buf.normal_(0, 0.1)
                buf2.copy_(buf)
            if "running_var" in name:
                buf.uniform_(0.5, 1.5)
                buf2.copy_(buf)
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(model(x), stock(x), rtol=0, atol=0)


def test_state_dict_layout_matches_torchvision() -> None:
    model = create_model("resnet50", num_classes=10, image_size=64)
    stock = torchvision.models.resnet50(num_classes=10)
    assert list(model.net.state_dict()) == list(stock.state_dict())
    assert set(model.state_dict()) == {f"net.{k}" for k in stock.state_dict()}


@pytest.mark.parametrize("arch", list_models())
def test_deeplift_safe_relus(arch: str) -> None:
    """Every registered arch: each nn.ReLU module fires exactly once per forward, none is in-place,
    no relu outside a module (DeepLIFT's rules hook ReLU modules)."""
    size = 32
    model = create_model(arch, num_classes=5, image_size=size).eval()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert all(not m.inplace for m in relus)
    fired: dict[int, int] = {}
    handles = [m.register_forward_hook(lambda mod, i, o: fired.__setitem__(id(mod), fired.get(id(mod), 0) + 1))
               for m in relus]
    counter = _CountFunctionalRelu()
    with counter:
        model(torch.rand(2, 3, size, size))
    for h in handles:
        h.remove()
    assert sorted(fired.values()) == [1] * len(relus), "a ReLU module is shared between call sites"
    assert counter.calls == len(relus), "a relu call happens outside an nn.ReLU module"
    per_block = {"SafeBasicBlock": 2, "SafeBottleneck": 3}
    blocks = [per_block[type(m).__name__] for m in model.modules() if type(m).__name__ in per_block]
    if blocks:  # a ResNet: the stem's ReLU plus each block's own
        assert len(relus) == 1 + sum(blocks)


def test_resnets_have_one_relu_per_call_site() -> None:
    """Known answers for the check above: ResNet-18 = stem + 8 basic blocks x 2, ResNet-50 = stem + 16 x 3."""
    counts = {a: sum(isinstance(m, nn.ReLU) for m in create_model(a, num_classes=5, image_size=32).modules())
              for a in ("resnet18", "resnet50")}
    assert counts == {"resnet18": 17, "resnet50": 49}


def test_stock_torchvision_would_fail_the_check() -> None:
    """The check above does catch torchvision's shared, in-place self.relu."""
    stock = torchvision.models.resnet18(num_classes=5).eval()
    relus = [m for m in stock.modules() if isinstance(m, nn.ReLU)]
    fired: dict[int, int] = {}
    for m in relus:
        m.register_forward_hook(lambda mod, i, o: fired.__setitem__(id(mod), fired.get(id(mod), 0) + 1))
    stock(torch.rand(1, 3, 32, 32))
    assert max(fired.values()) > 1 and any(m.inplace for m in relus)


def _deeplift_delta(model: nn.Module, size: int) -> torch.Tensor:
    from captum.attr import DeepLift

    with torch.no_grad():  # non-trivial BN so the nets are not near-identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    model = model.double().eval()
    x = torch.rand(3, 3, size, size, dtype=torch.float64)
    target = torch.tensor([0, 1, 2])
    attr, delta = DeepLift(model).attribute(x, baselines=torch.zeros_like(x), target=target,
                                            return_convergence_delta=True)
    out = model(x)[torch.arange(3), target] - model(torch.zeros_like(x))[torch.arange(3), target]
    torch.testing.assert_close(attr.sum(dim=(1, 2, 3)), out - delta)
    return delta


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("arch", ["small_resnet", "resnet18"])
def test_deeplift_summation_to_delta(arch: str) -> None:
    """DeepLIFT Rescale completeness: sum of attributions = f(x) - f(0) (Shrikumar et al. 2017).

    captum's MaxPool rule is itself not exactly complete, so the resnet stem's max-pool is replaced
    by an identity here; every ReLU is still the model's own.
    """
    model = create_model(arch, num_classes=4, image_size=32)
    if arch == "resnet18":
        model.net.maxpool = nn.Identity()
    assert _deeplift_delta(model, 32).abs().max() < 1e-8


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_deeplift_breaks_on_stock_torchvision() -> None:
    """The same check fails for torchvision's shared ReLU: the property above is not vacuous."""
    stock = torchvision.models.resnet18(num_classes=4)
    stock.maxpool = nn.Identity()
    with pytest.raises(RuntimeError, match="used more than once"):  # captum detects the shared ReLU module
        _deeplift_delta(stock, 32)


def test_wrapper_resize_and_normalisation() -> None:
    model = create_model("small_resnet", num_classes=3, image_size=32, input_size=48, normalization="paper").eval()
    assert model.input_size == 48
    x = torch.rand(2, 3, 32, 32)
    pre = model.preprocess(x)
    up = F.interpolate(x, size=(48, 48), mode="bilinear", align_corners=False)
    expected = up * 255 - torch.tensor([123.68, 116.78, 103.94]).view(1, 3, 1, 1)
    torch.testing.assert_close(pre, expected, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(model(x), model.net(expected), atol=1e-4, rtol=1e-4)
    # gradcam_layer is the last stage: [N, C, h, w] with h = input/8 for the default small_resnet
    feats = []
    model.gradcam_layer.register_forward_hook(lambda m, i, o: feats.append(o))
    model(x)
    assert feats[0].shape == (2, 128, 6, 6)


def test_gradcam_layer_is_part_of_the_model() -> None:
    for arch in list_models():
        model = create_model(arch, num_classes=3, image_size=32)
        assert any(m is model.gradcam_layer for m in model.modules())


def test_registry_errors_and_listing() -> None:
    assert {"small_resnet", "resnet18", "resnet50"} <= set(list_models())
    with pytest.raises(BamError, match=r"unknown arch 'vgg'; accepted: .*resnet18.*small_resnet"):
        create_model("vgg", num_classes=3, image_size=32)
    with pytest.raises(BamError, match="has no pretrained weights"):
        create_model("small_resnet", num_classes=3, image_size=32, pretrained=True)
    with pytest.raises(BamError, match="num_classes 1"):
        create_model("small_resnet", num_classes=1, image_size=32)
    with pytest.raises(BamError, match="normalization 'bogus'"):
        create_model("small_resnet", num_classes=3, image_size=32, normalization="bogus")
    with pytest.raises(BamError, match="bad arguments for arch 'small_resnet'"):
        create_model("small_resnet", num_classes=3, image_size=32, depth=9)


def test_register_model_decorator_and_duplicates() -> None:
    with MODELS.scratch():
        @register_model("_test_linear")
        def _linear(*, num_classes: int, image_size: int) -> nn.Module:
            """A linear probe (test only)."""
            return nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, num_classes))

        assert "_test_linear" in list_models()
        m = create_model("_test_linear", num_classes=2, image_size=8)
        assert m(torch.rand(1, 3, 8, 8)).shape == (1, 2)
        with pytest.raises(ValueError, match="duplicate"):
            register_model("_test_linear")(_linear)
    assert "_test_linear" not in list_models()
    with pytest.raises(BamError, match="unknown arch '_test_linear'"):
        MODELS.remove("_test_linear")


def test_pretrained_only_from_local_cache(tmp_path: Path) -> None:
    with pytest.raises(BamError, match=r"resnet18-f37072fd.pth not found .*never downloads"):
        create_model("resnet18", num_classes=10, image_size=32, pretrained=True, hub_dir=tmp_path)
    ref = torchvision.models.resnet18()  # stands in for the ImageNet weights
    (tmp_path / "checkpoints").mkdir()
    torch.save(ref.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    m = create_model("resnet18", num_classes=10, image_size=32, pretrained=True, hub_dir=tmp_path)
    torch.testing.assert_close(m.net.conv1.weight, ref.conv1.weight)
    torch.testing.assert_close(m.net.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)
    assert m.net.fc.weight.shape == (10, 512)  # new head for 10 classes
    m1000 = create_model("resnet18", num_classes=1000, image_size=32, pretrained=True, hub_dir=tmp_path)
    torch.testing.assert_close(m1000.net.fc.weight, ref.fc.weight)
    with pytest.raises(BamError, match="accepted: imagenet"):
        create_model("resnet18", num_classes=10, image_size=32, pretrained=True, hub_dir=tmp_path,
                     normalization="paper")

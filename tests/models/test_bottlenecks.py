"""``model.bottlenecks`` (for TCAV): block_layer1.. -> each residual stage's output, in order, on every arch."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from bam.models import create_model, list_models

#: known answers: arch -> output shapes [C, h, w] of block_layer1.. for a 32 px input (an arch
#: without an entry is checked for everything else)
CASES = {
    "small_resnet": [(32, 16, 16), (64, 8, 8), (128, 4, 4)],
    "resnet18": [(64, 8, 8), (128, 4, 4), (256, 2, 2), (512, 1, 1)],
    "resnet50": [(256, 8, 8), (512, 4, 4), (1024, 2, 2), (2048, 1, 1)],
    "iresnet": [(12, 16, 16), (48, 8, 8), (192, 4, 4)],
    "irevnet": [(12, 16, 16), (48, 8, 8), (192, 4, 4)],
}


def test_known_shapes_cover_the_builtin_archs() -> None:
    assert set(CASES) <= set(list_models())


@pytest.mark.parametrize("arch", list_models())
def test_bottlenecks_names_order_and_shapes(arch: str) -> None:
    torch.manual_seed(0)
    model = create_model(arch, num_classes=4, image_size=32).eval()
    keys_before = list(model.state_dict())
    b = model.bottlenecks
    assert b and list(b) == [f"block_layer{i + 1}" for i in range(len(b))]
    members = {id(m) for m in model.modules()}
    assert all(id(m) in members for m in b.values())  # part of the model, not copies
    seen: list[Tensor] = []
    cam: list[Tensor] = []
    handles = [m.register_forward_hook(lambda mod, i, o: seen.append(o)) for m in b.values()]
    handles.append(model.gradcam_layer.register_forward_hook(lambda mod, i, o: cam.append(o)))
    with torch.no_grad():
        model(torch.rand(2, 3, 32, 32))
    for h in handles:
        h.remove()
    assert len(seen) == len(b)  # fired once each
    if arch in CASES:
        assert [tuple(o.shape[1:]) for o in seen] == CASES[arch]  # in order
    assert len(cam) == 1 and torch.equal(cam[0], seen[-1])  # the last stage's output is GradCAM's layer
    assert list(model.state_dict()) == keys_before  # a property: nothing registered


def test_bottlenecks_follow_module_replacement() -> None:
    model = create_model("small_resnet", num_classes=3, image_size=32)
    new = nn.Identity()
    model.net.stages[1] = new
    assert model.bottlenecks["block_layer2"] is new
    with pytest.raises(AttributeError):
        model.bottlenecks = {}  # type: ignore[misc]

"""Guided feature inversion: the mask finds the region the target depends on; invariances; helpers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bam.errors import BamError
from bam.methods import attribute, attribute_full, get_info
from bam.methods.feature_inversion import gaussian_blur, inversion_mask

H = 24
REGION = (slice(2, 12), slice(3, 13))  # rows, columns the target logit reads


class HighPass(nn.Module):
    """|Laplacian| of each colour channel: channel k lights up where colour k has texture."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-channel absolute Laplacian with replicate padding."""
        k = torch.tensor([[0.0, -1, 0], [-1, 4, -1], [0, -1, 0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=3).abs()


class RegionModel(nn.Module):
    """Class 0's logit depends only on the texture inside REGION; class 1's logit is 0."""

    def __init__(self) -> None:
        """Store the weight matrix [K, D] and bias [K]."""
        super().__init__()
        self.features = HighPass()
        self.gradcam_layer = self.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [6 (r - 0.5), 0] with r the mean texture energy inside REGION."""
        r = self.features(x)[:, :, REGION[0], REGION[1]].sum(1).mean((1, 2))
        return torch.stack([6 * (r - 0.5), torch.zeros_like(r)], 1)


def region_images(n: int = 2, seed: int = 1) -> torch.Tensor:
    """Red binary texture inside REGION only, green binary texture outside it only."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((n, 3, H, H), 0.5)
    red = 0.3 + 0.4 * (torch.rand(n, H, H, generator=g) > 0.5).float()
    green = 0.3 + 0.4 * (torch.rand(n, H, H, generator=g) > 0.5).float()
    x[:, 0, REGION[0], REGION[1]] = red[:, REGION[0], REGION[1]]
    x[:, 1] = green
    x[:, 1, REGION[0], REGION[1]] = 0.5
    return x


def inside() -> torch.Tensor:
    """Boolean [H, W] mask of REGION."""
    m = torch.zeros(H, H, dtype=torch.bool)
    m[REGION] = True
    return m


def test_mask_concentrates_on_the_region_the_target_reads() -> None:
    """The mask is higher where the target logit reads the image, and in [0, 1]."""
    model, x = RegionModel(), region_images()
    target = torch.zeros(2, dtype=torch.long)
    assert torch.all(model(x).argmax(1) == 0)
    res = attribute_full("guided_feature_inversion", model, x, target, blur_sigma=2.0)
    a = res.attributions
    assert a.shape == x.shape
    assert torch.all((a >= 0) & (a <= 1))
    assert torch.equal(a[:, 0], a[:, 1]) and torch.equal(a[:, 0], a[:, 2])  # one mask, broadcast
    m_in, m_out = a[:, 0][:, inside()].mean(1), a[:, 0][:, ~inside()].mean(1)
    assert torch.all(m_in > m_out + 0.1), (m_in, m_out)
    # stage 2 did its job: keeping the mask preserves the class, removing it destroys it
    assert torch.all(res.extras["keep_prob"] > res.extras["remove_prob"])


def test_batch_and_micro_batch_independence() -> None:
    """A batch of two equals each image alone and micro_batch=1."""
    model, x = RegionModel(), region_images(n=2, seed=3)
    target = torch.tensor([0, 1])
    kw = dict(blur_sigma=2.0, stage1_steps=3, stage2_steps=12)
    both = attribute("guided_feature_inversion", model, x, target, **kw)
    for i in range(2):
        alone = attribute("guided_feature_inversion", model, x[i:i + 1], target[i:i + 1], **kw)
        assert torch.allclose(alone, both[i:i + 1], atol=1e-6)
    mb1 = attribute("guided_feature_inversion", model, x, target, micro_batch=1, **kw)
    assert torch.allclose(mb1, both, atol=1e-6)


def test_inversion_mask_known_answer() -> None:
    """Hand-computed min-max mask; invariant to scaling w; stays in [0, 1]."""
    acts = torch.zeros(1, 2, 2, 2)
    acts[0, 0] = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    acts[0, 1] = torch.tensor([[0.0, 0.0], [0.0, 3.0]])
    m = inversion_mask(torch.tensor([[2.0, 1.0]]), acts, (2, 2))  # sum = [[2, 0], [0, 3]] -> /3
    assert torch.allclose(m[0, 0], torch.tensor([[2 / 3, 0.0], [0.0, 1.0]]))
    # scale invariance (min-max normalisation) and range after bilinear upsampling
    m2 = inversion_mask(torch.tensor([[20.0, 10.0]]), acts, (7, 7))
    assert torch.allclose(m2, inversion_mask(torch.tensor([[2.0, 1.0]]), acts, (7, 7)))
    assert float(m2.min()) >= 0 and float(m2.max()) <= 1


def test_gaussian_blur_known_answers() -> None:
    """Constants are fixed points; an impulse becomes the outer product of the 1-D kernel."""
    const = torch.full((1, 3, 9, 9), 0.4)
    assert torch.allclose(gaussian_blur(const, 1.5), const)  # constant images are fixed points
    impulse = torch.zeros(1, 1, 21, 21)
    impulse[0, 0, 10, 10] = 1.0
    sigma = 1.3
    out = gaussian_blur(impulse, sigma)
    t = torch.arange(-10, 11, dtype=torch.float32)
    k1 = torch.exp(-0.5 * (t / sigma) ** 2) * (t.abs() <= 4)  # radius ceil(3 sigma) = 4
    k1 = k1 / k1.sum()
    assert torch.allclose(out[0, 0], torch.outer(k1, k1), atol=1e-7)


def test_requires_conv_layer_and_checks_parameters() -> None:
    """Needs model.gradcam_layer; passes(); bad parameters raise one line."""
    assert get_info("guided_feature_inversion").requires == ("conv_layer",)
    assert get_info("guided_feature_inversion").passes({}) == 1 + 10 + 2 * 70
    x = region_images(n=1)
    with pytest.raises(BamError, match="gradcam_layer"):
        attribute("guided_feature_inversion", nn.Sequential(nn.Flatten(), nn.Linear(3 * H * H, 2)), x, 0)
    for bad in (dict(lr=0.0), dict(stage2_steps=-1), dict(blur_sigma=-2.0), dict(l1=-1.0)):
        with pytest.raises(BamError) as err:
            attribute("guided_feature_inversion", RegionModel(), x, 0, **bad)
        assert next(iter(bad)) in str(err.value) and "\n" not in str(err.value)

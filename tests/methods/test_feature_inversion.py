"""Guided feature inversion: the mask finds the region the target depends on; invariances; helpers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bam.errors import BamError
from bam.methods import attribute, attribute_full, get_info
from bam.methods.feature_inversion import (
    OBJECTIVE_WEIGHTS,
    FeatureInversionParams,
    feature_error,
    gaussian_blur,
    inversion_mask,
    invert,
    weight_penalty,
)

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
    for bad in (dict(lr=0.0), dict(stage2_steps=-1), dict(blur_sigma=-2.0), dict(stage1_weight=-1.0),
                dict(stage2_weight="x"), dict(objective="paper_v2")):
        with pytest.raises(BamError) as err:
            attribute("guided_feature_inversion", RegionModel(), x, 0, **bad)
        assert next(iter(bad)) in str(err.value) and "\n" not in str(err.value)


# --- objectives (SPEC §5.7): the paper's and the authors' code --------------------------------------

DEAD = 8  # channels whose activations are identically zero: only the penalty moves their weights


class PaddedFeatures(nn.Module):
    """HighPass channels (red, green, blue) followed by DEAD all-zero channels."""

    def __init__(self) -> None:
        super().__init__()
        self.high = HighPass()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3 + DEAD, H, W]."""
        h = self.high(x)
        return torch.cat([h, h.new_zeros(h.shape[0], DEAD, *h.shape[2:])], 1)


class PaddedRegionModel(RegionModel):
    """RegionModel whose conv stage has 3 + DEAD channels; the logits read the first three as before."""

    def __init__(self) -> None:
        super().__init__()
        self.features = PaddedFeatures()
        self.gradcam_layer = self.features


def _params(**kw: object) -> FeatureInversionParams:
    return FeatureInversionParams(**{"blur_sigma": 2.0, **kw})  # type: ignore[arg-type]


def test_objective_terms_hand_values() -> None:
    """paper: summed squared error and L1; authors_code: relative squared error and L2 squared."""
    ref = torch.tensor([[[[1.0, 2.0]], [[0.0, 2.0]]]])  # ||ref||² = 9
    feat = torch.tensor([[[[2.0, 2.0]], [[0.0, 0.0]]]])  # ||feat - ref||² = 1 + 4 = 5
    assert feature_error(feat, ref, "paper").item() == pytest.approx(5.0)
    assert feature_error(feat, ref, "authors_code").item() == pytest.approx(5.0 / 9.0)
    w = torch.tensor([[0.5, 0.0, 2.0]])
    assert weight_penalty(w, "paper").item() == pytest.approx(2.5)
    assert weight_penalty(w, "authors_code").item() == pytest.approx(4.25)
    assert OBJECTIVE_WEIGHTS == {"paper": (10.0, 1.0), "authors_code": (5.0, 2.0)}
    info = get_info("guided_feature_inversion")
    assert info.defaults["objective"] == "paper"
    assert info.defaults["stage1_weight"] is None and info.defaults["stage2_weight"] is None


def test_penalty_alone_moves_dead_weights_by_lr_per_step() -> None:
    """A dead channel has no task gradient, so Adam on delta·|w| steps it down by exactly lr per step.

    Stage 2 only, 5 steps at lr 0.01: 0.1 - 5 · 0.01 = 0.05. With delta = 0 the weight never moves.
    """
    model, x, t = PaddedRegionModel(), region_images(n=2), torch.zeros(2, dtype=torch.long)
    inv = invert(model, x, t, _params(stage1_steps=0, stage2_steps=5), 0)
    torch.testing.assert_close(inv.weights[:, 3:], torch.full((2, DEAD), 0.05), atol=1e-6, rtol=0)
    still = invert(model, x, t, _params(stage1_steps=0, stage2_steps=5, stage2_weight=0.0), 0)
    assert torch.equal(still.weights[:, 3:], torch.full((2, DEAD), 0.1))


def test_stage2_drives_most_weights_to_zero_on_a_known_model() -> None:
    """Paper objective (delta = 1), stage 2 alone: the blue and the DEAD channels (no effect on the mask
    after min-max normalisation, hence none on the probabilities) end at exactly 0; the red channel
    (the texture the target reads) survives and the mask still finds the region."""
    model, x, t = PaddedRegionModel(), region_images(n=2), torch.zeros(2, dtype=torch.long)
    inv = invert(model, x, t, _params(stage1_steps=0), 0)
    res = attribute_full("guided_feature_inversion", model, x, t, stage1_steps=0, blur_sigma=2.0)
    k = 3 + DEAD
    assert torch.all(inv.weights[:, 2:] == 0), inv.weights
    assert torch.all(inv.weights[:, 0] > 0)
    assert torch.all(res.extras["active_weights"] <= 2) and torch.all(res.extras["active_weights"] < k / 2)
    a = res.attributions[:, 0]
    assert torch.all(a[:, inside()].mean(1) > a[:, ~inside()].mean(1))
    assert torch.all(res.extras["keep_prob"] > res.extras["remove_prob"])
    # without the penalty nothing drives the dead weights: every channel stays active
    free = attribute_full("guided_feature_inversion", model, x, t, stage1_steps=0, stage2_steps=10, blur_sigma=2.0,
                          stage2_weight=0.0)
    assert torch.all(free.extras["active_weights"] == k)


def test_authors_code_objective_runs_and_differs() -> None:
    """objective=authors_code uses its own terms and weights (5, 2): another mask than the paper's."""
    model, x, t = RegionModel(), region_images(n=2), torch.zeros(2, dtype=torch.long)
    kw = dict(blur_sigma=2.0, stage1_steps=4, stage2_steps=8)
    paper = attribute("guided_feature_inversion", model, x, t, **kw)
    code = attribute("guided_feature_inversion", model, x, t, objective="authors_code", **kw)
    explicit = attribute("guided_feature_inversion", model, x, t, objective="authors_code", stage1_weight=5.0,
                         stage2_weight=2, **kw)
    assert torch.all((code >= 0) & (code <= 1))
    assert not torch.allclose(paper, code)
    torch.testing.assert_close(code, explicit)

"""invertible_projection / invertible_taylor (Zhuang et al. 2019; SPEC §5.6): known answers on an
invertible *linear* model, where every quantity has a closed form, plus i-RevNet and i-ResNet paths."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from bam.errors import BamError
from bam.methods import attribute, attribute_full, get_info
from bam.methods.invertible import invertible_projection


class LinearInvertible(nn.Module):
    """T(x) = M·flatten(x) + t (M invertible), logits = A·T(x) + b: implements InvertibleClassifier."""

    is_invertible = True

    def __init__(self, shape: tuple[int, int, int] = (3, 2, 2), classes: int = 4, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        d = shape[0] * shape[1] * shape[2]
        self.shape = shape
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
        self.register_buffer("m", (q * (0.5 + torch.rand(d, generator=gen, dtype=torch.float64))).float())
        self.register_buffer("t", torch.randn(d, generator=gen))
        self.register_buffer("a", torch.randn(classes, d, generator=gen))
        self.register_buffer("b", torch.randn(classes, generator=gen))

    def features(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ self.m.T + self.t

    def inverse(self, z: Tensor) -> Tensor:
        x = torch.linalg.solve(self.m.double(), (z - self.t).double().T).T
        return x.float().view(-1, *self.shape)

    def affine_head(self) -> tuple[Tensor, Tensor]:
        return self.a, self.b

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x) @ self.a.T + self.b


def _inputs(n: int = 6, shape: tuple[int, int, int] = (3, 2, 2), seed: int = 1) -> Tensor:
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def _reference_nearest(model: LinearInvertible, x: Tensor, c: Tensor) -> tuple[list[int], list[float]]:
    """Slow reference: loop over images and classes, distance |m_j| / ||a_c - a_j|| in feature space."""
    z = model.features(x).double()
    a, b = model.a.double(), model.b.double()
    best_j, best_d = [], []
    for i in range(x.shape[0]):
        ci = int(c[i])
        cands = []
        for j in range(a.shape[0]):
            if j == ci:
                continue
            m = float((a[ci] - a[j]) @ z[i] + b[ci] - b[j])
            cands.append((abs(m) / float((a[ci] - a[j]).norm()), j))
        d, j = min(cands)
        best_j.append(j)
        best_d.append(d)
    return best_j, best_d


def test_two_classes_projection_is_exact_and_ties() -> None:
    model = LinearInvertible(classes=2).eval()
    x = _inputs()
    c = model(x).argmax(1)
    res = attribute_full("invertible_projection", model, x, c)
    j = 1 - c
    assert torch.equal(res.extras["boundary_class"].long(), j)
    xp = x - res.attributions
    logits = model(xp)
    gap = (logits[:, 0] - logits[:, 1]).abs()
    assert float(gap.max()) < 1e-5
    assert float(res.extras["logit_gap_after"].max()) < 1e-5
    # Closed form: x - x_p = M^{-1} (m / ||d||^2) d with d = a_c - a_j, m = d·z + b_c - b_j.
    d = model.a[c] - model.a[j]
    m = ((model.features(x) * d).sum(1) + model.b[c] - model.b[j]).unsqueeze(1)
    expected = torch.linalg.solve(model.m, (m / (d * d).sum(1, keepdim=True) * d).T).T.view_as(x)
    torch.testing.assert_close(res.attributions, expected, atol=1e-5, rtol=1e-4)
    assert bool(res.valid.all())
    assert float(res.extras["reconstruction_error"].max()) < 1e-5
    torch.testing.assert_close(res.extras["margin"], m.squeeze(1), atol=1e-5, rtol=1e-5)
    # ||x - x_p||: the pre-image of the feature-space projection (not BIG/BG's boundary_distance)
    assert "boundary_distance" not in res.extras
    torch.testing.assert_close(res.extras["projection_distance"], res.attributions.flatten(1).norm(dim=1))


def test_multiclass_nearest_boundary_matches_reference() -> None:
    model = LinearInvertible(classes=7, seed=3).eval()
    x = _inputs(n=12, seed=4)
    c = model(x).argmax(1)
    res = attribute_full("invertible_projection", model, x, c)
    ref_j, ref_d = _reference_nearest(model, x, c)
    assert res.extras["boundary_class"].long().tolist() == ref_j
    torch.testing.assert_close(res.extras["feature_distance"].double(), torch.tensor(ref_d, dtype=torch.float64),
                               atol=1e-5, rtol=1e-5)
    xp = x - res.attributions
    logits = model(xp)
    top = logits.max(1).values
    lc = logits.gather(1, c.view(-1, 1)).squeeze(1)
    lj = logits.gather(1, torch.tensor(ref_j).view(-1, 1)).squeeze(1)
    # c and j* tie at the top of the logits: no third class overtakes at the projection.
    assert float((lc - lj).abs().max()) < 1e-5
    assert float((top - lc).max()) < 1e-5
    # The projection is the closest point of the boundary in feature space.
    dz = (model.features(x) - model.features(xp)).norm(dim=1)
    torch.testing.assert_close(dz.double(), torch.tensor(ref_d, dtype=torch.float64), atol=1e-4, rtol=1e-4)


def test_non_predicted_target_projects_to_its_nearest_hyperplane() -> None:
    model = LinearInvertible(classes=5, seed=5).eval()
    x = _inputs(n=8, seed=6)
    c = (model(x).argmax(1) + 1) % 5
    res = attribute_full("invertible_projection", model, x, c)
    ref_j, _ = _reference_nearest(model, x, c)
    assert res.extras["boundary_class"].long().tolist() == ref_j
    assert float(res.extras["logit_gap_after"].max()) < 1e-5
    assert bool((res.extras["margin"] < 0).any())  # some targets were below another class


def test_taylor_closed_form_and_completeness_on_linear_model() -> None:
    model = LinearInvertible(classes=6, seed=7).eval()
    x = _inputs(n=9, seed=8)
    c = model(x).argmax(1)
    proj = attribute_full("invertible_projection", model, x, c)
    tay = attribute_full("invertible_taylor", model, x, c)
    j = proj.extras["boundary_class"].long()
    # g = f_c - f_j is linear: grad = M^T (a_c - a_j), E = grad ⊙ (x - x_p), sum(E) = g(x) = m_j*.
    grad = ((model.a[c] - model.a[j]) @ model.m).view_as(x)
    torch.testing.assert_close(tay.attributions, grad * proj.attributions, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(tay.attributions.flatten(1).sum(1), tay.extras["margin"], atol=1e-4, rtol=1e-4)
    assert float(tay.extras["linearization_error"].max()) < 1e-4
    assert torch.equal(tay.extras["boundary_class"], proj.extras["boundary_class"])


def test_batch_and_micro_batch_invariance_linear() -> None:
    model = LinearInvertible(classes=4, seed=9).eval()
    x = _inputs(n=7, seed=10)
    c = model(x).argmax(1)
    for name in ("invertible_projection", "invertible_taylor"):
        full = attribute(name, model, x, c)
        mb = attribute(name, model, x, c, micro_batch=2)
        singles = torch.cat([attribute(name, model, x[i:i + 1], c[i:i + 1]) for i in range(7)])
        torch.testing.assert_close(mb, full, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(singles, full, atol=1e-6, rtol=1e-5)


def test_failed_reconstruction_marks_rows_invalid() -> None:
    model = LinearInvertible(classes=3, seed=11).eval()
    x = _inputs(n=4, seed=12)
    c = model(x).argmax(1)
    res = attribute_full("invertible_projection", model, x, c, max_reconstruction_error=1e-30)
    rec = res.extras["reconstruction_error"]
    assert torch.equal(res.valid, rec <= 1e-30)
    assert not bool(res.valid.all())
    out = attribute("invertible_projection", model, x, c, max_reconstruction_error=1e-30)
    assert bool(torch.isnan(out[~res.valid]).all())
    skipped = attribute_full("invertible_projection", model, x, c, check_reconstruction=False)
    assert bool(skipped.valid.all()) and bool(torch.isnan(skipped.extras["reconstruction_error"]).all())


class BrokenInverse(LinearInvertible):
    """A linear model whose inverse is off by a fixed offset: x_p does not tie c and j*."""

    def inverse(self, z: Tensor) -> Tensor:
        return super().inverse(z) + 0.05


def test_projection_that_does_not_tie_is_invalid() -> None:
    model = BrokenInverse(classes=4, seed=16).eval()
    x = _inputs(n=6, seed=17)
    c = model(x).argmax(1)
    res = attribute_full("invertible_projection", model, x, c, check_reconstruction=False)
    scale = model(x).abs().amax(1)
    gap = res.extras["logit_gap_after"]
    assert bool((gap > 1e-4 * scale).all()) and not bool(res.valid.any())
    loose = attribute_full("invertible_projection", model, x, c, check_reconstruction=False, tie_tol=1e3)
    assert bool(loose.valid.all())
    # the honest linear model ties to float32 precision: valid at the default tolerance
    honest = LinearInvertible(classes=4, seed=16).eval()
    ok = attribute_full("invertible_taylor", honest, x, c)
    assert bool(ok.valid.all())
    assert float((ok.extras["logit_gap_after"] / scale).max()) < 1e-5
    with pytest.raises(BamError, match="tie_tol"):
        attribute("invertible_projection", honest, x, c, tie_tol=0)


def test_no_boundary_when_head_rows_coincide() -> None:
    model = LinearInvertible(classes=2, seed=13).eval()
    model.a[1] = model.a[0]
    x = _inputs(n=3, seed=14)
    res = attribute_full("invertible_projection", model, x, torch.zeros(3, dtype=torch.long))
    assert not bool(res.valid.any())


def test_errors_non_invertible_and_bad_target(linear_net: nn.Module) -> None:
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(BamError, match="invertible"):
        attribute("invertible_projection", linear_net, x, 0)
    with pytest.raises(BamError, match="invertible"):
        invertible_projection(linear_net, x, torch.zeros(2, dtype=torch.long))
    model = LinearInvertible(classes=3).eval()
    with pytest.raises(BamError, match="out of range"):
        attribute("invertible_taylor", model, _inputs(n=2), 3)
    with pytest.raises(BamError, match="max_reconstruction_error"):
        attribute("invertible_taylor", model, _inputs(n=2), 0, max_reconstruction_error=0)


def test_method_info() -> None:
    for name in ("invertible_projection", "invertible_taylor"):
        info = get_info(name)
        assert info.requires == ("invertible",) and info.family == "invertible"
        assert info.passes(dict(info.defaults)) >= 3


def _invertible_model(arch: str) -> nn.Module:
    """A small model of ``arch`` with moved BatchNorm statistics and (irevnet) non-zero coupling branches."""
    from bam.models import create_model

    torch.manual_seed(0)
    kwargs = {"blocks": (1, 1), "hidden": (8, 16)}
    model = create_model(arch, num_classes=5, image_size=16, **kwargs)
    if arch == "irevnet":
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.2, 0.6)  # the last BN of each branch starts at zero
    model.train()
    model(torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(14)))  # BatchNorm statistics, ActNorm
    return model.eval()


@pytest.mark.parametrize("arch", ["irevnet", "iresnet"])
def test_network_projection_ties_and_is_batch_invariant(arch: str) -> None:
    model = _invertible_model(arch)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(15))
    c = model(x).argmax(1)
    with torch.no_grad():
        scale = model(x).abs().amax(1)
    for name in ("invertible_projection", "invertible_taylor"):
        res = attribute_full(name, model, x, c)
        assert bool(res.valid.all())
        assert float(res.extras["reconstruction_error"].max()) < (1e-5 if arch == "irevnet" else 1e-4)
        assert float((res.extras["logit_gap_after"] / scale).max()) < 1e-4
        one = torch.cat([attribute(name, model, x[i:i + 1], c[i:i + 1]) for i in range(4)])
        torch.testing.assert_close(one, res.attributions, atol=1e-5, rtol=1e-4)
    tay = attribute_full("invertible_taylor", model, x, c)
    assert float(tay.extras["linearization_error"].median()) < 0.1


def test_irevnet_with_identity_couplings_projects_to_the_nearest_input_boundary() -> None:
    # Known answer (issue 21): with every coupling branch zeroed, T is the normalisation, the Haar
    # squeezes and permutations, i.e. a scaled orthogonal map. Then the feature-space projection is
    # the nearest input-space boundary point, ||x - x_p|| = |g(x)| / ||grad g(x)||, and because the
    # head pools over space, E = x - x_p is one pattern that repeats every 2**stages pixels.
    from bam.models import create_model

    torch.manual_seed(0)
    model = create_model("irevnet", num_classes=5, image_size=16, blocks=(1, 1), hidden=(8, 16))
    with torch.no_grad():
        for m in model.stages.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.zero_()
                m.bias.zero_()
        model.head_norm.running_mean.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    c = model(x).argmax(1)
    res = attribute_full("invertible_projection", model, x, c)
    assert bool(res.valid.all())
    j = res.extras["boundary_class"].long()
    xq = x.clone().requires_grad_(True)
    out = model(xq)
    g = out.gather(1, c.view(-1, 1)).squeeze(1) - out.gather(1, j.view(-1, 1)).squeeze(1)
    (grad,) = torch.autograd.grad(g.sum(), xq)
    nearest = g.detach().abs() / grad.flatten(1).norm(dim=1)
    torch.testing.assert_close(res.extras["projection_distance"], nearest, rtol=1e-4, atol=1e-6)
    # x_p is the nearest point: x - x_p is along grad g (cosine 1)
    cos = torch.nn.functional.cosine_similarity(res.attributions.flatten(1), grad.flatten(1), dim=1)
    torch.testing.assert_close(cos, torch.ones(6), atol=1e-4, rtol=0)
    period = 2 ** len(model.stages)
    tiles = res.attributions.view(6, 3, 16 // period, period, 16 // period, period)
    torch.testing.assert_close(tiles, tiles[:, :, :1, :, :1, :].expand_as(tiles), atol=1e-6, rtol=1e-4)

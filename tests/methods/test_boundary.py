"""BIG / BG and the batched boundary search: known answers on linear models, records, invariances."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bam.errors import BamError
from bam.methods import attribute, attribute_full, get_info
from bam.methods._boundary_search import SearchConfig, boundary_search
from bam.methods.boundary import PIXEL_EPSILONS, REFERENCE_EPSILONS, path_integrated_gradients

GRID = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)


class Linear(nn.Module):
    """f(x) = W flatten(x) + b on [N, C, H, W] inputs."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        """Store the weight matrix [K, D] and bias [K]."""
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits W x + b of the flattened input."""
        return x.flatten(1) @ self.weight.T + self.bias


def tiny_cnn(seed: int = 0) -> nn.Module:
    """A small random conv net (3x8x8 -> 3 classes)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, 3))
    with torch.no_grad():  # standardise the logits on random inputs so that boundaries cross [0, 1]^D
        z = net(torch.rand(256, 3, 8, 8))
        net[-1].weight /= z.std(0).view(-1, 1) / 2
        net[-1].bias.copy_(net[-1].bias / (z.std(0) / 2) - (z.mean(0) / (z.std(0) / 2)))
    return net.eval()


def linear_case(n: int = 6, k: int = 3, seed: int = 0) -> tuple[Linear, torch.Tensor, torch.Tensor]:
    """A random linear model and inputs well inside [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(k, 3 * 8 * 8, generator=g) * 0.3
    b = torch.randn(k, generator=g) * 0.1
    x = torch.rand(n, 3, 8, 8, generator=g) * 0.6 + 0.2
    return Linear(w, b).eval(), x, w


def analytic_boundary(model: Linear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance to, and projection onto, the nearest hyperplane (w_c - w_j).x + (b_c - b_j) = 0."""
    w, b = model.weight.detach(), model.bias.detach()
    flat = x.flatten(1)
    dists, points = [], []
    for i in range(x.shape[0]):
        c = int((flat[i] @ w.T + b).argmax())
        best = None
        for j in range(w.shape[0]):
            if j == c:
                continue
            a = w[c] - w[j]
            m = flat[i] @ a + (b[c] - b[j])
            d = float(m / a.norm())
            if best is None or d < best[0]:
                best = (d, flat[i] - m * a / a.norm() ** 2)
        dists.append(best[0])
        points.append(best[1].view_as(x[i]))
    return torch.tensor(dists), torch.stack(points)


def test_linear_boundary_distance_and_bg_big_known_answers() -> None:
    """Linear model: distance within 2 % of the analytic one, BG = w_c, BIG = (x - x') * w_c."""
    model, x, w = linear_case()
    target = model(x).argmax(1)
    d_true, _ = analytic_boundary(model, x)
    res = attribute_full("boundary_gradient", model, x, target, epsilons=GRID, cw="off")
    assert bool(res.valid.all())
    d = res.extras["boundary_distance"]
    assert torch.all(d >= d_true * (1 - 1e-3)), (d, d_true)  # nothing misclassified is closer than the plane
    assert torch.allclose(d, d_true, rtol=0.02), (d, d_true)
    # BG on a linear model: the gradient of the class-c logit is w_c everywhere
    assert torch.equal(res.attributions.flatten(1), w[target])
    big = attribute_full("boundary_ig", model, x, target, epsilons=GRID, cw="off", ig_steps=25)
    assert torch.allclose(big.extras["boundary_distance"], d)  # same seed -> same search
    # x' from the distance: BIG = (x - x') . w_c, so sum(BIG) = f_c(x) - f_c(x') (completeness, exact)
    xp_logit = model(x).gather(1, target.view(-1, 1)).squeeze(1) - big.attributions.flatten(1).sum(1)
    res2 = boundary_search(model, x, SearchConfig(epsilons=GRID, cw="off"), micro_batch=64, seed=0)
    assert torch.allclose(xp_logit, model(res2.boundary).gather(1, target.view(-1, 1)).squeeze(1), atol=1e-5)
    assert torch.allclose(big.attributions, (x - res2.boundary) * w[target].view_as(x), atol=1e-6)


def test_boundary_point_is_on_the_boundary() -> None:
    """x' is misclassified, ties the top two logits, and is near the analytic projection."""
    model, x, _ = linear_case(seed=3)
    cfg = SearchConfig(epsilons=GRID, cw="off", bisection_steps=20)
    res = boundary_search(model, x, cfg, micro_batch=64, seed=0)
    logits = model(res.boundary)
    assert torch.all(logits.argmax(1) != res.predicted)  # x' is across the boundary...
    top2 = logits.topk(2, dim=1).values
    assert torch.all(top2[:, 0] - top2[:, 1] < 1e-4)  # ...and on it: a tie up to bisection precision
    _, proj = analytic_boundary(model, x)
    assert torch.allclose(res.boundary, proj, atol=0.03)


def test_early_exit_counts_gradient_evaluations() -> None:
    """Solved images leave the batch: evals = steps x levels run; easy < hard; fixed grid costs more."""
    model, x, _ = linear_case(n=8, seed=1)
    d_true, _ = analytic_boundary(model, x)
    cfg = SearchConfig(epsilons=GRID, steps=10, cw="off", skip_factor=0)
    res = boundary_search(model, x, cfg, micro_batch=64, seed=0)
    assert bool(res.success.all())
    # an image leaves the batch after the first successful epsilon: steps x (level index + 1)
    level = (res.eps_used.view(-1, 1) - torch.tensor(GRID).view(1, -1)).abs().argmin(1)
    assert torch.equal(res.gradient_evals, 10 * (level + 1))
    assert torch.all(torch.tensor(GRID)[level] >= d_true * 0.999)  # PGD cannot succeed below the distance
    easy, hard = int(d_true.argmin()), int(d_true.argmax())
    assert res.gradient_evals[easy] < res.gradient_evals[hard]
    full = boundary_search(model, x, SearchConfig(epsilons=GRID, steps=10, cw="off", early_exit=False, skip_factor=0),
                           micro_batch=64, seed=0)
    assert torch.all(full.gradient_evals == 10 * len(GRID))
    assert int(full.gradient_evals.sum()) > int(res.gradient_evals.sum())


def test_level_skipping_is_exact_on_linear_models() -> None:
    """The DeepFool estimate is exact on linear models, so skipping changes only the cost."""
    model, x, _ = linear_case(n=8, k=4, seed=5)
    d_true, _ = analytic_boundary(model, x)
    plain = boundary_search(model, x, SearchConfig(epsilons=GRID, steps=10, cw="off", skip_factor=0),
                            micro_batch=64, seed=0)
    skip = boundary_search(model, x, SearchConfig(epsilons=GRID, steps=10, cw="off", skip_factor=0.5),
                           micro_batch=64, seed=0)
    # the first-order estimate over all competitors is the exact distance for a linear model
    assert torch.allclose(skip.estimate, d_true, rtol=1e-4)
    assert torch.isnan(plain.estimate).all() and torch.all(plain.first_level == 0)
    grid = torch.tensor(GRID)
    assert torch.all(grid[skip.first_level - 1][skip.first_level > 0] < 0.5 * d_true[skip.first_level > 0])
    assert torch.all(grid[skip.first_level] >= 0.5 * d_true * (1 - 1e-4))
    # skipped radii cannot succeed on a linear model: same points, fewer gradient evaluations
    assert torch.equal(skip.boundary, plain.boundary) and torch.equal(skip.eps_used, plain.eps_used)
    assert torch.equal(skip.gradient_evals, plain.gradient_evals - 10 * skip.first_level + 3)
    assert int(skip.gradient_evals.sum()) < int(plain.gradient_evals.sum())


def test_failed_images_are_invalid_and_nan() -> None:
    """Images the grid cannot solve are valid=False, NaN distance, NaN rows via attribute()."""
    model, x, _ = linear_case(n=6, seed=0)
    d_true, _ = analytic_boundary(model, x)
    eps = float(d_true.sort().values[2]) * 0.8  # only the two closest images can be solved
    res = attribute_full("boundary_ig", model, x, model(x).argmax(1), epsilons=(eps,), cw="off")
    solvable = d_true < eps
    assert torch.equal(res.valid, solvable)
    assert torch.equal(res.extras["success"].bool(), solvable)
    assert torch.isnan(res.extras["boundary_distance"][~solvable]).all()
    assert torch.isnan(res.extras["eps_used"][~solvable]).all()
    attr = attribute("boundary_gradient", model, x, model(x).argmax(1), epsilons=(eps,), cw="off")
    assert torch.isnan(attr[~solvable]).all()
    assert torch.isfinite(attr[solvable]).all()


def test_carlini_wagner_rescues_pgd_failures() -> None:
    """CW finds points PGD missed, never closer than the true boundary and within 2 % of it."""
    model, x, _ = linear_case(n=4, seed=2)
    d_true, _ = analytic_boundary(model, x)
    cfg = SearchConfig(epsilons=(1e-4,), steps=5, cw="failed", cw_steps=100, cw_search_steps=5)
    res = boundary_search(model, x, cfg, micro_batch=64, seed=0)
    assert bool(res.success.all())
    assert torch.all(res.found_by == 2)
    assert torch.isnan(res.eps_used).all()
    assert torch.all(res.distance >= d_true * (1 - 1e-3))
    assert torch.all(res.distance <= d_true * 1.02), (res.distance, d_true)
    assert torch.all(res.gradient_evals == 5 + 5 * 100)


def test_cw_all_never_increases_distance() -> None:
    """cw='all' keeps the closer of the PGD and CW points."""
    model = tiny_cnn(1)
    x = torch.rand(5, 3, 8, 8)
    base = boundary_search(model, x, SearchConfig(epsilons=GRID, steps=10, cw="off"), micro_batch=64, seed=0)
    both = boundary_search(model, x, SearchConfig(epsilons=GRID, steps=10, cw="all", cw_steps=30,
                                                  cw_search_steps=3), micro_batch=64, seed=0)
    ok = base.success
    assert bool(ok.any())
    assert torch.all(both.success[ok])
    assert torch.all(both.distance[ok] <= base.distance[ok] + 1e-6)


@pytest.mark.parametrize("loss", ["margin", "ce"])
def test_conv_model_boundary_points_cross(loss: str) -> None:
    """On a conv net, x' is misclassified, in [0, 1], and the distance record matches it."""
    model = tiny_cnn(0)
    x = torch.rand(6, 3, 8, 8)
    res = boundary_search(model, x, SearchConfig(epsilons=GRID, steps=10, loss=loss, cw="off"), micro_batch=4,
                          seed=0)
    assert bool(res.success.any())
    s = res.success
    assert torch.all(model(res.boundary[s]).argmax(1) != res.predicted[s])
    assert torch.all((res.boundary >= 0) & (res.boundary <= 1))
    assert torch.allclose(res.distance[s], (res.boundary[s] - x[s]).flatten(1).norm(dim=1))


@pytest.mark.parametrize("method", ["boundary_ig", "boundary_gradient"])
def test_micro_batch_and_batch_invariance(method: str) -> None:
    """Attributions and records do not depend on micro_batch."""
    model = tiny_cnn(2)
    x = torch.rand(5, 3, 8, 8)
    target = model(x).argmax(1)
    kw = dict(epsilons=GRID, attack_steps=8, cw="off", ig_steps=5) if method == "boundary_ig" else \
        dict(epsilons=GRID, attack_steps=8, cw="off")
    ref = attribute_full(method, model, x, target, micro_batch=64, **kw)
    for mb in (1, 3):
        other = attribute_full(method, model, x, target, micro_batch=mb, **kw)
        assert torch.equal(other.valid, ref.valid)
        assert torch.allclose(other.attributions, ref.attributions, atol=1e-5)
        for key in ("boundary_distance", "gradient_evals", "eps_used"):
            assert torch.allclose(other.extras[key], ref.extras[key], atol=1e-6, equal_nan=True)


def test_same_seed_same_result_other_seed_other_start() -> None:
    """Same seed gives identical points; another seed gives other random starts."""
    model = tiny_cnn(3)
    x = torch.rand(4, 3, 8, 8)
    cfg = SearchConfig(epsilons=GRID, steps=8, cw="off")
    a = boundary_search(model, x, cfg, micro_batch=64, seed=7)
    b = boundary_search(model, x, cfg, micro_batch=64, seed=7)
    c = boundary_search(model, x, cfg, micro_batch=64, seed=8)
    assert torch.equal(a.boundary, b.boundary)
    assert not torch.equal(a.boundary[a.success], c.boundary[a.success])


def test_path_ig_matches_slow_reference() -> None:
    """Batched path IG equals a per-image, per-alpha loop for any micro-batch."""
    model = tiny_cnn(4)
    x, base = torch.rand(3, 3, 8, 8), torch.rand(3, 3, 8, 8)
    target = torch.tensor([0, 2, 1])
    steps = 7
    slow = torch.zeros_like(x)
    for i in range(3):
        for a in torch.linspace(0, 1, steps):
            p = (base[i] + a * (x[i] - base[i])).unsqueeze(0).requires_grad_(True)
            (g,) = torch.autograd.grad(model(p)[0, target[i]], p)
            slow[i] += g[0]
    slow = slow / steps * (x - base)
    for mb in (1, 4, 100):
        fast = path_integrated_gradients(model, x, base, target, steps, mb)
        assert torch.allclose(fast, slow, atol=1e-6)


def test_info_defaults_passes_and_units() -> None:
    """Defaults are the reference grid in pixel units; passes() is the worst case."""
    info = get_info("boundary_ig")
    assert info.family == "boundary" and info.stochastic
    assert info.defaults["epsilons"] == PIXEL_EPSILONS
    assert PIXEL_EPSILONS[-1] == pytest.approx(1.1 * 0.226) and len(REFERENCE_EPSILONS) == 7
    # 1 prediction + 9 competitor gradients + 7 levels x (40 + 1) + CW 5 x 100 + 10 bisection + 25 IG
    assert info.passes(dict(info.defaults)) == 1 + 9 + 7 * 41 + 500 + 10 + 25
    bg = get_info("boundary_gradient")
    assert bg.passes({**bg.defaults, "cw": "off", "skip_factor": 0}) == 1 + 7 * 41 + 10 + 1


@pytest.mark.parametrize("params, word", [
    (dict(epsilons=(0.5, 0.1)), "epsilons"),
    (dict(epsilons=(-1.0,)), "epsilons"),
    (dict(loss="nan"), "loss"),
    (dict(cw="sometimes"), "cw"),
    (dict(attack_steps=0), "steps"),
    (dict(skip_factor=-1.0), "skip_factor"),
    (dict(step_scale="big"), "step_scale"),
    (dict(ig_steps=1), "ig_steps"),
])
def test_bad_parameters_raise_one_line(params: dict, word: str) -> None:
    """Bad parameters raise a one-line BamError naming the parameter."""
    model, x, _ = linear_case(n=2)
    with pytest.raises(BamError) as err:
        attribute("boundary_ig", model, x, 0, **params)
    assert word in str(err.value) and "\n" not in str(err.value)


def test_empty_batch_and_single_logit_model() -> None:
    """An empty batch returns empty records; a one-logit model is refused."""
    model, _, _ = linear_case()
    empty = torch.zeros(0, 3, 8, 8)
    res = boundary_search(model, empty, SearchConfig(epsilons=GRID), micro_batch=4, seed=0)
    assert res.boundary.shape == (0, 3, 8, 8) and res.success.numel() == 0
    one = Linear(torch.randn(1, 3 * 8 * 8), torch.zeros(1))
    with pytest.raises(BamError, match="2 logits"):
        boundary_search(one, torch.rand(2, 3, 8, 8), SearchConfig(epsilons=GRID), micro_batch=4, seed=0)

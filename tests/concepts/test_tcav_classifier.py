"""The CAV classifier: the exact optimum of SGDClassifier's objective (hinge + L2 alpha), batched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bam.concepts._classifier import _project, best_bias, fit_svm, gram


def _objective(w: np.ndarray, b: float, x: np.ndarray, y: np.ndarray, alpha: float) -> float:
    return float(np.maximum(0.0, 1.0 - y * (x @ w + b)).mean() + alpha / 2 * w @ w)


def _blobs(n: int, d: int, shift: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n, d, generator=g, dtype=torch.float64)
    x[:n, 0] += shift
    return x, torch.cat([torch.ones(n), -torch.ones(n)]).double()


def test_projection_is_the_nearest_feasible_point() -> None:
    g = torch.Generator().manual_seed(0)
    v = torch.randn(4, 30, generator=g, dtype=torch.float64) * 2
    y = torch.where(torch.rand(4, 30, generator=g) < 0.5, 1.0, -1.0).double()
    c = torch.tensor([0.3, 0.7, 1.0, 5.0], dtype=torch.float64)
    a = _project(v, y, c)
    assert (a >= 0).all() and (a <= c[:, None] + 1e-15).all()
    assert (a * y).sum(1).abs().max() < 1e-12
    # optimality: no feasible direction (move mass between two coordinates of equal/opposite label) helps
    for r in range(4):
        for _ in range(200):
            i, j = torch.randint(0, 30, (2,), generator=g).tolist()
            step = 1e-3
            b = a[r].clone()
            b[i] += step * y[r, i]
            b[j] -= step * y[r, j]
            if i == j or (b < 0).any() or (b > c[r]).any():
                continue
            assert (b - v[r]).norm() >= (a[r] - v[r]).norm() - 1e-12


def test_bias_minimises_the_hinge_loss() -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.randn(3, 25, generator=g, dtype=torch.float64)
    y = torch.where(torch.rand(3, 25, generator=g) < 0.5, 1.0, -1.0).double()
    b = best_bias(s, y)
    grid = torch.linspace(-6, 6, 24001, dtype=torch.float64)
    for r in range(3):
        loss = torch.clamp(1 - y[r, None] * (s[r, None] + grid[:, None]), min=0).sum(1)
        at_b = torch.clamp(1 - y[r] * (s[r] + b[r]), min=0).sum()
        assert at_b <= loss.min() + 1e-9


@pytest.mark.parametrize(("shift", "alpha"), [(4.0, 0.1), (0.5, 0.1), (4.0, 0.001), (1.0, 1.0)])
def test_svm_reaches_the_optimum_of_the_primal(shift: float, alpha: float) -> None:
    """Against a slow reference (scipy's SLSQP on the primal QP) where scipy is installed, and
    always against random perturbations of the solution (a convex function: none may be lower)."""
    x, y = _blobs(30, 3, shift, seed=2)
    fit = fit_svm(gram(x)[None], y[None], alpha)
    w = (fit.beta[0] @ x).numpy()
    b = float(fit.bias[0])
    xn, yn = x.numpy(), y.numpy()
    ours = _objective(w, b, xn, yn, alpha)
    rng = np.random.default_rng(0)
    for _ in range(300):
        dw, db = rng.normal(0, 1e-3, 3), rng.normal(0, 1e-3)
        assert ours <= _objective(w + dw, b + db, xn, yn, alpha) + 1e-12
    assert float(fit.gap[0]) < 1e-3
    optimize = pytest.importorskip("scipy.optimize")
    n = len(yn)

    def f(z: np.ndarray) -> float:
        return float(alpha / 2 * z[:3] @ z[:3] + z[4:].mean())

    cons = [{"type": "ineq", "fun": lambda z: yn * (xn @ z[:3] + z[3]) - 1 + z[4:]},
            {"type": "ineq", "fun": lambda z: z[4:]}]
    ref = optimize.minimize(f, np.concatenate([np.zeros(4), np.ones(n)]), constraints=cons, method="SLSQP",
                            options={"maxiter": 2000, "ftol": 1e-14})
    assert ours <= ref.fun + 1e-8
    np.testing.assert_allclose(w, ref.x[:3], atol=1e-4 * max(1.0, float(np.abs(w).max())))


def test_batched_runs_equal_single_runs() -> None:
    probs = [_blobs(20, 5, s, seed) for s, seed in [(3.0, 3), (0.2, 4), (1.0, 5)]]
    k = torch.stack([gram(x) for x, _ in probs])
    y = torch.stack([yy for _, yy in probs])
    both = fit_svm(k, y, 0.1)
    for i, (x, yy) in enumerate(probs):
        one = fit_svm(gram(x)[None], yy[None], 0.1)
        w1, w2 = one.beta[0] @ x, both.beta[i] @ x
        assert torch.nn.functional.cosine_similarity(w1, w2, dim=0) > 1 - 1e-9
        assert float((w1 - w2).norm() / w1.norm()) < 1e-5


def test_gram_is_accumulated_in_double() -> None:
    x = torch.randn(7, 1000, dtype=torch.float32)
    np.testing.assert_allclose(gram(x, chunk_elems=50).numpy(), (x.double() @ x.double().T).numpy(), rtol=1e-12)

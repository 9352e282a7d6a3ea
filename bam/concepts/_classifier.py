"""The CAV classifier: a linear SVM (hinge loss + L2 ``alpha``), solved exactly and deterministically.

TCAV's ``cav.py`` trains ``sklearn.linear_model.SGDClassifier(alpha=alpha)``: hinge loss, L2
penalty, unpenalised intercept, i.e. it minimises ``mean_i hinge(y_i (w.x_i + b)) + alpha/2 |w|^2``
by shuffled SGD (so two runs differ), on a random 67 % of the data, scoring the other 33 %.
Here the same objective is solved to a certified optimum: it is the C-SVM with ``C = 1 / (alpha n)``,
whose dual ``max 1'a - a'Qa/2, 0 <= a <= C, y'a = 0`` (``Q = yy' * K``, ``K`` the Gram matrix)
has n variables however wide the activations are. Accelerated projected gradient (FISTA, Beck &
Teboulle 2009) runs in float64, batched over the runs of a layer, until the duality gap is below
``tol`` relative to the objective; the intercept is then the exact minimiser of the hinge term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: Part of every CAV cache key: change it when the solver changes.
SOLVER = "svm-hinge-l2-dual-ipm-v1"
TOL = 1e-6
MAX_ITER = 200
_MU_FLOOR = 1e-14


@dataclass(frozen=True)
class SvmFit:
    """Dual solutions of R problems: ``beta = a * y`` [R, n] (w = sum_i beta_i x_i), intercepts [R]."""

    beta: Tensor
    bias: Tensor
    gap: Tensor
    iterations: int


def gram(x: Tensor, chunk_elems: int = 1 << 24) -> Tensor:
    """``x @ x.T`` in float64 for x [N, D] (any float dtype), accumulated over column chunks."""
    n, d = x.shape
    out = torch.zeros(n, n, dtype=torch.float64, device=x.device)
    step = max(1, chunk_elems // max(n, 1))
    for j in range(0, d, step):
        xc = x[:, j:j + step].double()
        out += xc @ xc.T
    return out


def _project(v: Tensor, y: Tensor, c: Tensor) -> Tensor:
    """Exact Euclidean projection of v [R, n] onto {0 <= a <= c, y'a = 0} in O(n log n).

    a(mu) = clip(v - mu y, 0, c); h(mu) = y'a(mu) falls from c * n_pos to -c * n_neg with slope
    minus the number of unclipped terms; term i is unclipped between its kinks ``e_i`` and
    ``e_i + c`` (e_i = y_i v_i - c [y_i > 0]). h at the sorted kinks is a cumulative sum; the root
    lies on the segment where h changes sign.
    """
    cc = c[:, None]
    enter = y * v - cc * (y > 0)
    kinks, order = torch.sort(torch.cat([enter, enter + cc], 1), dim=1)
    events = torch.cat([torch.ones_like(v), -torch.ones_like(v)], 1).gather(1, order)
    active = torch.cumsum(events, 1)  # unclipped terms between kink j and kink j + 1
    drops = active[:, :-1] * torch.diff(kinks, dim=1)
    h = cc * (y > 0).sum(1, keepdim=True) - torch.cat([torch.zeros_like(cc), torch.cumsum(drops, 1)], 1)
    j = ((h >= 0).sum(1, keepdim=True) - 1).clamp(0, kinks.shape[1] - 2)
    k0, h0, n0 = kinks.gather(1, j), h.gather(1, j), active.gather(1, j)
    mu = torch.where(n0 > 0, k0 + h0 / n0.clamp(min=1.0), k0)
    return torch.minimum(torch.clamp(v - mu * y, min=0.0), cc)


def _hinge_sum(s: Tensor, y: Tensor, b: Tensor) -> Tensor:
    """sum_i max(0, 1 - y_i (s_i + b)) for b [R, m] candidates -> [R, m]."""
    return torch.clamp(1.0 - y[:, None, :] * (s[:, None, :] + b[:, :, None]), min=0.0).sum(2)


def best_bias(s: Tensor, y: Tensor) -> Tensor:
    """The intercept minimising the hinge loss of scores s [R, n] (midpoint of the minimisers)."""
    cand = y - s  # the loss is piecewise linear in b with kinks where y_i (s_i + b) = 1
    loss = _hinge_sum(s, y, cand)
    best = loss.amin(1, keepdim=True)
    on = loss <= best + 1e-12 * best.abs().clamp(min=1.0)
    lo = torch.where(on, cand, torch.full_like(cand, float("inf"))).amin(1)
    hi = torch.where(on, cand, torch.full_like(cand, -float("inf"))).amax(1)
    return (lo + hi) / 2


def _certificate(a: Tensor, k: Tensor, y: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """(certified relative error bound on w, intercept) at a dual-feasible a.

    The C-SVM primal P(w) (intercept minimised out) is 1-strongly convex and P(w) - P(w*) <=
    P(w) - D(a) = gap, so |w - w*| <= sqrt(2 gap): the bound returned is sqrt(2 gap) / |w|.
    """
    beta = a * y
    s = torch.einsum("rij,rj->ri", k, beta)
    quad = (beta * s).sum(1)
    b = best_bias(s, y)
    primal = 0.5 * quad + c * torch.clamp(1.0 - y * (s + b[:, None]), min=0.0).sum(1)
    dual = a.sum(1) - 0.5 * quad
    gap = torch.clamp(primal - dual, min=0.0)
    return torch.sqrt(2.0 * gap) / torch.sqrt(quad).clamp(min=1e-300), b


@dataclass(frozen=True)
class _Newton:
    """One interior-point iterate's linearised KKT system (factorised once, solved twice)."""

    chol: Tensor  # Cholesky factor of M = Q + diag(z / a + s / g)
    y: Tensor
    r_d: Tensor  # dual residual Q a - 1 - z + s + nu y
    r_p: Tensor  # primal residual y'a
    a: Tensor
    g: Tensor  # c - a
    z: Tensor  # multipliers of a >= 0
    s: Tensor  # multipliers of a <= c

    def solve(self, r_z: Tensor, r_s: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(da, dz, ds, dnu) for complementarity targets z da + a dz = r_z, g ds - s da = r_s."""
        rhs = -self.r_d + r_z / self.a - r_s / self.g
        u = torch.cholesky_solve(rhs[..., None], self.chol)[..., 0]
        w = torch.cholesky_solve(self.y[..., None], self.chol)[..., 0]
        dnu = ((self.y * u).sum(1) + self.r_p) / (self.y * w).sum(1)
        da = u - dnu[:, None] * w  # [[M, y], [y', 0]] [da; dnu] = [rhs; -r_p]
        return da, (r_z - self.z * da) / self.a, (r_s + self.s * da) / self.g, dnu


def _max_step(x: Tensor, dx: Tensor) -> Tensor:
    """Largest t in (0, 1] with x + t dx >= 0 for every row (x > 0)."""
    ratio = torch.where(dx < 0, -x / dx.clamp(max=-1e-300), torch.full_like(x, float("inf")))
    return ratio.amin(1).clamp(max=1.0)


def fit_svm(k: Tensor, y: Tensor, alpha: float, tol: float = TOL, max_iter: int = MAX_ITER) -> SvmFit:
    """Solve R linear SVMs at once from their Gram matrices k [R, n, n] and labels y [R, n] in {-1, +1}.

    The objective is ``mean_i hinge(y_i (w.x_i + b)) + alpha/2 |w|^2`` (SGDClassifier's). The dual
    QP is solved by a primal-dual interior-point method with Mehrotra's predictor-corrector
    (Nocedal & Wright 2006, §16.6), batched; it stops when the certified relative error of every w
    (:func:`_certificate`, at the projection of the iterate onto the feasible set) is below ``tol``
    or the duality measure has fallen by ``_MU_FLOOR`` (past that, rounding in the primal-dual gap
    dominates the certificate, which is then reported as it is).
    """
    k, y = k.double(), y.double()
    r, n, _ = k.shape
    c = 1.0 / (alpha * n)
    q = y[:, :, None] * k * y[:, None, :]
    jitter = 1e-12 * torch.diagonal(q, dim1=1, dim2=2).mean(1).clamp(min=1e-300)[:, None]
    a = torch.full((r, n), c / 2, dtype=torch.float64, device=k.device)
    z, s = torch.ones_like(a), torch.ones_like(a)
    nu = torch.zeros(r, dtype=torch.float64, device=k.device)
    cc = torch.full((r,), c, dtype=torch.float64, device=k.device)
    done = torch.zeros(r, dtype=torch.bool, device=k.device)
    mu0 = torch.full((r,), c / 2, dtype=torch.float64, device=k.device)  # (a z + g s) / 2n at the start
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is reported)
        g = c - a
        r_d = torch.einsum("rij,rj->ri", q, a) - 1.0 - z + s + nu[:, None] * y
        r_p = (y * a).sum(1)
        mu = ((a * z).sum(1) + (g * s).sum(1)) / (2 * n)
        m = q + torch.diag_embed(z / a + s / g + jitter)
        newton = _Newton(torch.linalg.cholesky_ex(m)[0], y, r_d, r_p, a, g, z, s)
        da, dz, ds, _ = newton.solve(-a * z, -g * s)  # predictor (affine scaling)
        t = torch.stack([_max_step(a, da), _max_step(g, -da), _max_step(z, dz), _max_step(s, ds)]).amin(0)
        mu_aff = (((a + t[:, None] * da) * (z + t[:, None] * dz)).sum(1)
                  + ((g - t[:, None] * da) * (s + t[:, None] * ds)).sum(1)) / (2 * n)
        sigma = (mu_aff / mu.clamp(min=1e-300)).clamp(max=1.0) ** 3
        target = (sigma * mu)[:, None]
        da, dz, ds, dnu = newton.solve(target - a * z - da * dz, target - g * s + da * ds)  # corrector
        t = 0.99 * torch.stack([_max_step(a, da), _max_step(g, -da), _max_step(z, dz), _max_step(s, ds)]).amin(0)
        t = torch.where(done, torch.zeros_like(t), t.clamp(max=1.0))[:, None]
        a, z, s, nu = a + t * da, z + t * dz, s + t * ds, nu + t[:, 0] * dnu
        a = torch.minimum(torch.maximum(a, torch.full_like(a, 1e-300)), torch.full_like(a, c * (1 - 1e-16)))
        if bool((mu <= 1e-8 * mu0).any()):  # certify once the iterates are close
            err = _certificate(_project(a, y, cc), k, y, cc)[0]
            done = done | (err <= tol) | (mu <= _MU_FLOOR * mu0)  # the floor: rounding limits the certificate
        if bool(done.all()):
            break
    feasible = _project(a, y, cc)
    err, b = _certificate(feasible, k, y, cc)
    return SvmFit(beta=feasible * y, bias=b, gap=err, iterations=it)

"""Building blocks of the invertible residual network (i-ResNet; Behrmann et al., ICML 2019).

* :class:`SpectralConv2d`: a convolution rescaled so that the norm of the *convolution operator*
  (on the block's fixed input size, padding included) is at most ``coeff``. The norm is estimated
  by power iteration on the operator itself (conv / transposed conv), not on the reshaped kernel
  matrix, which is not a bound for convolutions (Gouk et al. 2018; Behrmann et al. 2019, §3).
* :class:`InvertibleBlock`: ``y = x + g(x)`` with ``Lip(g) < 1``; inverse by the Banach fixed
  point iteration ``x <- y - g(x)``, run per image until the relative update is below ``tol``.
* :class:`ActNorm2d`: per-channel affine ``(x + b) * exp(s)`` with data-dependent initialisation
  (Kingma & Dhariwal 2018). The "initialised" flag is a *buffer*, so it survives save/load.
* :func:`squeeze` / :func:`unsqueeze`: space-to-depth 2x2 (bijective, channels x4), either a
  permutation of the pixels (``"pixel"``) or the orthonormal 2x2 Haar transform of each block
  (``"haar"``: mean, column, row and diagonal differences; Mallat 1989). Both are orthogonal
  bijections: the inverse is the transpose.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bam.errors import choices_error

ACTIVATIONS = ("elu", "lipswish")
SQUEEZES = ("haar", "pixel")


def _unit(t: Tensor) -> Tensor:
    """``t`` scaled to unit L2 norm (over all elements)."""
    return t / t.norm().clamp_min(1e-12)


def conv_operator_norm(weight: Tensor, in_shape: tuple[int, int, int], padding: int, n_iter: int = 200,
                       u: Tensor | None = None, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Largest singular value of ``x -> conv2d(x, weight, padding=padding)`` on inputs ``in_shape``.

    Power iteration on the operator ``W^T W`` (conv followed by its adjoint, the transposed conv).
    Returns ``(sigma, u)`` with ``u`` the final right singular vector estimate [1, C, H, W].
    """
    with torch.no_grad():
        if u is None:
            u = torch.randn((1, *in_shape), generator=generator, dtype=weight.dtype).to(weight.device)
        u = _unit(u)
        for _ in range(n_iter):
            v = _unit(F.conv2d(u, weight, padding=padding))
            u = _unit(F.conv_transpose2d(v, weight, padding=padding))
        sigma = F.conv2d(u, weight, padding=padding).norm()
    return sigma, u


class SpectralConv2d(nn.Module):
    """Stride-1 conv whose operator norm is rescaled to at most ``coeff``: ``W / max(1, sigma / coeff)``.

    ``sigma = ||conv(u, W)||`` with ``u`` (a buffer) the power-iteration estimate of the top right
    singular vector. In training mode with autograd on, ``n_power_iterations`` steps refine ``u``
    before each forward (Miyato et al. 2018); otherwise ``u`` is fixed, so the effective weight is a deterministic
    function of the state dict and a reloaded model is identical.
    """

    u: Tensor  # persistent buffer [1, in_channels, in_hw, in_hw]

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, in_hw: int, coeff: float,
                 n_power_iterations: int = 1, init_iterations: int = 20) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.padding, self.in_hw = kernel_size, kernel_size // 2, in_hw
        self.coeff = float(coeff)
        self.n_power_iterations = int(n_power_iterations)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # the torch Conv2d default
        bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        nn.init.uniform_(self.bias, -bound, bound)
        _, u = conv_operator_norm(self.weight, (in_channels, in_hw, in_hw), self.padding, init_iterations)
        self.register_buffer("u", u)

    def refine(self, max_iter: int = 300, tol: float = 1e-4) -> int:
        """Power-iterate ``u`` until ``sigma`` changes by less than ``tol`` (relative) per step.

        ``u`` is only written when the first step already changes ``sigma`` by more than ``tol``, so
        refining a refined layer is a no-op and a reloaded model stays bit-identical. Returns the
        number of steps taken (0: already converged)."""
        shape = (self.in_channels, self.in_hw, self.in_hw)
        with torch.no_grad():
            u = self.u
            prev = float(F.conv2d(u, self.weight, padding=self.padding).norm())
            for step in range(1, max_iter + 1):
                sigma, u = conv_operator_norm(self.weight, shape, self.padding, 1, u=u)
                converged = abs(float(sigma) - prev) <= tol * max(prev, 1e-12)
                if converged and step == 1:
                    return 0
                prev = float(sigma)
                if converged:
                    break
            self.u.copy_(u)
        return step

    def train(self, mode: bool = True) -> SpectralConv2d:
        """Switching to eval mode refines ``u`` to convergence (:meth:`refine`), so the weights an
        optimizer step left after the last training power iteration are bounded correctly."""
        if not mode:
            self.refine()
        return super().train(mode)

    def sigma(self) -> Tensor:
        """Current operator-norm estimate ``||conv(u, W)||`` (differentiable in ``W``)."""
        return F.conv2d(self.u.clone(), self.weight, padding=self.padding).norm()

    def effective_weight(self) -> Tensor:
        """The rescaled kernel ``W / max(1, sigma / coeff)`` used by :meth:`forward`."""
        if self.training and self.n_power_iterations > 0 and torch.is_grad_enabled():
            _, u = conv_operator_norm(self.weight, (self.in_channels, self.in_hw, self.in_hw), self.padding,
                                      self.n_power_iterations, u=self.u)
            self.u.copy_(u)
        factor = torch.clamp(self.sigma() / self.coeff, min=1.0)
        return self.weight / factor

    def forward(self, x: Tensor) -> Tensor:
        """Convolution with the rescaled kernel (stride 1, 'same' padding)."""
        return F.conv2d(x, self.effective_weight(), self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, in_hw={self.in_hw}, "
                f"coeff={self.coeff}")


class LipSwish(nn.Module):
    """``x * sigmoid(x) / 1.1``: a smooth 1-Lipschitz nonlinearity (Chen et al. 2019, Residual Flows)."""

    def forward(self, x: Tensor) -> Tensor:
        """Apply LipSwish elementwise."""
        return x * torch.sigmoid(x) / 1.1


def make_activation(name: str) -> nn.Module:
    """A fresh 1-Lipschitz activation module (one per call site)."""
    if name == "elu":
        return nn.ELU()
    if name == "lipswish":
        return LipSwish()
    raise choices_error("activation", name, ACTIVATIONS)


class InvertibleBlock(nn.Module):
    """``y = x + g(x)``, g = conv3x3 -> act -> conv1x1 -> act -> conv3x3, each conv norm <= coeff.

    ``Lip(g) <= coeff**3 < 1`` so the block is bi-Lipschitz and invertible (Behrmann et al. 2019,
    Theorem 1). :meth:`inverse` runs the fixed-point iteration per image until converged.
    """

    def __init__(self, channels: int, hidden: int, hw: int, coeff: float, activation: str = "elu",
                 n_power_iterations: int = 1) -> None:
        super().__init__()
        self.g = nn.Sequential(
            SpectralConv2d(channels, hidden, 3, hw, coeff, n_power_iterations),
            make_activation(activation),
            SpectralConv2d(hidden, hidden, 1, hw, coeff, n_power_iterations),
            make_activation(activation),
            SpectralConv2d(hidden, channels, 3, hw, coeff, n_power_iterations),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x + g(x)``."""
        return x + self.g(x)

    def inverse(self, y: Tensor, max_iter: int = 200, tol: float = 1e-6) -> Tensor:
        """Solve ``x + g(x) = y`` by ``x <- y - g(x)`` from ``x = y``; each image stops on its own once
        ``||x_new - x|| <= tol * ||x_new||`` (so results do not depend on the batch), or at ``max_iter``."""
        with torch.no_grad():
            x = y.clone()
            active = torch.arange(y.shape[0], device=y.device)
            for _ in range(max_iter):
                if active.numel() == 0:
                    break
                xa = x[active]
                new = y[active] - self.g(xa)
                delta = (new - xa).flatten(1).norm(dim=1)
                x[active] = new
                done = delta <= tol * new.flatten(1).norm(dim=1).clamp_min(1e-12)
                active = active[~done]
        return x

    def lipschitz_bound(self, n_iter: int = 200) -> float:
        """Upper bound on ``Lip(g)``: product of the effective conv operator norms, each by a fresh,
        long power iteration (independent of the stored ``u``). Activations are 1-Lipschitz."""
        bound = 1.0
        gen = torch.Generator().manual_seed(12345)
        for m in self.g:
            if isinstance(m, SpectralConv2d):
                w = m.weight.detach() / torch.clamp(m.sigma().detach() / m.coeff, min=1.0)
                sigma, _ = conv_operator_norm(w, (m.in_channels, m.in_hw, m.in_hw), m.padding, n_iter, generator=gen)
                bound *= float(sigma)
        return bound


class ActNorm2d(nn.Module):
    """Per-channel affine ``(x + bias) * exp(logscale)``, initialised from the first training batch
    to zero mean / unit variance per channel (Kingma & Dhariwal 2018, Glow). ``initialized`` is a
    persistent buffer so a reloaded model never re-initialises (the i-ResNet reference lost it)."""

    initialized: Tensor  # persistent bool buffer []

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.logscale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, x: Tensor) -> Tensor:
        """Apply the affine map (data-initialising it on the first training-mode call)."""
        if self.training and not bool(self.initialized):
            with torch.no_grad():
                mean = x.mean(dim=(0, 2, 3), keepdim=True)
                std = x.std(dim=(0, 2, 3), keepdim=True)
                self.bias.copy_(-mean)
                self.logscale.copy_(-torch.log(std + 1e-6))
                self.initialized.fill_(True)
        return (x + self.bias) * torch.exp(self.logscale)

    def inverse(self, y: Tensor) -> Tensor:
        """Exact inverse ``y * exp(-logscale) - bias``."""
        return y * torch.exp(-self.logscale) - self.bias


def _haar(a: Tensor, b: Tensor, c: Tensor, d: Tensor) -> Tensor:
    """The orthonormal 2x2 Haar transform of four equally shaped tensors, stacked on a new axis 2:
    (sum, column, row and diagonal differences) / 2. Its matrix is symmetric and orthogonal, so it
    is its own inverse."""
    s, t = a + b, a - b
    u, v = c + d, c - d
    return torch.stack([s + u, t + v, s - u, t - v], dim=2) * 0.5


def squeeze(x: Tensor, kind: str = "pixel") -> Tensor:
    """Space-to-depth 2x2: [N, C, H, W] -> [N, 4C, H/2, W/2] (``kind``: ``"pixel"`` or ``"haar"``).

    ``"pixel"`` permutes the entries (channel 4c + 2i + j holds pixel (i, j) of each block of
    channel c). ``"haar"`` maps each 2x2 block of channel c to channels 4c..4c+3 = (sum, column
    difference, row difference, diagonal difference) / 2: an orthogonal map, so the image-wide mean
    colour, which the residual blocks cannot remove, stays in one channel of four per stage.
    Computed with strided views and additions (a grouped convolution is ~10x slower on CPU).
    """
    if kind == "pixel":
        return F.pixel_unshuffle(x, 2)
    if kind == "haar":
        n, c, h, w = x.shape
        bands = _haar(x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2])
        return bands.reshape(n, 4 * c, h // 2, w // 2)
    raise choices_error("squeeze", kind, SQUEEZES)


def unsqueeze(z: Tensor, kind: str = "pixel") -> Tensor:
    """Inverse of :func:`squeeze` (the transpose: both kinds are orthogonal)."""
    if kind == "pixel":
        return F.pixel_shuffle(z, 2)
    if kind == "haar":
        n, c4, h, w = z.shape
        q = z.reshape(n, c4 // 4, 4, h, w)
        blocks = _haar(q[:, :, 0], q[:, :, 1], q[:, :, 2], q[:, :, 3])  # [N, C, 4, h, w]: a, b, c, d
        return F.pixel_shuffle(blocks.reshape(n, c4, h, w), 2)  # (a, b, c, d) -> (0,0), (0,1), (1,0), (1,1)
    raise choices_error("squeeze", kind, SQUEEZES)

"""DeepLIFT, Rescale rule (Shrikumar, Greenside, Kundaje, "Learning Important Features Through
Propagating Activation Differences", ICML 2017), black baseline (constant image ``baseline`` in
pixel space, 0 = black).

The images and their (shared, constant) baseline go through the model as one batch [x_1 .. x_n; x']
(n + 1 rows: one pass per image plus one per micro-batch). Forward hooks
on the non-linear modules replace their backward by the DeepLIFT multipliers, computed from the
differences Δ between each image row and the baseline row:

* ReLU and other element-wise activations (Rescale): m = Δy / Δx (the derivative where |Δx| < eps);
* MaxPool2d: each window's Δy = y − y' is split as max(y, y') − y' to the arg-max of x and
  y − max(y, y') to the arg-max of x', summed over overlapping windows, and divided by Δx.

Linear layers (convolutions, eval-mode batch norm, pooling by averaging, additions, resizing) keep
their gradients, which are their exact multipliers, so Σ attributions = f_c(x) − f_c(x')
(summation-to-delta) up to float error. The gap is recorded per image as ``deeplift_delta``.

Why not captum's ``DeepLift``: its multipliers are exact on simple nets but not on ResNets, where a
ReLU feeds a max-pool directly (captum's ReLU hook reads the gradient before the max-pool hook has
rewritten it) and the 3×3/2 max-pool windows overlap (``max_unpool`` overwrites instead of summing):
on an untrained ResNet-18 (ImageNet normalisation, black baseline) the summation-to-delta gap
reached 22 % of f(x) − f(x') in our check. The tests check parity
with captum where captum is exact, and completeness on a ResNet-18.

The model is audited first: every ReLU must be an ``nn.ReLU`` module (a functional ``F.relu`` cannot
be hooked and would silently fall back to the gradient) used exactly once per forward (one module
per call site, as SPEC §5 requires of DeepLIFT-safe models). Unsafe models are refused with a
one-line error; the method never degrades to gradients silently.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from bam.errors import BamError
from bam.methods._base import AttributionResult, MethodInfo, register_method
from bam.methods._batching import chunks, resolve_micro_batch
from bam.methods._relu_audit import require_relu_modules

SHRIKUMAR2017 = ("Shrikumar, Greenside, Kundaje. Learning Important Features Through Propagating Activation "
                 "Differences. ICML 2017")

#: Element-wise activations handled by the Rescale rule.
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.SiLU, nn.GELU)
#: Non-linear modules DeepLIFT-Rescale is not defined for here: refused rather than treated as linear.
UNSUPPORTED = (nn.MaxPool1d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
               nn.Softmax, nn.LogSoftmax)
EPS = 1e-10


def _split(t: Tensor) -> tuple[Tensor, Tensor]:
    """Rows [x_1 .. x_n; x'] -> (the n images, the shared baseline row)."""
    return t[:-1], t[-1:]


class _Rescale(torch.autograd.Function):
    """Output of an element-wise activation on [x; x']; backward = Rescale multipliers on the x rows."""

    @staticmethod
    def forward(ctx: Any, inp: Tensor, out: Tensor, module: nn.Module) -> Tensor:  # noqa: D102 - autograd API
        ctx.save_for_backward(inp, out)
        ctx.module = module
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # noqa: D102 - autograd API
        inp, out = ctx.saved_tensors
        (x, x_ref), (y, y_ref) = _split(inp), _split(out)
        dx = x - x_ref
        small = dx.abs() < EPS
        ratio = (y - y_ref).div_(dx)  # inf/nan where dx ~ 0: replaced below
        if isinstance(ctx.module, nn.ReLU):
            deriv = (x > 0).to(x.dtype)
        else:
            with torch.enable_grad():
                xi = x.detach().requires_grad_(True)
                (deriv,) = torch.autograd.grad(ctx.module.forward(xi).sum(), xi)  # no hooks
        result = torch.empty_like(grad)
        torch.mul(grad[:-1], torch.where(small, deriv, ratio), out=result[:-1])
        result[-1:].zero_()
        return result, None, None


class _MaxPoolRule(torch.autograd.Function):
    """Output of a MaxPool2d on [x; x']; backward = DeepLIFT max-pool multipliers on the x rows."""

    @staticmethod
    def forward(ctx: Any, inp: Tensor, out: Tensor, module: nn.MaxPool2d) -> Tensor:  # noqa: D102 - autograd API
        ctx.save_for_backward(inp, out)
        ctx.module = module
        return out.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # noqa: D102 - autograd API
        inp, out = ctx.saved_tensors
        m: nn.MaxPool2d = ctx.module
        k, st, pad, dil = (list(_pair(v)) for v in (m.kernel_size, m.stride or m.kernel_size, m.padding, m.dilation))
        (x, x_ref), (y, y_ref) = _split(inp), _split(out)
        n = x.shape[0]
        g = grad[:-1]
        y_max = torch.max(y, y_ref)
        _, idx = F.max_pool2d(inp, k, st, pad, dil, m.ceil_mode, return_indices=True)
        # Δ of each window: max(y, y') - y' to the arg-max of x, y - max(y, y') to the arg-max of x';
        # the max-pool backward scatters *and sums* over overlapping windows.
        weighted = torch.cat([g * (y_max - y_ref), g * (y - y_max)])
        sources = torch.cat([x, x_ref.expand_as(x)])
        indices = torch.cat([idx[:-1], idx[-1:].expand(n, *idx.shape[1:])])
        spread = torch.ops.aten.max_pool2d_with_indices_backward(weighted, sources, k, st, pad, dil, m.ceil_mode,
                                                                 indices)
        dx = x - x_ref
        small = dx.abs() < EPS
        mult = (spread[:n] + spread[n:]) / torch.where(small, torch.ones_like(dx), dx)
        if small.any():  # no difference flows through these inputs; keep the gradient there
            with torch.enable_grad():
                xi = x.detach().requires_grad_(True)
                (plain,) = torch.autograd.grad(m.forward(xi), xi, g)  # no hooks
            mult = torch.where(small, plain, mult)
        return torch.cat([mult, torch.zeros_like(x_ref)]), None, None


def _hook(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> Tensor:
    """Forward hook: route the module's output through its DeepLIFT rule (input detached from it)."""
    rule = _MaxPoolRule if isinstance(module, nn.MaxPool2d) else _Rescale
    return rule.apply(args[0], output.detach(), module)


@contextlib.contextmanager
def deeplift_rules(model: nn.Module) -> Iterator[None]:
    """Context in which the model's non-linear modules back-propagate DeepLIFT multipliers.

    In-place activations are switched to out-of-place for the duration (the rule needs their input).
    """
    bad = sorted({type(m).__name__ for m in model.modules() if isinstance(m, UNSUPPORTED)})
    if bad:
        raise BamError(f"method 'deeplift' cannot run on {type(model).__name__}: it has {', '.join(bad)} "
                       f"modules; accepted: ReLU-family activations, MaxPool2d and linear layers")
    inplace = [m for m in model.modules() if getattr(m, "inplace", False) and isinstance(m, ELEMENTWISE)]
    for m in inplace:
        m.inplace = False
    handles = [m.register_forward_hook(_hook) for m in model.modules() if isinstance(m, (*ELEMENTWISE, nn.MaxPool2d))]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for m in inplace:
            m.inplace = True


def deeplift_attributions(model: nn.Module, inputs: Tensor, baseline: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """(attributions, summation-to-delta gap) for one micro-batch; the model's rules must be active.

    ``baseline`` is one row [1, C, H, W] shared by all images: the batch is [x_1 .. x_n; x'].
    """
    n = inputs.shape[0]
    z = torch.cat([inputs, baseline]).detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(z)
        sel = out[:n].gather(1, target.view(-1, 1)).squeeze(1)
        (g,) = torch.autograd.grad(sel.sum(), z)
    attr = (inputs - baseline) * g[:n]
    gap = attr.flatten(1).sum(1) - (sel - out[n, target]).detach()
    return attr.detach(), gap


def _passes(params: Mapping[str, Any]) -> int:
    """One row per image (the baseline row is shared by a whole micro-batch)."""
    return 1


@register_method(MethodInfo(
    name="deeplift", title="DeepLIFT (Rescale)", paper=SHRIKUMAR2017, family="gradient",
    defaults={"baseline": 0.0}, passes=_passes,
    description="DeepLIFT Rescale rule (exact max-pool rule), black baseline; refuses reused or functional ReLUs.",
))
def deeplift(model: nn.Module, inputs: Tensor, target: Tensor, *, baseline: float = 0.0,
             micro_batch: int = 0) -> AttributionResult:
    """DeepLIFT-Rescale attributions of the target logit against a constant baseline image."""
    if isinstance(baseline, bool) or not isinstance(baseline, (int, float)):
        raise BamError(f"baseline={baseline!r} is invalid; accepted: a pixel value (0 = black image)")
    require_relu_modules(model, inputs, "deeplift", once=True)
    mb = max(1, resolve_micro_batch(model, inputs, micro_batch) - 1)  # + the shared baseline row
    attr = torch.empty_like(inputs)
    delta = torch.empty(inputs.shape[0], dtype=inputs.dtype, device=inputs.device)
    try:
        with deeplift_rules(model):
            for sl in chunks(inputs.shape[0], mb):
                x = inputs[sl]
                base = torch.full_like(x[:1], float(baseline))
                attr[sl], delta[sl] = deeplift_attributions(model, x, base, target[sl])
    except RuntimeError as exc:
        if "modified by an inplace operation" not in str(exc):
            raise
        raise BamError(f"method 'deeplift' cannot run on {type(model).__name__}: it modifies an activation in "
                       f"place; accepted: models without in-place ops on activations") from None
    return AttributionResult(attr, extras={"deeplift_delta": delta})

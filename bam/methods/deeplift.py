"""DeepLIFT, Rescale rule (Shrikumar, Greenside, Kundaje, "Learning Important Features Through
Propagating Activation Differences", ICML 2017), black baseline (the image of constant pixel value
``baseline``, 0 = black, in the space the method runs in: :func:`bam.methods._space.baseline_image`).

The baseline image x' goes through the model once (one row, no gradient) and a tape records the
input and output of every non-linear module call. The images then go through as they are (n rows:
one pass per image); their non-linear modules back-propagate the DeepLIFT multipliers, computed
from the differences Δ between each image row and the recorded baseline activations of the same call:

* ReLU and other element-wise activations (Rescale): m = Δy / Δx, the derivative where Δx = 0
  (ReLU: in closed form, :class:`_ReluRescale`; others: where |Δx| < eps);
* MaxPool2d: each window's Δy = y − y' is split as max(y, y') − y' to the arg-max of x and
  y − max(y, y') to the arg-max of x', summed over overlapping windows, and divided by Δx (the
  gradient where Δx = 0).

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
import functools
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

from bam.errors import BamError
from bam.methods._base import AttributionResult, MethodInfo, register_method
from bam.methods._batching import chunks, resolve_micro_batch
from bam.methods._relu_audit import ReluAuditor, module_tree_key
from bam.methods._space import baseline_image

SHRIKUMAR2017 = ("Shrikumar, Greenside, Kundaje. Learning Important Features Through Propagating Activation "
                 "Differences. ICML 2017")

#: Element-wise activations handled by the Rescale rule.
ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.SiLU, nn.GELU)
#: Non-linear modules DeepLIFT-Rescale is not defined for here: refused rather than treated as linear.
UNSUPPORTED = (nn.MaxPool1d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
               nn.Softmax, nn.LogSoftmax)
EPS = 1e-10


class _Tape:
    """Activations of the baseline row at every non-linear module call, replayed in call order."""

    def __init__(self, model: nn.Module) -> None:
        self.recording = True
        self.ref_logits = torch.empty(0)
        self._calls: dict[int, list[tuple[Tensor, ...]]] = {}
        self._cursor: dict[int, int] = {}
        self._names = {id(m): name or "<root>" for name, m in model.named_modules()}

    def record_baseline(self, model: nn.Module, baseline: Tensor) -> None:
        """Run the baseline row through ``model`` (rules active) to record it; then switch to replay."""
        with torch.no_grad():
            self.ref_logits = model(baseline)[0]
        self.recording = False

    def record(self, module: nn.Module, *tensors: Tensor) -> None:
        """Keep copies of the baseline's tensors (input, output, ...) of this call of ``module``
        (copies: one row each, safe from later in-place ops of the model)."""
        self._calls.setdefault(id(module), []).append(tuple(t.detach().clone() for t in tensors))

    def next(self, module: nn.Module) -> tuple[Tensor, ...]:
        """The baseline's tensors for the current call of ``module`` on the images."""
        key = id(module)
        i = self._cursor.get(key, 0)
        refs = self._calls.get(key, [])
        if i >= len(refs):
            raise BamError(f"method 'deeplift' cannot run on this model: {type(module).__name__} module "
                           f"{self._names.get(key, '?')!r} runs more often on the images than on the baseline; "
                           "accepted: models whose forward does not depend on the input values")
        self._cursor[key] = i + 1
        return refs[i]

    def rewind(self) -> None:
        """Start replaying from the first call (one image pass)."""
        self._cursor.clear()

    def check_replayed(self) -> None:
        """Every recorded call was matched by the image pass (same control flow as the baseline)."""
        for key, refs in self._calls.items():
            if self._cursor.get(key, 0) != len(refs):
                raise BamError(f"method 'deeplift' cannot run on this model: module {self._names.get(key, '?')!r} "
                               "runs a different number of times on the images than on the baseline; "
                               "accepted: models whose forward does not depend on the input values")


class _Rescale(torch.autograd.Function):
    """Output of an element-wise activation on x; backward = Rescale multipliers against x'."""

    @staticmethod
    def forward(ctx: Any, inp: Tensor, out: Tensor, ref_in: Tensor, ref_out: Tensor,
                module: nn.Module) -> Tensor:
        ctx.save_for_backward(inp, out, ref_in, ref_out)
        ctx.module = module
        return out.clone()  # a copy: later in-place ops on the activation must not reach the saved one

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, y, x_ref, y_ref = ctx.saved_tensors
        dx = x - x_ref
        ratio = torch.sub(y, y_ref).div_(dx)  # inf/nan where dx ~ 0: replaced below
        with torch.enable_grad():
            xi = x.detach().requires_grad_(True)
            (deriv,) = torch.autograd.grad(ctx.module.forward(xi).sum(), xi)  # no hooks
        return grad * torch.where(dx.abs() < EPS, deriv, ratio), None, None, None, None


def _relu_constants(r: Tensor) -> tuple[Tensor, ...]:
    """Per-position constants of the closed-form ReLU rule for the baseline input ``r`` (one row):
    clamp bounds (lo, hi) and (A, B, C, D) with multiplier = (A + B·w) / (C + D·w), w = clamp(x, lo, hi)."""
    above = r > 0  # the branch, per position
    pos = above.to(r.dtype)
    neg = 1 - pos
    r_low = torch.where(r == 0, -torch.finfo(r.dtype).tiny, r)
    inf = torch.full_like(r, float("inf"))
    lo, hi = torch.where(above, -inf, 0.0), torch.where(above, 0.0, inf)
    return lo, hi, r * pos, neg, r * pos - r_low * neg, neg - pos


class _ReluRescale(torch.autograd.Function):
    """Rescale rule for ReLU in closed form, without comparisons or selections on the image rows.

    With r = x' (the baseline's input to this ReLU) the multiplier (relu(x) - relu(r)) / (x - r)
    is, position by position, r / (r - min(x, 0)) where r > 0 and relu(x) / (relu(x) - r) where
    r <= 0 (r = 0 moved to -tiny, which changes nothing for |x| > 1e-30). Both forms are
    bit-identical to the ratio wherever x != r and need no fallback where x == r (they give the
    gradient 1[x > 0] there). The branch on r is a per-position constant computed once from the
    baseline row (:func:`_relu_constants`, recorded on the tape): the image rows take one clamp with
    per-position bounds, two multiply-adds and two in-place passes into two buffers (on CPU, fresh
    buffers and full-tensor ``torch.where``/comparisons cost more than the arithmetic).
    """

    @staticmethod
    def forward(ctx: Any, inp: Tensor, ref: Tensor | None, consts: tuple[Tensor, ...] | None = None) -> Tensor:
        if consts is None:
            if ref is None:
                raise ValueError("_ReluRescale needs the baseline input or its constants")
            consts = _relu_constants(ref)
        ctx.save_for_backward(inp, *consts)
        return inp.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        x, lo, hi, a, b, c, d = ctx.saved_tensors
        w = torch.clamp(x, min=lo, max=hi)  # min(x, 0) where r > 0, max(x, 0) elsewhere
        num = torch.addcmul(a, b, w)  # r  |  relu(x)
        den = torch.addcmul(c, d, w, out=w)  # r - w  |  w - r_low (in w's buffer: one fresh buffer less)
        return num.mul_(grad).div_(den), None, None


class _MaxPoolRule(torch.autograd.Function):
    """MaxPool2d on x (computed here, with its arg-max); backward = DeepLIFT max-pool multipliers.

    Each window's Δy = y − y' goes to the arg-max of x where y > y' and to the arg-max of x' where
    y < y' (the split max(y, y') − y' | y − max(y, y') of the rule), divided by Δx there (never 0
    where Δy ≠ 0); the contributions of overlapping windows are *summed*. At positions with Δx = 0
    the rule is 0/0 and the gradient is kept instead (each window whose arg-max of x is there adds
    its gradient). Everything is computed per window (output size), then two scatter-adds.
    """

    @staticmethod
    def forward(ctx: Any, inp: Tensor, ref_in: Tensor, ref_out: Tensor, ref_idx: Tensor,
                module: nn.MaxPool2d) -> Tensor:
        out, idx = F.max_pool2d(inp, *_pool_args(module), return_indices=True)
        ctx.save_for_backward(inp, idx, ref_in, ref_out, ref_idx)  # not out: it may be modified in place later
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, idx, x_ref, y_ref, idx_ref = ctx.saved_tensors
        n, ch = x.shape[:2]
        xf, idx = x.flatten(2), idx.flatten(2)
        idx_ref = idx_ref.flatten(2).expand_as(idx)
        y, y_ref, g = xf.gather(2, idx), y_ref.flatten(2), grad.flatten(2)
        tiny = torch.finfo(x.dtype).tiny
        dy = y - y_ref
        dx_at = y - x_ref.flatten(2).expand(n, ch, -1).gather(2, idx)  # Δx at the arg-max of x: >= Δy
        dx_ref_at = xf.gather(2, idx_ref).sub_(y_ref)  # Δx at the arg-max of x': <= Δy
        # max(Δy, 0) / Δx (0 where Δy <= 0), plus 1 where Δx = 0 (the gradient there); no torch.where:
        # selections and comparisons on full tensors are slow on CPU
        to_x = dy.clamp_min(0).div_(dx_at.clamp_min(tiny)).add_(dx_at == 0).mul_(g)
        to_ref = dy.clamp_max_(0).div_(dx_ref_at.clamp_max_(-tiny)).mul_(g)  # min(Δy, 0) / Δx
        out = torch.zeros_like(xf).scatter_add_(2, idx, to_x).scatter_add_(2, idx_ref, to_ref)
        return out.view_as(x), None, None, None, None


def _pool_args(m: nn.MaxPool2d) -> tuple[Any, ...]:
    """(kernel, stride, padding, dilation, ceil_mode) of a MaxPool2d, as F.max_pool2d takes them."""
    return (list(_pair(m.kernel_size)), list(_pair(m.stride or m.kernel_size)), list(_pair(m.padding)),
            list(_pair(m.dilation)), m.ceil_mode)


def _hook(tape: _Tape, module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
    """Forward hook of other activations: record the baseline's, or route the images' through the rule."""
    if tape.recording:
        tape.record(module, args[0], output)
        return None
    ref_in, ref_out = tape.next(module)
    return _Rescale.apply(args[0], output.detach(), ref_in, ref_out, module)


def _relu_forward(tape: _Tape, module: nn.ReLU, inp: Tensor) -> Tensor:
    """Forward of a plain ``nn.ReLU`` inside :func:`deeplift_rules` (computes through the rule)."""
    if tape.recording:
        out = inp.clamp_min(0)
        tape.record(module, *_relu_constants(inp))
        return out
    return _ReluRescale.apply(inp, None, tape.next(module))


def _maxpool_forward(tape: _Tape, module: nn.MaxPool2d, inp: Tensor) -> Tensor:
    """Forward of an ``nn.MaxPool2d`` inside :func:`deeplift_rules` (computes through the rule)."""
    if tape.recording:
        out, idx = F.max_pool2d(inp, *_pool_args(module), return_indices=True)
        tape.record(module, inp, out, idx)
        return out
    return _MaxPoolRule.apply(inp, *tape.next(module), module)


@contextlib.contextmanager
def deeplift_rules(model: nn.Module, tape: _Tape | None = None) -> Iterator[_Tape]:
    """Context in which the model's non-linear modules back-propagate DeepLIFT multipliers.

    The yielded tape (new, or ``tape``: one recorded earlier on this model) records while
    ``tape.recording`` (run the baseline then), and replays the baseline's activations once it is
    switched off. In-place activations are made out-of-place for the duration (the rule needs their
    input).
    """
    bad = sorted({type(m).__name__ for m in model.modules() if isinstance(m, UNSUPPORTED) or (
        isinstance(m, nn.MaxPool2d) and (m.return_indices or type(m).forward is not nn.MaxPool2d.forward))})
    if bad:
        raise BamError(f"method 'deeplift' cannot run on {type(model).__name__}: it has {', '.join(bad)} "
                       f"modules; accepted: ReLU-family activations, plain MaxPool2d and linear layers")
    tape = _Tape(model) if tape is None else tape
    inplace = [m for m in model.modules() if getattr(m, "inplace", False) and isinstance(m, ELEMENTWISE)]
    for m in inplace:
        m.inplace = False
    # Plain nn.ReLU and nn.MaxPool2d modules compute through their rule (their forward is swapped
    # for the duration: no second output, no copy); the other activations get a forward hook.
    swapped: dict[nn.Module, Any] = {m: functools.partial(_relu_forward, tape, m) for m in model.modules()
                                     if type(m) is nn.ReLU and "forward" not in vars(m)}
    swapped.update({m: functools.partial(_maxpool_forward, tape, m) for m in model.modules()
                    if isinstance(m, nn.MaxPool2d) and "forward" not in vars(m)})
    handles = [m.register_forward_hook(functools.partial(_hook, tape)) for m in model.modules()
               if isinstance(m, ELEMENTWISE) and m not in swapped]
    for mod, fwd in swapped.items():
        mod.forward = fwd
    try:
        yield tape
    finally:
        for h in handles:
            h.remove()
        for mod in swapped:
            del mod.forward
        for m in inplace:
            m.inplace = True


def deeplift_attributions(model: nn.Module, tape: _Tape, inputs: Tensor, baseline: Tensor,
                          target: Tensor) -> tuple[Tensor, Tensor]:
    """(attributions, summation-to-delta gap) for one micro-batch inside :func:`deeplift_rules`.

    ``baseline`` is one row [1, C, H, W], already recorded on ``tape`` (:meth:`_Tape.record_baseline`).
    """
    tape.rewind()
    z = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        out = model(z)
        tape.check_replayed()
        sel = out.gather(1, target.view(-1, 1)).squeeze(1)
        (g,) = torch.autograd.grad(sel.sum(), z)
    attr = (inputs - baseline) * g
    gap = attr.flatten(1).sum(1) - (sel.detach() - tape.ref_logits[target])
    return attr.detach(), gap


def _reference_key(model: nn.Module, baseline: float, like: Tensor) -> tuple[object, ...]:
    """What the recorded baseline activations depend on besides the model's values, which stay the same while a
    prepared :class:`DeepLift` is used (``like``: an input row)."""
    return (id(model), float(baseline), tuple(like.shape[1:]), like.dtype, like.device, module_tree_key(model))


def _passes(params: Mapping[str, Any]) -> int:
    """One row per image (the baseline runs once per call, as one row without gradient)."""
    return 1


def check_baseline(baseline: Any) -> None:
    """The baseline is one pixel value (0 = black image)."""
    if isinstance(baseline, bool) or not isinstance(baseline, (int, float)):
        raise BamError(f"baseline={baseline!r} is invalid; accepted: a pixel value (0 = black image)")


class DeepLift:
    """DeepLIFT bound to one model (``MethodInfo.prepare``): keeps the ReLU audit and the baseline's recorded
    activations for that model, so that calls on further batches skip the audit and the baseline forward.
    Valid while the model's values stay the same (the evaluation guarantees it for one unit of work)."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._audit = ReluAuditor()
        self._tape: tuple[tuple[object, ...], _Tape] | None = None

    def __call__(self, model: nn.Module, inputs: Tensor, target: Tensor, *, baseline: float = 0.0,
                 micro_batch: int = 0) -> AttributionResult:
        """DeepLIFT-Rescale attributions of the target logit against a constant baseline image."""
        check_baseline(baseline)
        self._audit.require(model, inputs, "deeplift", once=True)
        mb = resolve_micro_batch(model, inputs, micro_batch)
        attr = torch.empty_like(inputs)
        delta = torch.empty(inputs.shape[0], dtype=inputs.dtype, device=inputs.device)
        base = baseline_image(model, inputs[:1], float(baseline))
        key = _reference_key(model, baseline, inputs)
        known = self._tape[1] if self._tape is not None and self._tape[0] == key else None
        try:
            with deeplift_rules(model, known) as tape:
                if tape.recording:
                    tape.record_baseline(model, base)
                    self._tape = (key, tape)
                for sl in chunks(inputs.shape[0], mb):
                    attr[sl], delta[sl] = deeplift_attributions(model, tape, inputs[sl], base, target[sl])
        except RuntimeError as exc:
            if "modified by an inplace operation" not in str(exc):
                raise
            raise BamError(f"method 'deeplift' cannot run on {type(model).__name__}: it modifies an activation in "
                           f"place; accepted: models without in-place ops on activations") from None
        return AttributionResult(attr, extras={"deeplift_delta": delta})


@register_method(MethodInfo(
    name="deeplift", title="DeepLIFT (Rescale)", paper=SHRIKUMAR2017, family="gradient",
    defaults={"baseline": 0.0}, passes=_passes, check=lambda p: check_baseline(p["baseline"]), prepare=DeepLift,
    description="DeepLIFT Rescale rule (exact max-pool rule), black baseline; refuses reused or functional ReLUs.",
))
def deeplift(model: nn.Module, inputs: Tensor, target: Tensor, *, baseline: float = 0.0,
             micro_batch: int = 0) -> AttributionResult:
    """DeepLIFT-Rescale attributions of the target logit against a constant baseline image (prepared for
    ``model`` for this call only: :class:`DeepLift` keeps the per-model state across calls)."""
    return DeepLift(model)(model, inputs, target, baseline=baseline, micro_batch=micro_batch)

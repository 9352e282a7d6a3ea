"""``scripts/bench.py --vs-captum``: bam's methods against captum's batched equivalents, interleaved.

For each method, per round: bam's call and captum's call on the same model, inputs and targets
(same rows per forward/backward), in alternating order (bam first in even rounds, captum first in
odd rounds), plus the raw forward+backward pass each one-pass method is measured against. The
table reports medians over rounds of

* ``bam / captum``: bam's images/s over captum's, both from the same round (> 1: bam is faster);
* ``efficiency``: bam images/s x passes / raw images/s, for the one-pass methods; GradCAM is
  measured against the *partial* pass it needs (forward + backward down to its layer only).

Clock: CPU time of this process (``--threads 1``: the work done, robust to other processes
waiting for the CPU) or wall time (``--clock wall``; CUDA is synchronised). Either way the machine's
load moves the numbers: compare ratios from one run, never numbers across runs.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from bam.methods import attribute

#: method -> (bam params, passes per image, one-pass raw reference: "full" | "partial" | None)
METHODS: dict[str, tuple[dict[str, Any], int, str | None]] = {
    "gradient": ({}, 1, "full"),
    "grad_x_input": ({}, 1, "full"),
    "gradcam": ({}, 1, "partial"),
    "integrated_gradients": ({"steps": 25}, 25, None),
    "smoothgrad": ({"samples": 25, "seed": 0}, 25, None),
    "guided_backprop": ({}, 1, "full"),
    "deeplift": ({}, 1, "full"),
}


def captum_call(name: str, model: torch.nn.Module, x: Tensor, t: Tensor, rows: int) -> Tensor:
    """captum's batched equivalent of bam's ``name`` (same rows per forward/backward where it batches)."""
    import captum.attr as ca

    if name == "gradient":
        return ca.Saliency(model).attribute(x, target=t, abs=False)
    if name == "grad_x_input":
        return ca.InputXGradient(model).attribute(x, target=t)
    if name == "gradcam":
        cam = ca.LayerGradCam(model, model.gradcam_layer).attribute(x, target=t, relu_attributions=True)
        return ca.LayerAttribution.interpolate(cam, tuple(x.shape[2:]), interpolate_mode="bilinear")
    if name == "integrated_gradients":
        return ca.IntegratedGradients(model).attribute(x, baselines=0.0, target=t, n_steps=25,
                                                       internal_batch_size=rows)
    if name == "smoothgrad":
        return ca.NoiseTunnel(ca.Saliency(model)).attribute(x, nt_type="smoothgrad_sq", nt_samples=25, stdevs=0.15,
                                                            nt_samples_batch_size=max(1, rows // x.shape[0]),
                                                            target=t, abs=False)
    if name == "guided_backprop":
        return ca.GuidedBackprop(model).attribute(x, target=t)
    if name == "deeplift":
        return ca.DeepLift(model).attribute(x, baselines=0.0, target=t)
    raise KeyError(name)


def raw_pass(model: torch.nn.Module, x: Tensor, t: Tensor, kind: str) -> None:
    """Forward + backward of the target logit to the input (``full``) or to ``model.gradcam_layer``."""
    if kind == "full":
        xi = x.detach().requires_grad_(True)
        torch.autograd.grad(model(xi).gather(1, t.view(-1, 1)).sum(), xi)
        return
    acts: list[Tensor] = []
    layer: torch.nn.Module = getattr(model, "gradcam_layer")  # noqa: B009 (a module attribute, typed here)
    handle = layer.register_forward_hook(lambda m, a, out: acts.append(out))
    try:
        out = model(x)
    finally:
        handle.remove()
    torch.autograd.grad(out.gather(1, t.view(-1, 1)).sum(), acts[0])


def _clock(kind: str, device: torch.device) -> Callable[[Callable[[], object]], float]:
    """A timer of one call: CPU seconds of this process, or wall seconds (CUDA synchronised)."""

    def timer(fn: Callable[[], object]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.process_time() if kind == "cpu" else time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.process_time() if kind == "cpu" else time.perf_counter()) - t0

    return timer


def agreement(name: str, model: torch.nn.Module, x: Tensor, t: Tensor, rows: int) -> float:
    """Max |bam - captum| / max |bam| on the batch (0 = same maps; IG and SmoothGrad differ by design:
    quadrature, noise; DeepLIFT: captum is inexact on ResNets)."""
    params, _, _ = METHODS[name]
    ours = attribute(name, model, x, t, micro_batch=rows, **params).detach()
    theirs = captum_call(name, model, x, t, rows).detach().expand_as(ours)
    if name == "gradcam":  # bam divides by the per-image maximum
        theirs = theirs / theirs.flatten(1).amax(1).clamp_min(1e-30).view(-1, 1, 1, 1)
    return float((ours - theirs).abs().max() / ours.abs().max().clamp_min(1e-30))


def run(model: torch.nn.Module, x: Tensor, t: Tensor, rounds: int, clock: str) -> list[dict[str, Any]]:
    """Interleaved rounds; returns one row per method (medians over rounds)."""
    timer = _clock(clock, x.device)
    rows = x.shape[0]
    n = x.shape[0]
    calls: dict[str, dict[str, Callable[[], object]]] = {}
    for name, (params, _, raw) in METHODS.items():
        calls[name] = {"bam": functools.partial(attribute, name, model, x, t, micro_batch=rows, **params),
                       "captum": functools.partial(captum_call, name, model, x, t, rows)}
        if raw:
            calls[name]["raw"] = functools.partial(raw_pass, model, x, t, raw)
    for fns in calls.values():  # warm-up (allocator, oneDNN primitives, bam's per-model caches)
        for fn in fns.values():
            fn()
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(rounds):
        for name, fns in calls.items():
            order = list(fns) if r % 2 == 0 else list(reversed(fns))
            for who in order:
                times.setdefault((name, who), []).append(timer(fns[who]))
    out = []
    for name, (_params, passes, raw) in METHODS.items():
        bam_t, cap_t = times[(name, "bam")], times[(name, "captum")]
        row: dict[str, Any] = {
            "method": name, "passes": passes,
            "bam_images_per_s": round(n / statistics.median(bam_t), 2),
            "captum_images_per_s": round(n / statistics.median(cap_t), 2),
            "bam_over_captum": round(statistics.median(c / b for b, c in zip(bam_t, cap_t)), 3),
        }
        if raw:
            raw_t = times[(name, "raw")]
            row["raw_pass"] = raw
            row["efficiency"] = round(statistics.median(w / (b / passes) for b, w in zip(bam_t, raw_t)), 3)
            row["captum_efficiency"] = round(statistics.median(w / (c / passes) for c, w in zip(cap_t, raw_t)), 3)
        row["max_rel_diff"] = round(agreement(name, model, x, t, rows), 6)
        out.append(row)
    return out

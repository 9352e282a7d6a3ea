"""Bottleneck activations and their gradients (batched, hooks, every layer in one backward).

A model names its bottlenecks with ``model.bottlenecks`` -> {name: module} (``block_layer1``,
``block_layer2``, ... the residual stages, the original BAM's names). For models from before that
attribute, :func:`find_bottlenecks` falls back on the stages of the built-in archs. ``logit`` is
the model output itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bam.concepts.config import LOGIT, PENULTIMATE_STAGE, STAGE_ALIASES
from bam.errors import BamError


def find_bottlenecks(model: nn.Module) -> dict[str, nn.Module]:
    """{``block_layer<i>``: module} in forward order: ``model.bottlenecks`` or the built-in archs' stages."""
    named = getattr(model, "bottlenecks", None)
    if named is not None:
        return dict(named)
    net = getattr(model, "net", model)
    stages = getattr(net, "stages", None)  # small_resnet (net.stages), iresnet (model.stages)
    if stages is None and all(hasattr(net, f"layer{i}") for i in range(1, 5)):  # torchvision ResNets
        stages = [getattr(net, f"layer{i}") for i in range(1, 5)]
    if stages is None:
        return {}
    return {f"block_layer{i + 1}": m for i, m in enumerate(stages)}


def resolve_layers(model: nn.Module, requested: Sequence[str]) -> dict[str, nn.Module | None]:
    """The requested layers (empty = all stages + ``logit``) -> module (None for ``logit``), in order."""
    stages = find_bottlenecks(model)
    available: dict[str, nn.Module | None] = {**stages, LOGIT: None}
    names = list(requested) or list(available)
    for name in names:
        if name not in available:
            raise BamError(f"model {type(model).__name__} has no bottleneck {name!r}; accepted: "
                           f"{', '.join(available)}")
    return {name: available[name] for name in names}


def summary_layer(layers: Sequence[str], wanted: str) -> str:
    """``wanted``, or for an alias the last / penultimate residual stage among ``layers`` (with one
    stage: that one; with none: ``logit``)."""
    if wanted not in STAGE_ALIASES:
        if wanted not in layers:
            raise BamError(f"tcav summary_layer {wanted!r} is not computed; accepted: {', '.join(STAGE_ALIASES)}, "
                           f"{', '.join(layers)}")
        return wanted
    stages = [n for n in layers if n != LOGIT]
    if not stages:
        return LOGIT
    return stages[-2] if wanted == PENULTIMATE_STAGE and len(stages) > 1 else stages[-1]


class _Stop(Exception):
    """Raised by a hook to end a forward pass once the wanted activation is captured."""


def _flat_output(name: str, out: object) -> Tensor:
    if not isinstance(out, Tensor):
        raise BamError(f"bottleneck {name!r} returned {type(out).__name__}; accepted: a tensor [N, ...]")
    return out.flatten(1)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a parameterless model)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def layer_activations(model: nn.Module, name: str, module: nn.Module | None, images: Tensor,
                      batch_size: int) -> Tensor:
    """Flattened activations [N, D] (float32, on the model's device) of one layer for ``images``.

    The forward pass stops right after ``module`` (the rest of the network is not run).
    """
    device = model_device(model)
    chunks: list[Tensor] = []
    got: list[Tensor] = []

    def hook(_m: nn.Module, _i: object, out: object) -> None:
        got.append(_flat_output(name, out).float())
        raise _Stop

    handle = module.register_forward_hook(hook) if module is not None else None
    try:
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device)
            got.clear()
            if module is None:
                chunks.append(_flat_output(name, model(x)).float())
                continue
            with contextlib.suppress(_Stop):
                model(x)
            if not got:
                raise BamError(f"bottleneck {name!r} did not run in the model's forward pass; accepted: a "
                               "module of the model's forward path")
            chunks.append(got[0])
    finally:
        if handle is not None:
            handle.remove()
    return torch.cat(chunks)


def objective_seed(logits: Tensor, target: int, gradient: str) -> tuple[Tensor, Tensor]:
    """d objective / d logits [B, K] in float64, scaled to max |.| = 1 per image, and that scale [B].

    ``logit``: e_c. ``log_softmax``: e_c - softmax(z) with the target entry written as the sum of
    the other probabilities (1 - p_c without cancellation), so a confident prediction keeps the
    sign of its tiny gradient; the per-image rescaling (positive, so signs are unchanged) keeps
    it out of float32 underflow in the backward pass.
    """
    z = logits.detach().double()
    if not 0 <= target < z.shape[1]:
        raise BamError(f"target class {target} is out of range for a model with {z.shape[1]} outputs; accepted: "
                       f"0..{z.shape[1] - 1}")
    onehot = F.one_hot(torch.full((len(z),), target, device=z.device), z.shape[1]).double()
    if gradient == "logit":
        return onehot, torch.ones(len(z), dtype=torch.float64, device=z.device)
    others = torch.softmax(z, dim=1) * (1.0 - onehot)
    seed = onehot * others.sum(1, keepdim=True) - others
    scale = seed.abs().amax(1).clamp(min=1e-300)
    return seed / scale[:, None], scale


def target_gradients(model: nn.Module, layers: Mapping[str, nn.Module | None], images: Tensor,
                     target: int, gradient: str) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """Gradients [B, D] of the target class objective at every layer (one backward), the logits,
    and the per-image scale the gradients are to be multiplied by (see :func:`objective_seed`).

    ``gradient``: ``log_softmax`` differentiates the target class log-probability (what the
    original TF code did, through the cross-entropy loss), ``logit`` the target logit (Kim et al.
    2018, Eq. 2).
    """
    device = model_device(model)
    x = images.to(device).requires_grad_(True)  # so every activation is part of the graph
    outs: dict[str, list[Tensor]] = {n: [] for n, m in layers.items() if m is not None}
    handles = []
    for name, module in layers.items():
        if module is not None:
            def hook(_m: nn.Module, _i: object, out: object, name: str = name) -> None:
                if not isinstance(out, Tensor):
                    raise BamError(f"bottleneck {name!r} returned {type(out).__name__}; accepted: a tensor")
                outs[name].append(out)
            handles.append(module.register_forward_hook(hook))
    try:
        with torch.enable_grad():
            logits = model(x)
            for name, got in outs.items():
                if len(got) != 1:
                    raise BamError(f"bottleneck {name!r} ran {len(got)} times in one forward pass; accepted: a "
                                   "module that runs once")
            seed, scale = objective_seed(logits, target, gradient)
            tensors = [logits if m is None else outs[n][0] for n, m in layers.items()]
            # images are independent in eval mode: one vector-Jacobian product serves the batch
            grads = torch.autograd.grad(logits, tensors, grad_outputs=seed.to(logits.dtype))
    finally:
        for h in handles:
            h.remove()
    return {n: g.flatten(1).float() for n, g in zip(layers, grads)}, logits.detach(), scale

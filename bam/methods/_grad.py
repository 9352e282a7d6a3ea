"""Batched gradient of the target logit with respect to the input."""

from __future__ import annotations

import torch
from torch import Tensor

from bam.methods._batching import chunks


def target_logit_grad(model: torch.nn.Module, inputs: Tensor, target: Tensor, micro_batch: int = 0) -> tuple[Tensor, Tensor]:
    """Return (d logit[target] / d inputs, target logits) for a batch, micro-batched if asked.

    Gradients of different rows are independent (eval mode), so summing the selected logits and
    back-propagating once per micro-batch gives each row its own gradient.
    """
    grads = torch.empty_like(inputs)
    logits = torch.empty(inputs.shape[0], dtype=inputs.dtype, device=inputs.device)
    step = micro_batch if micro_batch and micro_batch > 0 else inputs.shape[0]
    for sl in chunks(inputs.shape[0], step):
        x = inputs[sl].detach().requires_grad_(True)
        with torch.enable_grad():
            out = model(x)
            sel = out.gather(1, target[sl].view(-1, 1)).squeeze(1)
            (g,) = torch.autograd.grad(sel.sum(), x)
        grads[sl] = g
        logits[sl] = sel.detach()
    return grads, logits

"""Batched gradients of the target logit with respect to the input.

Two entry points:

* :func:`target_logit_grad` -- one gradient per input row (vanilla gradient and friends).
* :func:`level_grads` -- gradients of an *expanded* batch (IG steps, SmoothGrad samples, IG-SG
  samples x steps) whose rows are built lazily, chunk by chunk, so memory stays bounded by
  ``micro_batch`` rows whatever the expansion factor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from bam.methods._batching import chunks

#: ``make_rows(level, rows)`` -> the model inputs of expansion level ``level`` for images ``rows``.
RowMaker = Callable[[int, slice], Tensor]


def target_logit_grad(model: torch.nn.Module, inputs: Tensor, target: Tensor,
                      micro_batch: int = 0) -> tuple[Tensor, Tensor]:
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


def level_segments(n: int, levels: int, micro_batch: int) -> Iterator[list[tuple[int, slice]]]:
    """Group the expanded rows ``(level, image)`` into micro-batches of at most ``micro_batch`` rows.

    Rows are ordered level-major (flat index ``level * n + image``); each micro-batch is a list of
    ``(level, image slice)`` segments. Every image therefore sees its levels in increasing order,
    whatever the micro-batch size, so accumulations over levels happen in a fixed order.
    """
    total = n * levels
    for sl in chunks(total, micro_batch if micro_batch and micro_batch > 0 else total):
        segs: list[tuple[int, slice]] = []
        pos = sl.start
        while pos < sl.stop:
            level, first = divmod(pos, n)
            last = min(n, first + (sl.stop - pos))
            segs.append((level, slice(first, last)))
            pos += last - first
        yield segs


def level_grads(model: torch.nn.Module, n: int, levels: int, make_rows: RowMaker, target: Tensor,
                micro_batch: int) -> Iterator[tuple[int, slice, Tensor, Tensor]]:
    """Yield ``(level, image slice, d logit[target] / d rows, logit[target])`` for an expanded batch.

    The expanded batch has ``levels`` rows per image (``n`` images); ``make_rows(level, rows)``
    builds the inputs of one level for a slice of images. Rows are pushed through the model
    ``micro_batch`` at a time (one forward + one backward per micro-batch) and yielded in
    level-major order (see :func:`level_segments`).
    """
    for segs in level_segments(n, levels, micro_batch):
        x = torch.cat([make_rows(level, rows) for level, rows in segs]).detach().requires_grad_(True)
        tgt = torch.cat([target[rows] for _, rows in segs])
        with torch.enable_grad():
            out = model(x)
            sel = out.gather(1, tgt.view(-1, 1)).squeeze(1)
            (g,) = torch.autograd.grad(sel.sum(), x)
        start = 0
        for level, rows in segs:
            size = rows.stop - rows.start
            yield level, rows, g[start:start + size], sel[start:start + size].detach()
            start += size


def noise_generator(device: torch.device, seed: int) -> torch.Generator:
    """A torch.Generator on ``device`` seeded with ``seed`` (all method noise comes from one)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def smoothgrad_noise(inputs: Tensor, samples: int, noise_level: float, seed: int) -> Tensor:
    """Noise for SmoothGrad-style methods: ``[samples, N, C, H, W]``, drawn up front in a fixed order.

    sigma = ``noise_level`` * (max x - min x) per image over all channels (Smilkov et al. 2017),
    i.i.d. per element of ``inputs``: pixels in pixel space, the network input in model space.
    """
    gen = noise_generator(inputs.device, seed)
    flat = inputs.flatten(1)
    sigma = noise_level * (flat.amax(1) - flat.amin(1))
    noise = torch.randn((samples, *inputs.shape), generator=gen, device=inputs.device, dtype=inputs.dtype)
    return noise * sigma.view(1, -1, 1, 1, 1)

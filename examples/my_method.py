"""A plug-in attribution method for bam: occlusion (Zeiler & Fergus, "Visualizing and Understanding
Convolutional Networks", ECCV 2014).

Slide a grey square over the image; a pixel's attribution is the mean drop of the target logit over
the occlusions that cover it. Forward passes only, every (image, patch position) row batched and
micro-batched. No registration needed: keyword-only arguments with defaults become the method's
parameters. Use it from the CLI (with this folder on the import path)::

    PYTHONPATH=examples bam evaluate --data runs/data --models runs/models --out runs/eval \
        --method my_method:occlusion --method gradcam
    PYTHONPATH=examples bam explain --data runs/data --model runs/models/obj --method my_method:occlusion \
        --images 4 --out occlusion.png

or from Python: ``bam.methods.attribute("my_method:occlusion", model, images, labels, patch=16)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _positions(size: int, patch: int, stride: int) -> list[int]:
    """Top/left corners of patches covering ``range(size)`` (the last one flush with the border)."""
    last = max(0, size - patch)
    starts = list(range(0, last + 1, stride))
    if starts[-1] != last:
        starts.append(last)
    return starts


def occlusion(model: torch.nn.Module, inputs: Tensor, target: Tensor, *, patch: int = 8, stride: int = 4,
              fill: float = 0.5, micro_batch: int = 64) -> Tensor:
    """Occlusion sensitivity: mean drop of the target logit when a ``patch`` square is set to ``fill``."""
    n, c, h, w = inputs.shape
    corners = [(y, x) for y in _positions(h, patch, stride) for x in _positions(w, patch, stride)]
    masks = torch.zeros(len(corners), 1, h, w, dtype=inputs.dtype, device=inputs.device)
    for k, (y, x) in enumerate(corners):
        masks[k, :, y:y + patch, x:x + patch] = 1.0
    with torch.no_grad():
        base = model(inputs).gather(1, target.view(-1, 1))  # [n, 1]
        drops = torch.empty(n, len(corners), dtype=inputs.dtype, device=inputs.device)
        total = n * len(corners)
        for start in range(0, total, max(1, micro_batch)):  # rows = (image, position), image-major
            rows = torch.arange(start, min(total, start + micro_batch), device=inputs.device)
            img, pos = rows // len(corners), rows % len(corners)
            occluded = inputs[img] * (1 - masks[pos]) + fill * masks[pos]
            logits = model(occluded).gather(1, target[img].view(-1, 1)).squeeze(1)
            drops[img, pos] = base[img, 0] - logits
    heat = torch.einsum("nk,khw->nhw", drops, masks[:, 0])
    cover = masks[:, 0].sum(0).clamp_min(1)
    return (heat / cover).unsqueeze(1).expand(n, c, h, w).contiguous()

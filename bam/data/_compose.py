"""Composite rendering (SPEC §2.3); the placements come from :mod:`bam.data._placement`.

Rendering is a batched bilinear resize of the RGBA cut-out into its box (``grid_sample`` with the
same sampling grid as ``F.interpolate(mode="bilinear", align_corners=False)``), a binary alpha
(resized alpha >= 0.5) and a paste; the mask *is* that binary alpha, so the mask equals the
pasted pixels exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _axis_grid(start: Tensor, length: Tensor, src: Tensor, origin: Tensor, window: int,
               padded: int) -> tuple[Tensor, Tensor]:
    """Normalised sampling coordinates ([M, window]) for canvas positions origin..origin+window-1,
    and the inside-box flag, along one axis."""
    pos = origin[:, None].double() + torch.arange(window, dtype=torch.float64, device=start.device)[None]
    start, length, src = start[:, None].double(), length[:, None].double(), src[:, None].double()
    coord = (pos - start + 0.5) * (src / length) - 0.5  # F.interpolate's source index
    coord = torch.minimum(coord.clamp_min(0.0), src - 1)
    norm = (coord + 0.5) / padded * 2 - 1  # grid_sample(align_corners=False) convention
    inside = (pos >= start) & (pos < start + length)
    return norm.float(), inside


def render_window(objects: Tensor, object_hw: Tensor, boxes: Tensor, image_size: int
                  ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Resize RGBA cut-outs into their boxes, computed only on a window around the boxes.

    ``objects``: uint8 or float [M, 4, P, P] (top-left aligned, valid region ``object_hw`` [M, 2]
    as (h, w)); ``boxes``: [M, 4] (x0, y0, w, h). The window is L x L (L = the largest box side
    of the batch) and lies inside the W x W canvas at (ox, oy). Returns ox [M], oy [M],
    RGB [M, 3, L, L] in [0, 1] and the binary mask [M, L, L] (bool).
    """
    padded = objects.shape[-1]
    window = int(boxes[:, 2:].max())
    ox = torch.minimum(boxes[:, 0], torch.full_like(boxes[:, 0], image_size - window))
    oy = torch.minimum(boxes[:, 1], torch.full_like(boxes[:, 1], image_size - window))
    src = objects.float().div_(255.0) if objects.dtype == torch.uint8 else objects.float()
    gx, in_x = _axis_grid(boxes[:, 0], boxes[:, 2], object_hw[:, 1], ox, window, padded)
    gy, in_y = _axis_grid(boxes[:, 1], boxes[:, 3], object_hw[:, 0], oy, window, padded)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mask = (out[:, 3] >= 0.5) & in_y[:, :, None] & in_x[:, None, :]
    return ox, oy, out[:, :3], mask


def _window_index(ox: Tensor, oy: Tensor, window: int, size: int, batch: Tensor, channels: int) -> Tensor:
    """Flat indices [M, C, L, L] of each item's L x L window in a contiguous [B, C, W, W] tensor."""
    ar = torch.arange(window, device=ox.device)
    pixel = (oy[:, None] + ar)[:, :, None] * size + (ox[:, None] + ar)[:, None, :]  # [M, L, L]
    plane = batch[:, None] * channels + torch.arange(channels, device=ox.device)[None]  # [M, C]
    return plane[:, :, None, None] * (size * size) + pixel[:, None]


def compose(scenes: Tensor, objects: Tensor, object_hw: Tensor, boxes: Tensor, paste: Tensor) -> tuple[Tensor, Tensor]:
    """Images and masks for a batch (SPEC §2.3 / data contract).

    ``scenes``: uint8 [B, 3, W, W]; ``objects``: [B, 4, P, P]; ``boxes``: [B, 4] with x0 = -1
    where there is no object; ``paste``: bool [B] (False: scene-only image, the mask still marks
    where the object would be). Returns float images [B, 3, W, W] in [0, 1] and masks [B, 1, W, W].
    """
    size = scenes.shape[-1]
    images = scenes.float().div_(255.0)
    masks = torch.zeros(scenes.shape[0], 1, size, size, device=images.device)
    has = boxes[:, 0] >= 0
    if bool(has.any()):
        idx = torch.nonzero(has).squeeze(1)
        if len(idx) == scenes.shape[0]:
            ox, oy, rgb, mask = render_window(objects, object_hw, boxes, size)
        else:
            ox, oy, rgb, mask = render_window(objects[idx], object_hw[idx], boxes[idx], size)
        window = mask.shape[-1]
        masks.view(-1).index_copy_(0, _window_index(ox, oy, window, size, idx, 1).reshape(-1),
                                   mask.reshape(-1).float())
        lin = _window_index(ox, oy, window, size, idx, 3).reshape(-1)
        do = (mask & paste[idx].view(-1, 1, 1))[:, None].expand(-1, 3, -1, -1).reshape(-1)
        flat = images.view(-1)
        flat.index_copy_(0, lin, torch.where(do, rgb.reshape(-1), flat.index_select(0, lin)))
    return images, masks

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
    src = objects.float() / 255.0 if objects.dtype == torch.uint8 else objects.float()
    gx, in_x = _axis_grid(boxes[:, 0], boxes[:, 2], object_hw[:, 1], ox, window, padded)
    gy, in_y = _axis_grid(boxes[:, 1], boxes[:, 3], object_hw[:, 0], oy, window, padded)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mask = (out[:, 3] >= 0.5) & in_y[:, :, None] & in_x[:, None, :]
    return ox, oy, out[:, :3], mask


def _window_index(ox: Tensor, oy: Tensor, window: int, size: int, batch: Tensor | None = None) -> Tensor:
    """Flat indices [M * L * L] of each item's L x L window in a [B, W, W] canvas (row-major)."""
    ar = torch.arange(window, device=ox.device)
    b = torch.arange(ox.shape[0], device=ox.device) if batch is None else batch
    lin = (b[:, None, None] * size + (oy[:, None] + ar)[:, :, None]) * size + (ox[:, None] + ar)[:, None, :]
    return lin.reshape(-1)


def render_objects(objects: Tensor, object_hw: Tensor, boxes: Tensor, image_size: int) -> tuple[Tensor, Tensor]:
    """Full-canvas version of :func:`render_window`: RGB [M, 3, W, W] (zero outside the window)
    and mask [M, 1, W, W] (float {0, 1})."""
    m = objects.shape[0]
    rgb = torch.zeros(m * image_size * image_size, 3, device=objects.device)
    mask = torch.zeros(m * image_size * image_size, device=objects.device)
    if m:
        ox, oy, win_rgb, win_mask = render_window(objects, object_hw, boxes, image_size)
        lin = _window_index(ox, oy, win_mask.shape[-1], image_size)
        rgb.index_copy_(0, lin, win_rgb.permute(0, 2, 3, 1).reshape(-1, 3))
        mask.index_copy_(0, lin, win_mask.reshape(-1).float())
    rgb = rgb.view(m, image_size, image_size, 3).permute(0, 3, 1, 2).contiguous()
    return rgb, mask.view(m, 1, image_size, image_size)


def compose(scenes: Tensor, objects: Tensor, object_hw: Tensor, boxes: Tensor, paste: Tensor) -> tuple[Tensor, Tensor]:
    """Images and masks for a batch (SPEC §2.3 / data contract).

    ``scenes``: uint8 [B, 3, W, W]; ``objects``: [B, 4, P, P]; ``boxes``: [B, 4] with x0 = -1
    where there is no object; ``paste``: bool [B] (False: scene-only image, the mask still marks
    where the object would be). Returns float images [B, 3, W, W] in [0, 1] and masks [B, 1, W, W].
    """
    size = scenes.shape[-1]
    batch = scenes.shape[0]
    images = scenes.permute(0, 2, 3, 1).contiguous().float().div_(255.0)  # [B, W, W, 3] for window copies
    masks = torch.zeros(batch * size * size, device=images.device)
    has = boxes[:, 0] >= 0
    if bool(has.any()):
        idx = torch.nonzero(has).squeeze(1)
        if len(idx) == batch:
            ox, oy, rgb, mask = render_window(objects, object_hw, boxes, size)
        else:
            ox, oy, rgb, mask = render_window(objects[idx], object_hw[idx], boxes[idx], size)
        lin = _window_index(ox, oy, mask.shape[-1], size, idx)
        flat = images.view(-1, 3)
        mask = mask.reshape(-1)
        masks.index_copy_(0, lin, mask.float())
        do = (mask & paste[idx].repeat_interleave(mask.shape[0] // len(idx)))[:, None]
        new = torch.where(do, rgb.permute(0, 2, 3, 1).reshape(-1, 3), flat.index_select(0, lin))
        flat.index_copy_(0, lin, new)
    return images.permute(0, 3, 1, 2).contiguous(), masks.view(batch, 1, size, size)

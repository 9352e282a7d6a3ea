"""``bam data show``: a PNG grid of samples with the object mask outlined."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from bam._io import save_png
from bam.data.dataset import BamData
from bam.errors import BamError

OUTLINE = (255, 32, 32)


def mask_outline(masks: torch.Tensor) -> torch.Tensor:
    """Boolean [B,H,W]: mask pixels with at least one 4-neighbour outside the mask."""
    m = masks[:, 0] > 0.5
    eroded = -F.max_pool2d(-m[:, None].float(), 3, stride=1, padding=1)[:, 0] > 0.5
    return m & ~eroded


def sample_grid(data: BamData, subset: str, split: str | None, n: int, seed: int, scale: int = 2) -> np.ndarray:
    """uint8 HxWx3 grid of ``n`` random items of a subset, captioned with their labels."""
    from PIL import Image, ImageDraw

    if n < 1:
        raise BamError(f"--n {n} too small; accepted: >= 1")
    sub = data.subset(subset, split)
    if len(sub) == 0:
        raise BamError(f"subset {subset!r} split {split!r} is empty")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(sub), generator=g)[: min(n, len(sub))].sort().values
    images, labels, masks = sub.load_batch(idx)
    pix = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy().copy()
    edge = mask_outline(masks).numpy()
    pix[edge] = OUTLINE
    names = data.object_classes if sub.label_kind == "object" else data.scene_classes
    size, cap = data.image_size * scale, 14
    cols = int(np.ceil(np.sqrt(len(idx))))
    rows = int(np.ceil(len(idx) / cols))
    canvas = Image.new("RGB", (cols * (size + 4), rows * (size + cap + 4)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, (img, lab) in enumerate(zip(pix, labels.tolist())):
        r, c = divmod(k, cols)
        x, y = c * (size + 4) + 2, r * (size + cap + 4) + 2
        canvas.paste(Image.fromarray(img).resize((size, size), Image.Resampling.NEAREST), (x, y))
        draw.text((x, y + size + 1), names[lab][: size // 6], fill=(0, 0, 0))
    return np.asarray(canvas)


def show_samples(data: BamData, out: str | os.PathLike[str], subset: str = "obj", split: str | None = "val",
                 n: int = 16, seed: int = 0) -> Path:
    """Write the sample grid of :func:`sample_grid` to ``out`` (PNG)."""
    from PIL import Image

    out = Path(out)
    save_png(out, Image.fromarray(sample_grid(data, subset, split, n, seed)))
    return out

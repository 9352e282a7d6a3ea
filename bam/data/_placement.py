"""Placement rule of SPEC §2.3, drawn once at build time from the seed (numpy only).

Placement of object instance i of class o on scene image i of class s: the cut-out's longer side
becomes a uniform random integer L in [int(W/sqrt3), int(W/sqrt2)), the shorter side keeps the
aspect ratio (rounded, at least 1 px), and the top-left corner is uniform over the positions that
keep the object fully inside the W x W image.
"""

from __future__ import annotations

import numpy as np


def draw_placements(seed: int, object_hw: np.ndarray, num_scenes: int, image_size: int,
                    scale_range: tuple[int, int]) -> dict[str, np.ndarray]:
    """Boxes for every (object class, scene class, instance): arrays x0, y0, w, h of shape [O, S, N].

    ``object_hw`` is [O, N, 2] (height, width of each stored cut-out). Draws come from one
    generator seeded by ``seed`` in a fixed order, so they do not depend on workers or caching.
    """
    num_objects, n = object_hw.shape[:2]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB4A, 0x2]))
    lo, hi = scale_range
    longer = rng.integers(lo, hi, size=(num_objects, num_scenes, n))
    ux = rng.random((num_objects, num_scenes, n))
    uy = rng.random((num_objects, num_scenes, n))
    hc = object_hw[:, None, :, 0].astype(np.float64)
    wc = object_hw[:, None, :, 1].astype(np.float64)
    wide = wc >= hc
    w = np.where(wide, longer, np.maximum(1, np.rint(wc * longer / hc))).astype(np.int64)
    h = np.where(wide, np.maximum(1, np.rint(hc * longer / wc)), longer).astype(np.int64)
    x0 = np.floor(ux * (image_size - w + 1)).astype(np.int64)
    y0 = np.floor(uy * (image_size - h + 1)).astype(np.int64)
    return {"x0": x0, "y0": y0, "w": w, "h": h}

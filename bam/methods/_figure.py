"""Heatmap grids for ``bam explain``: rows = images, columns = input + one column per method."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from torch import Tensor

from bam._io import atomic_open


def display_maps(attributions: Tensor) -> Tensor:
    """What the BAM metrics see (SPEC §4.1 steps 1-2, :func:`bam.metrics.normalise_maps`), [N, H, W] in [0, 1].

    A map the metric cannot normalise (constant, or a failed NaN row) is NaN, drawn as "no map".
    """
    from bam.metrics import normalise_maps, positive_map

    return normalise_maps(positive_map(attributions.detach().float()))[0]


def explanation_grid(out: str | os.PathLike[str], images: Tensor, masks: Tensor, maps: Mapping[str, Tensor],
                     row_labels: Sequence[str], cmap: str = "inferno") -> None:
    """Write a PNG: one row per image, the input then each method's map over it, mask outlined.

    ``images`` [N, 3, H, W] in [0, 1]; ``masks`` [N, 1, H, W]; ``maps`` method -> [N, H, W] in [0, 1].
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    n, cols = images.shape[0], 1 + len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 1.9 * n + 0.3), squeeze=False)
    pix = images.detach().cpu().permute(0, 2, 3, 1).clamp(0, 1).numpy()
    mask = masks.detach().cpu()[:, 0].numpy()
    for i in range(n):
        panels: list[tuple[str, np.ndarray | None]] = [("input", None)]
        panels += [(name, m[i].detach().cpu().numpy()) for name, m in maps.items()]
        for j, (title, heat) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(pix[i], interpolation="nearest")
            if heat is not None:
                if np.isnan(heat).all():
                    ax.text(0.5, 0.5, "no map\n(failed or constant)", transform=ax.transAxes, ha="center",
                            va="center", color="red", fontsize=6)
                else:
                    ax.imshow(heat, cmap=cmap, vmin=0.0, vmax=1.0, alpha=0.6, interpolation="nearest")
            if mask[i].any():
                ax.contour(mask[i], levels=[0.5], colors="cyan", linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=7)
        axes[i, 0].set_ylabel(row_labels[i], fontsize=6)
    fig.tight_layout()
    try:
        with atomic_open(out, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100, metadata={"Software": None})
    finally:
        plt.close(fig)

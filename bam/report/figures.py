"""Report figures as PNG bytes (matplotlib, Agg canvas, no pyplot global state).

* :func:`ranking_figure`: one metric, methods as horizontal bars with bootstrap-CI error bars;
  controls (random/edge/center) drawn hatched in grey as chance references.
* :func:`rmcs_curve_figure`: MCS_k vs k per method (SPEC §4.7).
* :func:`gallery_figure`: example images with the object-mask outline and one heatmap per method,
  each heatmap normalised as in SPEC §4.1 (positive part summed over channels, min to P99).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

#: Colour for controls (chance references) and for real methods.
CONTROL_COLOUR = "#9e9e9e"
METHOD_COLOUR = "#3f6fb5"


def _png(fig: Figure, dpi: int = 100) -> bytes:
    """Render ``fig`` to PNG bytes without timestamps or software metadata (stable bytes)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None}, bbox_inches="tight")
    return buf.getvalue()


def heatmap(attr: np.ndarray) -> np.ndarray:
    """SPEC §4.1 steps 1-2 for one map [C,H,W] (:func:`bam.metrics.normalise_maps`), [H, W] in [0, 1].

    A map the metric cannot normalise (constant or non-finite) is all NaN: drawn as "no map".
    """
    import torch

    from bam.metrics import normalise_maps, positive_map

    maps = positive_map(torch.from_numpy(np.ascontiguousarray(attr, dtype=np.float64))[None])
    return normalise_maps(maps)[0][0].numpy()


def ranking_figure(rows: pd.DataFrame, title: str, controls: frozenset[str], direction: str) -> bytes:
    """Horizontal bars of ``value`` per method with CI error bars, best at the top.

    ``rows`` has columns method, value, ci_low, ci_high and (optionally) chance. Controls are
    hatched grey; a dotted vertical line marks the metric's chance level when one is given.
    """
    order = rows.sort_values("value", ascending=(direction == "lower"), na_position="last", kind="stable")
    order = order.iloc[::-1]  # matplotlib draws the first bar at the bottom
    n = len(order)
    fig = Figure(figsize=(7.0, 0.35 * n + 1.3))
    ax = fig.add_subplot(1, 1, 1)
    y = np.arange(n)
    vals = order["value"].to_numpy(dtype=float)
    lo = order["ci_low"].to_numpy(dtype=float)
    hi = order["ci_high"].to_numpy(dtype=float)
    err = np.vstack([np.where(np.isfinite(lo), vals - lo, 0.0), np.where(np.isfinite(hi), hi - vals, 0.0)])
    err = np.clip(np.nan_to_num(err), 0, None)
    is_ctrl = np.array([m in controls for m in order["method"]])
    bars = ax.barh(y, np.nan_to_num(vals), xerr=err, capsize=3, ecolor="#333333",
                   color=[CONTROL_COLOUR if c else METHOD_COLOUR for c in is_ctrl],
                   edgecolor=["#555555" if c else METHOD_COLOUR for c in is_ctrl])
    for bar, c in zip(bars, is_ctrl):
        if c:
            bar.set_hatch("//")
    ax.set_yticks(y, [f"{m} (control)" if c else m for m, c in zip(order["method"], is_ctrl)])
    ax.axvline(0.0, color="#000000", linewidth=0.8)
    if "chance" in order.columns:
        chance = order["chance"].dropna().unique()
        if len(chance) == 1:
            ax.axvline(float(chance[0]), color="#c0392b", linestyle=":", linewidth=1.2, label="chance")
            ax.legend(loc="lower right", fontsize=8)
    arrow = {"higher": " (higher is better)", "lower": " (lower is better)"}.get(direction, "")
    ax.set_xlabel("value" + arrow)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def rmcs_curve_figure(curve: pd.DataFrame, controls: frozenset[str], title: str = "RMCS curve") -> bytes:
    """MCS_k (commonality-k vs commonality-K) against k, one line per method, CI as a band.

    ``curve`` has columns method, k (int-like), value, ci_low, ci_high.
    """
    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    data = curve.assign(_k=curve["k"].astype(int)).sort_values(["method", "_k"], kind="stable")
    methods = sorted(data["method"].unique(), key=lambda m: (m in controls, m))
    tab10, tab20 = colormaps["tab10"], colormaps["tab20"]
    # distinct colours, none of them grey (grey is reserved for the controls)
    colours = [tab10(j) for j in range(10) if j != 7] + [tab20(j) for j in range(1, 20, 2) if j != 15]
    markers = ("x", "+", "^", "v", "s")
    for i, m in enumerate(methods):
        d = data[data["method"] == m]
        k = d["_k"].to_numpy()
        v = d["value"].to_numpy(dtype=float)
        if m in controls:
            ax.plot(k, v, linestyle="--", color=CONTROL_COLOUR, marker=markers[i % len(markers)], linewidth=1,
                    label=f"{m} (control)")
            continue
        colour = colours[i % len(colours)]
        ax.plot(k, v, marker="o", markersize=3, color=colour, label=m)
        lo, hi = d["ci_low"].to_numpy(dtype=float), d["ci_high"].to_numpy(dtype=float)
        if np.isfinite(lo).all() and np.isfinite(hi).all():
            ax.fill_between(k, lo, hi, color=colour, alpha=0.12, linewidth=0)
    ax.axhline(0.0, color="#000000", linewidth=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("k (number of scene classes sharing the common object)")
    ax.set_ylabel("MCS_k")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if methods:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return _png(fig)


def gallery_figure(images: np.ndarray, masks: np.ndarray | None, attrs: Mapping[str, np.ndarray],
                   title: str, labels: Sequence[str] | None = None) -> bytes:
    """Rows = example images, columns = the image then one SPEC §4.1 heatmap per method.

    ``images`` [E,3,H,W] in [0,1]; ``masks`` [E,1,H,W] (outline drawn in the image column) or None;
    ``attrs`` method -> [E,C,H,W] attributions of the same images.
    """
    methods = list(attrs)
    e = images.shape[0]
    cols = 1 + len(methods)
    fig = Figure(figsize=(1.45 * cols, 1.5 * e + 0.6))
    for i in range(e):
        ax = fig.add_subplot(e, cols, i * cols + 1)
        ax.imshow(np.clip(np.transpose(images[i], (1, 2, 0)), 0, 1), interpolation="nearest")
        if masks is not None:
            ax.contour(masks[i, 0], levels=[0.5], colors=["#ffeb3b"], linewidths=0.8)
        ax.set_xticks([])
        ax.set_yticks([])
        if i == 0:
            ax.set_title("image", fontsize=7)
        if labels is not None:
            ax.set_ylabel(str(labels[i]), fontsize=6)
        for j, m in enumerate(methods):
            ax = fig.add_subplot(e, cols, i * cols + 2 + j)
            heat = heatmap(attrs[m][i])
            ax.imshow(np.nan_to_num(heat, nan=0.0), cmap="inferno", vmin=0, vmax=1, interpolation="nearest")
            if np.isnan(heat).all():
                ax.text(0.5, 0.5, "no map", transform=ax.transAxes, ha="center", va="center", color="#e53935",
                        fontsize=6)
            if masks is not None:
                ax.contour(masks[i, 0], levels=[0.5], colors=["#4fc3f7"], linewidths=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(m, fontsize=7)
    fig.suptitle(title, fontsize=9)
    return _png(fig, dpi=90)

#!/usr/bin/env python
"""Why does invertible_projection's MCS change with the training seed? Numbers per model set (issue 21).

usage: python scripts/diagnose_invertible.py DATA MODELS_ROOT [MODELS_ROOT ...] [--images 200] [--known]

Each MODELS_ROOT holds ``invertible-obj`` and ``invertible-scene`` (a ``bam run`` models folder).
On the first N MCS images (the evaluation's selection, val composites) with the predicted class as
target, per model: the validity rate; the median projection distance ``||x - x_p||`` and the first-
order input-space boundary distance ``|g(x)| / ||grad g(x)||`` (g = f_c - f_j*) for comparison;
the exactness of the inverse at the projected point (``||T(x_p) - T(x)||`` / feature distance, 1
when exact; the tie gap; the reconstruction error); the share of x_p's pixels outside [0, 1]; the
*grid share* of E = x - x_p (energy of its component that repeats with the 2**stages-pixel period
of the squeezes, 1 = a fixed tiled pattern); the share of the metric's map M = sum_c max(E_c, 0)
inside the object mask (beside the mask's area share) and the positive share of |E| inside it;
and for both methods the MCS (and the mean g of each model) on the images both models classify
correctly, with E, with -E, with |E| and with E minus its grid component. ``--known`` adds the
same numbers for a model whose answer is known by construction: an i-RevNet with identity
couplings (T linear and orthogonal up to the normalisation), for which E is exactly (m / ||d||^2)
times one tiled pattern per class pair: grid share 1, and ||T(x_p) - T(x)|| / feature distance = 1.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def _grid_share(e: Tensor, period: int) -> Tensor:
    """Per image: energy share of the component of ``e`` that is periodic with ``period`` pixels."""
    n, c, h, w = e.shape
    tiles = e.view(n, c, h // period, period, w // period, period)
    mean = tiles.mean(dim=(2, 4), keepdim=True).expand_as(tiles).reshape(n, c, h, w)
    return (mean.flatten(1).pow(2).sum(1) / e.flatten(1).pow(2).sum(1).clamp_min(1e-30))


def _without_grid(e: Tensor, period: int) -> Tensor:
    """``e`` minus its ``period``-periodic component (the tiled mean over the tiles)."""
    n, c, h, w = e.shape
    tiles = e.view(n, c, h // period, period, w // period, period)
    return (tiles - tiles.mean(dim=(2, 4), keepdim=True)).reshape(n, c, h, w)


def _first_order_distance(model: Any, x: Tensor, c: Tensor, j: Tensor) -> Tensor:
    """|g(x)| / ||grad_x g(x)||, g = f_c - f_j: the distance to the boundary of g's linearisation at x."""
    xq = x.clone().requires_grad_(True)
    out = model(xq)
    g = out.gather(1, c.view(-1, 1)).squeeze(1) - out.gather(1, j.view(-1, 1)).squeeze(1)
    (grad,) = torch.autograd.grad(g.sum(), xq)
    return g.detach().abs() / grad.flatten(1).norm(dim=1).clamp_min(1e-30)


def _per_model(model: Any, x: Tensor, masks: Tensor) -> dict[str, Any]:
    """Every number of one model on the images, and its maps."""
    from bam.methods import attribute_full
    from bam.metrics.object_attribution import object_attribution, positive_map

    with torch.no_grad():
        logits = model(x)
        z = model.features(x)
    c = logits.argmax(1)
    out: dict[str, Any] = {"pred": c}
    for name in ("invertible_projection", "invertible_taylor"):
        res = attribute_full(name, model, x, c)
        e = res.attributions
        out[name] = {"e": e, "valid": res.valid, "extras": res.extras}
        variants = (("E", e), ("-E", -e), ("|E|", e.abs()), ("E-grid", _without_grid(e, 2 ** len(model.stages))))
        out[name]["g"] = {s: object_attribution(v, masks) for s, v in variants}
        m = positive_map(e)
        inside = (m * masks[:, 0]).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1e-30)
        out[name]["mask_energy_share"] = inside
        inner = e * masks
        out[name]["positive_inside"] = inner.clamp(min=0).flatten(1).sum(1) / inner.abs().flatten(1).sum(1).clamp_min(
            1e-30)
    proj = out["invertible_projection"]
    xp = x - proj["e"]
    with torch.no_grad():
        zp = model.features(xp)
    j = proj["extras"]["boundary_class"].long()
    out["inverse_exactness"] = (zp - z).flatten(1).norm(dim=1) / proj["extras"]["feature_distance"].clamp_min(1e-30)
    out["out_of_range"] = ((xp < 0) | (xp > 1)).flatten(1).float().mean(1)
    out["first_order_distance"] = _first_order_distance(model, x, c, j)
    out["grid_share"] = _grid_share(proj["e"], 2 ** len(model.stages))
    return out


def _med(t: Tensor) -> float:
    """Median of the finite entries."""
    v = [float(a) for a in t.flatten() if torch.isfinite(a)]
    return statistics.median(v) if v else float("nan")


def _report(tag: str, obj: dict[str, Any], scene: dict[str, Any], labels: tuple[Tensor, Tensor],
            masks: Tensor) -> None:
    """Print one model set's numbers (``labels``: object and scene labels of the composites)."""
    area = float(masks.flatten(1).mean(1).mean())
    for role, r in (("obj", obj), ("scene", scene)):
        p = r["invertible_projection"]
        ex = p["extras"]
        t = r["invertible_taylor"]["extras"]
        print(f"{tag} {role:<5} valid {float(p['valid'].float().mean()):.3f}  ||x-x_p|| median "
              f"{_med(ex['projection_distance']):.2f}  first-order input distance median "
              f"{_med(r['first_order_distance']):.3f}  feature distance median {_med(ex['feature_distance']):.2f}")
        print(f"{tag} {role:<5} ||T(x_p)-T(x)||/feature distance median {_med(r['inverse_exactness']):.6f}  "
              f"tie gap max {float(ex['logit_gap_after'].max()):.1e}  reconstruction max "
              f"{float(ex['reconstruction_error'].max()):.1e}  x_p pixels outside [0,1] "
              f"{float(r['out_of_range'].mean()):.3f}  taylor linearisation error median "
              f"{_med(t['linearization_error']):.3f}")
        print(f"{tag} {role:<5} grid share of E median {_med(r['grid_share']):.3f}  mask energy share "
              f"projection {_med(p['mask_energy_share']):.3f} taylor "
              f"{_med(r['invertible_taylor']['mask_energy_share']):.3f} (mask area {area:.3f})  positive share of "
              f"|E| inside the mask projection {_med(p['positive_inside']):.3f} taylor "
              f"{_med(r['invertible_taylor']['positive_inside']):.3f}")
    both = (obj["pred"] == labels[0]) & (scene["pred"] == labels[1])
    for name in ("invertible_projection", "invertible_taylor"):
        ok = both & obj[name]["valid"] & scene[name]["valid"]
        cells = []
        for s in ("E", "-E", "|E|", "E-grid"):
            go, gs = obj[name]["g"][s], scene[name]["g"][s]
            keep = ok & torch.isfinite(go - gs)
            cells.append(f"MCS({s}) {float((go - gs)[keep].mean()):+.3f} (g {float(go[keep].mean()):.3f} - "
                         f"{float(gs[keep].mean()):.3f})")
        print(f"{tag} {name:<22} n {int(ok.sum())}  " + "  ".join(cells))


def _identity_couplings(model: Any) -> Any:
    """The same network with every coupling branch zeroed (F = G = 0): T is linear."""
    with torch.no_grad():
        for mod in model.stages.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.zero_()
                mod.bias.zero_()
    return model


def main() -> None:
    """Load data and model sets, print the numbers."""
    from bam.data import open_dataset
    from bam.evaluate.plan import select_ids
    from bam.models import create_model, load

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", type=Path)
    ap.add_argument("models", type=Path, nargs="+")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--known", action="store_true", help="also the identity-coupling model (known answer)")
    args = ap.parse_args()
    data = open_dataset(args.data)
    sub = data.subset("obj", split="val")  # the composites, as MCS selects them
    ids = select_ids(data, "obj", args.images, 0)
    pos = {str(i): n for n, i in enumerate(sub.table["image_id"].astype(str))}
    x, labels, masks = sub.load_batch([pos[i] for i in ids])
    scene = data.subset("scene", split="val")  # the same composites, labelled by scene
    spos = {str(i): n for n, i in enumerate(scene.table["image_id"].astype(str))}
    _, scene_labels, _ = scene.load_batch([spos[i] for i in ids])
    torch.manual_seed(0)
    for root in args.models:
        models = {r: load(root / f"invertible-{r}").eval() for r in ("obj", "scene")}
        _report(root.parent.name or str(root), *(_per_model(models[r], x, masks) for r in ("obj", "scene")),
                (labels, scene_labels), masks)
    if args.known:
        card = load(args.models[0] / "invertible-obj").card
        known = [_identity_couplings(create_model(card.arch, num_classes=len(card.class_names),
                                                  image_size=card.image_size, **dict(card.arch_kwargs))).eval()
                 for _ in range(2)]
        res = [_per_model(m, x, masks) for m in known]
        _report("known", res[0], res[1], (res[0]["pred"], res[1]["pred"]), masks)


if __name__ == "__main__":
    main()

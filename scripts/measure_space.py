"""MCS of every model-space method in pixel space and in model space (SPEC §5.8; docs/fidelity.md).

Runs each method on the same val composites with an obj and a scene model, in both attribution
spaces, and prints per method and space: MCS with a 95% bootstrap CI over images, the paired
difference model - pixel with its CI (same images, same seeds), images used, constant maps, and for
guided feature inversion the number of channel weights left > 0 (0 = an all-zero mask).

    python scripts/measure_space.py --data runs/data --obj runs/models/obj --scene runs/models/scene \
        --images 200 --params configs/eval/default.yaml --out space.csv
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bam._io import write_csv  # noqa: E402
from bam.data import open_dataset  # noqa: E402
from bam.methods import attribute_full, get_info  # noqa: E402
from bam.methods._space import to_space  # noqa: E402
from bam.metrics import object_attribution  # noqa: E402
from bam.models import load  # noqa: E402

METHODS = ("gradient", "grad_x_input", "smoothgrad", "integrated_gradients", "ig_smoothgrad", "guided_backprop",
           "gradcam", "guided_gradcam", "deeplift", "guided_feature_inversion", "boundary_ig", "boundary_gradient")


def _params(path: str | None) -> dict[str, dict[str, Any]]:
    """method -> parameter overrides from an eval config's method_params (none: paper defaults)."""
    if not path:
        return {}
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return {k: dict(v or {}) for k, v in dict(data.get("method_params") or {}).items()}


def _records(args: argparse.Namespace, overrides: Mapping[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per (image, method, space, role): g, valid and the method's extras."""
    data = open_dataset(args.data)
    obj_sub, scene_sub = data.subset("obj", "val"), data.subset("scene", "val")
    order = np.random.default_rng(args.seed).permutation(len(obj_sub))[: args.images]
    models = {"obj": load(args.obj).eval(), "scene": load(args.scene).eval()}
    rows: list[dict[str, Any]] = []
    for start in range(0, len(order), args.batch):
        idx = [int(i) for i in order[start:start + args.batch]]
        x, y_obj, m = obj_sub.load_batch(idx)
        _x2, y_scene, _m2 = scene_sub.load_batch(idx)
        labels = {"obj": y_obj, "scene": y_scene}
        for role, model in models.items():
            with torch.no_grad():
                pred = model(x).argmax(1)
            for space in args.spaces:
                view = to_space(model, x, m, space, args.mask_mode)
                for name in args.methods:
                    params = {**overrides.get(name, {})}
                    if get_info(name).stochastic:
                        params["seed"] = args.seed + start
                    res = attribute_full(name, view.model, view.inputs, pred, **params)
                    g = object_attribution(res.attributions, view.masks)
                    valid = res.valid if res.valid is not None else torch.ones_like(pred, dtype=torch.bool)
                    for j, i in enumerate(idx):
                        rows.append({"image": i, "method": name, "space": space, "role": role,
                                     "correct": bool(pred[j] == labels[role][j]), "valid": bool(valid[j]),
                                     "g": float(g[j]), **{k: float(v[j]) for k, v in res.extras.items()}})
        print(f"{min(start + args.batch, len(order))}/{len(order)} images", flush=True)
    return pd.DataFrame(rows)


def _ci(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """95% percentile bootstrap CI of the mean."""
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def _per_image(rec: pd.DataFrame, method: str, space: str) -> pd.Series:
    """g(obj) - g(scene) per image where both models are right and both maps are scored."""
    r = rec[(rec.method == method) & (rec.space == space)]
    piv = r.pivot_table(index="image", columns="role", values="g", aggfunc="first")
    ok = r.groupby("image").apply(lambda d: bool(d.correct.all() and d.valid.all()), include_groups=False)
    piv = piv[ok.reindex(piv.index).fillna(False).astype(bool)].dropna()
    return piv["obj"] - piv["scene"]


def summarise(rec: pd.DataFrame, spaces: list[str], n_boot: int) -> pd.DataFrame:
    """MCS per (method, space) with CIs, and the paired difference between the first two spaces."""
    out = []
    for method in rec.method.unique():
        diffs = {s: _per_image(rec, method, s) for s in spaces}
        for s in spaces:
            r = rec[(rec.method == method) & (rec.space == s)]
            row = {"method": method, "space": s, "mcs": float(diffs[s].mean()), "n_used": len(diffs[s]),
                   "constant_maps": int((r.valid & r.g.isna()).sum()), "failed": int((~r.valid).sum())}
            row["ci_low"], row["ci_high"] = _ci(diffs[s].to_numpy(), n_boot, 0)
            if "active_weights" in r:
                row["active_weights_median"] = float(r.active_weights.median())
                row["all_zero_masks"] = int((r.active_weights == 0).sum())
            out.append(row)
        if len(spaces) == 2:
            both = pd.concat([diffs[spaces[0]], diffs[spaces[1]]], axis=1, join="inner").dropna()
            paired = (both.iloc[:, 1] - both.iloc[:, 0]).to_numpy()
            lo, hi = _ci(paired, n_boot, 1)
            out.append({"method": method, "space": f"{spaces[1]}-{spaces[0]}", "mcs": float(paired.mean()),
                        "n_used": len(paired), "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, compute, print the table, write records and the summary."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--obj", required=True)
    ap.add_argument("--scene", required=True)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--spaces", default="pixel,model")
    ap.add_argument("--mask-mode", default="bilinear")
    ap.add_argument("--params", default=None, help="an eval config whose method_params override the defaults")
    ap.add_argument("--set", action="append", default=[], help="METHOD.PARAM=JSON, e.g. smoothgrad.samples=8")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="CSV of the summary (records beside it as *.records.csv)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.methods = [m for m in args.methods.split(",") if m]
    args.spaces = [s for s in args.spaces.split(",") if s]
    overrides = _params(args.params)
    for item in args.set:
        key, _, value = item.partition("=")
        method, _, param = key.partition(".")
        overrides.setdefault(method, {})[param] = json.loads(value)
    rec = _records(args, overrides)
    table = summarise(rec, args.spaces, args.bootstrap)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(4).to_string(index=False))
    if args.out:
        write_csv(Path(args.out), table)
        write_csv(Path(args.out).with_suffix(".records.csv"), rec)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

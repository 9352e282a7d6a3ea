#!/usr/bin/env python
"""Benchmark: bam's fast boundary search (DeepFool start) vs the previous default and the reference.

On a trained model and N validation images (seeded choice), three searches run on the same images:

* ``fast``: the DeepFool start with projection polish (``bam.methods.boundary.FAST_SEARCH`` over
  the defaults; what configs/eval/default.yaml selects);
* ``previous_default``: bam's defaults before the DeepFool start (grid PGD with early exit, radius
  skipping 0.8, CW only where PGD failed, bisection);
* ``reference``: the `paper` defaults = the reference procedure of Wang et al. (grid PGD, CW on
  every image, keep the closer point, no skipping; plus bam's bisection).

Reported per search: gradient evaluations (forward+backward passes) and forward-only passes per
image, success, the median distance, the origin of the points (found_by) and CPU seconds; and for
``fast`` against each of the others, on images both solved: the median of the per-image distance
ratios, the ratio of the median distances, the fraction of images at least as close and the worst
ratio. Counts are exact; CPU seconds move with the machine's load.

    python -m bam build-data --recipe synthetic --out runs/data
    python -m bam train --data runs/data --role scene --out runs/models/scene
    PYTHONPATH=. python scripts/bench_boundary.py --model runs/models/scene --data runs/data --images 100

Prints a markdown table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from bam._io import write_json
from bam.config import from_dict, params_of
from bam.methods._boundary_search import FOUND_BY, SearchResult, boundary_search
from bam.methods.boundary import FAST_SEARCH, BoundaryGradientParams, search_config

VARIANTS: dict[str, dict[str, Any]] = {
    "fast": dict(FAST_SEARCH),
    "previous_default": {"skip_factor": 0.8, "cw": "failed"},
    "reference": {},
}


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="checkpoint directory (bam train --out)")
    ap.add_argument("--data", type=Path, required=True, help="built dataset (bam build-data --out)")
    ap.add_argument("--subset", default="", help="subset to draw images from (default: the model's role)")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0, help="image choice and search seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--micro-batch", type=int, default=64)
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                    help="override a search parameter of every variant (int/float parsed), e.g. attack_steps=10")
    ap.add_argument("--out", type=Path, default=Path("bench_boundary.json"))
    return ap.parse_args()


def _parse(items: list[str]) -> dict[str, Any]:
    """``key=value`` strings -> dict (ints, floats and comma lists of floats parsed)."""
    out: dict[str, Any] = {}
    for item in items:
        key, _, text = item.partition("=")
        value: Any = text
        for cast in (int, float):
            try:
                value = cast(text)
                break
            except ValueError:
                continue
        if isinstance(value, str) and "," in value:
            value = [float(v) for v in value.split(",")]
        out[key] = value
    return out


def summary(res: SearchResult, cpu_s: float) -> dict[str, Any]:
    """Counts and distances of one search."""
    ok = res.success
    codes = {v: k for k, v in FOUND_BY.items()}
    return {
        "gradient_evals_per_image": round(float(res.gradient_evals.float().mean()), 2),
        "gradient_evals_median": float(res.gradient_evals.float().median()),
        "forward_evals_per_image": round(float(res.forward_evals.float().mean()), 2),
        "success": int(ok.sum()), "images": int(ok.numel()),
        "distance_median": float(res.distance[ok].median()) if ok.any() else None,
        "found_by": {codes[int(c)]: int((res.found_by == c).sum()) for c in res.found_by.unique()},
        "cpu_s": round(cpu_s, 1),
    }


def compare(a: SearchResult, b: SearchResult) -> dict[str, Any]:
    """Distances of ``a`` relative to ``b`` on the images both solved."""
    both = a.success & b.success
    if not both.any():
        return {"both_success": 0}
    ratio = a.distance[both] / b.distance[both]
    return {"both_success": int(both.sum()),
            "median_ratio": round(float(ratio.median()), 4),
            "ratio_of_medians": round(float(a.distance[both].median() / b.distance[both].median()), 4),
            "at_least_as_close": round(float((ratio <= 1 + 1e-6).float().mean()), 3),
            "worst_ratio": round(float(ratio.max()), 4),
            "gradient_eval_ratio": round(float(b.gradient_evals.sum()) / max(1.0, float(a.gradient_evals.sum())), 1)}


def main() -> None:
    """Run the searches on the same images; print a table and write JSON."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    from bam.data import open_dataset
    from bam.models import load

    model = load(args.model)
    role = str(getattr(model, "card").role)  # noqa: B009 (set by bam.models.load)
    data = open_dataset(args.data)
    sub = data.subset(args.subset or role, split="val")
    pick = torch.randperm(len(sub), generator=torch.Generator().manual_seed(args.seed))[:args.images]
    x, _, _ = sub.load_batch(pick.tolist())
    overrides = _parse(args.param)
    out: dict[str, Any] = {"model": str(args.model), "role": role, "images": int(x.shape[0]),
                           "image_size": int(x.shape[-1]), "threads": args.threads, "seed": args.seed,
                           "overrides": overrides}
    results: dict[str, SearchResult] = {}
    for name in [v for v in args.variants.split(",") if v]:
        typed = from_dict(BoundaryGradientParams, {**VARIANTS[name], **overrides})
        params = params_of(typed)
        cfg = search_config(typed)
        t0 = time.process_time()
        results[name] = boundary_search(model, x, cfg, micro_batch=args.micro_batch, seed=args.seed)
        out[name] = {"params": {k: params[k] for k in sorted({**VARIANTS[name], **overrides})},
                     **summary(results[name], time.process_time() - t0)}
        print(f"{name}: {json.dumps(out[name])}", flush=True)
    for other in ("previous_default", "reference"):
        if "fast" in results and other in results:
            out[f"fast_vs_{other}"] = compare(results["fast"], results[other])
    write_json(args.out, out)
    print(table(out))
    print(f"\nwrote {args.out}")


def table(out: dict[str, Any]) -> str:
    """The markdown summary of a run."""
    lines = [f"\nboundary search on {out['images']} val images of the {out['role']} model "
             f"({out['image_size']} px), {out['threads']} thread(s)\n",
             "| search | grad evals / image | forward evals / image | success | median distance | found_by | CPU s |",
             "|---|---|---|---|---|---|---|"]
    for name in VARIANTS:
        if name in out:
            r = out[name]
            lines.append(f"| {name} | {r['gradient_evals_per_image']} | {r['forward_evals_per_image']} | "
                         f"{r['success']}/{r['images']} | {r['distance_median']:.4f} | {r['found_by']} | "
                         f"{r['cpu_s']} |")
    rows = [k for k in ("fast_vs_previous_default", "fast_vs_reference") if k in out]
    if rows:
        lines += ["", "| fast vs | median of per-image ratios | ratio of medians | at least as close | worst | "
                      "gradient evals saved |", "|---|---|---|---|---|---|"]
        for k in rows:
            c = out[k]
            lines.append(f"| {k[8:]} | {c.get('median_ratio')} | {c.get('ratio_of_medians')} | "
                         f"{c.get('at_least_as_close')} | {c.get('worst_ratio')} | {c.get('gradient_eval_ratio')}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

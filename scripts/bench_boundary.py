"""Benchmark: gradient evaluations of the early-exit boundary search vs the fixed-grid reference.

The reference (Wang et al. 2022) runs PGD at every epsilon of the grid for every image and keeps
the closest misclassified point (``early_exit=False``); bam's search lets an image leave after the
first epsilon that succeeds. All use the same random starts, the same bisection and no CW, so
the comparison isolates the early exit (and, in the third variant, the first-order level
skipping). The model is a small conv net, either trained for a few seconds on a procedural
4-class stripe task (``--model trained``, default) or random with standardised logits
(``--model random``).

    .venv/bin/python scripts/bench_boundary.py --images 64 --size 32 --threads 1

Prints one JSON object: gradient evaluations (total and per image), the ratio, boundary distances
(mean, median, and the fraction of images where early exit is at least as close), success counts
and wall times.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
from torch import nn

from bam.methods._boundary_search import SearchConfig, boundary_search
from bam.methods.boundary import PIXEL_EPSILONS


def stripes(n: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of oriented sinusoidal stripes (4 orientations = 4 classes) plus noise, in [0, 1]."""
    labels = torch.randint(0, 4, (n,), generator=gen)
    angle = labels.float() * math.pi / 4 + (torch.rand(n, generator=gen) - 0.5) * 0.3
    freq = 0.25 + 0.15 * torch.rand(n, generator=gen)
    phase = torch.rand(n, generator=gen) * 2 * math.pi
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    proj = torch.cos(angle).view(-1, 1, 1) * xx + torch.sin(angle).view(-1, 1, 1) * yy
    img = 0.5 + 0.3 * torch.sin(freq.view(-1, 1, 1) * proj + phase.view(-1, 1, 1))
    colour = 0.6 + 0.4 * torch.rand(n, 3, 1, 1, generator=gen)
    x = img.unsqueeze(1) * colour + 0.08 * torch.randn(n, 3, size, size, generator=gen)
    return x.clamp(0, 1), labels


def small_cnn() -> nn.Module:
    """Conv(3->16) -> Conv(16->32, stride 2) -> Conv(32->32, stride 2) -> GAP -> Linear(32->4)."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 4))


def make_model(kind: str, size: int, seed: int) -> nn.Module:
    """A trained (few hundred SGD steps on stripes) or random (standardised logits) small CNN."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    net = small_cnn()
    if kind == "random":
        with torch.no_grad():
            z = net(torch.rand(256, 3, size, size, generator=gen))
            scale = (z.std(0) / 2).view(-1, 1)
            net[-1].weight /= scale
            net[-1].bias.copy_((net[-1].bias - z.mean(0)) / scale.view(-1))
        return net.eval()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(300):
        x, y = stripes(64, size, gen)
        loss = nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def main() -> None:
    """Run both searches on the same images and print the comparison as JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("trained", "random"), default="trained")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--micro-batch", type=int, default=64)
    ap.add_argument("--skip", type=float, default=0.8, help="skip_factor of the third variant")
    ap.add_argument("--eps-scale", type=float, default=1.0,
                    help="multiply the default pixel-space grid (bam's defaults) by this factor")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    grid = tuple(e * args.eps_scale for e in PIXEL_EPSILONS)
    model = make_model(args.model, args.size, args.seed)
    x, y = stripes(args.images, args.size, torch.Generator().manual_seed(args.seed + 1))
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    out: dict[str, object] = {"model": args.model, "images": args.images, "size": args.size,
                              "clean_accuracy": accuracy, "skip_factor": args.skip,
                              "epsilons": [round(e, 5) for e in grid], "steps": args.steps}
    runs = {}
    variants = (("fixed_grid", False, 0.0), ("early_exit", True, 0.0), ("early_exit_skip", True, args.skip))
    for name, early, skip in variants:
        cfg = SearchConfig(epsilons=grid, steps=args.steps, early_exit=early, skip_factor=skip, cw="off",
                           bisection_steps=10)
        t0 = time.perf_counter()
        res = boundary_search(model, x, cfg, micro_batch=args.micro_batch, seed=args.seed)
        wall = time.perf_counter() - t0
        runs[name] = res
        ok = res.success
        out[name] = {
            "gradient_evals_total": int(res.gradient_evals.sum()),
            "gradient_evals_per_image": float(res.gradient_evals.float().mean()),
            "forward_evals_per_image": float(res.forward_evals.float().mean()),
            "success": int(ok.sum()),
            "distance_mean": float(res.distance[ok].mean()) if ok.any() else None,
            "distance_median": float(res.distance[ok].median()) if ok.any() else None,
            "wall_s": round(wall, 2),
        }
    b = runs["fixed_grid"]
    for name in ("early_exit", "early_exit_skip"):
        a = runs[name]
        both = a.success & b.success
        cmp: dict[str, object] = {
            "gradient_eval_ratio_fixed_over_this": int(b.gradient_evals.sum()) / max(1, int(a.gradient_evals.sum())),
            "both_success": int(both.sum()),
        }
        if both.any():
            cmp["at_least_as_close_fraction"] = float((a.distance[both] <= b.distance[both] + 1e-6).float().mean())
            cmp["distance_ratio_median_this_over_fixed"] = float((a.distance[both] / b.distance[both]).median())
            cmp["distance_ratio_max_this_over_fixed"] = float((a.distance[both] / b.distance[both]).max())
        out[f"{name}_vs_fixed_grid"] = cmp
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Throughput of the attribution methods against the model's raw forward+backward speed.

For each method: images/s batched (the bam way), images/s one image at a time with one row per
forward/backward (how the original BAM code ran, through the PAIR saliency library), passes per
image (MethodInfo.passes), and the efficiency

    efficiency = images/s x passes / raw images/s

where "raw" is the forward+backward throughput of the same model at the same batch size on the
same device. Targets: single-pass methods >= 0.8; expanding methods >= 0.8 (i.e. >= 80% of
raw / passes images/s).

    python scripts/bench.py                                   # CPU: small_resnet at 64 px
    python scripts/bench.py --arch resnet50 --image-size 224 --batch 64 --device cuda   # GPU
    python scripts/bench.py --vs-captum --threads 1           # bam vs captum, ResNet-18 at 64 px, batch 32

``--vs-captum`` compares bam with captum's batched equivalents in one interleaved run (see
scripts/_vs_captum.py). Prints a markdown table and writes a CSV (--out).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch

from bam._device import peak_memory_mb, resolve_device
from bam._io import write_csv
from bam.methods import attribute, get_info, list_methods
from bam.models import create_model, list_models
from bam.models.protocols import is_invertible


def _sync(device: torch.device) -> None:
    """Wait for queued device work (CUDA timings)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """Best wall time of ``repeats`` calls of ``fn`` (after one warm-up call)."""
    fn()
    best = float("inf")
    for _ in range(max(1, repeats)):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def raw_forward_backward(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor) -> None:
    """One forward and one backward to the input: the unit every gradient method pays per row."""
    xi = x.detach().requires_grad_(True)
    out = model(xi)
    (g,) = torch.autograd.grad(out.gather(1, t.view(-1, 1)).sum(), xi)
    del g


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--arch", default=None, help=f"one of {', '.join(list_models())} (default: small_resnet; "
                                                 "resnet18 with --vs-captum)")
    p.add_argument("--image-size", type=int, default=64, help="input side in pixels (224 for resnet50 on GPU)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=32, help="images per batched call (and raw batch size)")
    p.add_argument("--micro-batch", type=int, default=-1,
                   help="rows per forward/backward of expanding methods; -1 = --batch (same rows per pass as "
                        "the raw measurement), 0 = bam's automatic default")
    p.add_argument("--loop-images", type=int, default=4, help="images timed in the one-at-a-time loop")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = torch default)")
    p.add_argument("--repeats", type=int, default=2, help="timed repeats (best is kept)")
    p.add_argument("--methods", default="", help="comma-separated method names (default: all that fit the arch)")
    p.add_argument("--param", action="append", default=[], metavar="METHOD.KEY=VALUE",
                   help="override a method parameter, e.g. ig_smoothgrad.samples=5 (int/float parsed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("bench.csv"))
    p.add_argument("--vs-captum", action="store_true",
                   help="bam vs captum's batched equivalents (gradient, grad_x_input, gradcam, IG 25, SmoothGrad 25, "
                        "guided backprop, DeepLIFT), interleaved rounds, plus one-pass efficiency vs raw")
    p.add_argument("--rounds", type=int, default=7, help="interleaved rounds of --vs-captum (medians reported)")
    p.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto",
                   help="--vs-captum timer: CPU time of this process (auto: on CPU with 1 thread) or wall time")
    args = p.parse_args()
    args.arch = args.arch or ("resnet18" if args.vs_captum else "small_resnet")
    return args


def _overrides(items: list[str]) -> dict[str, dict[str, object]]:
    """``method.key=value`` strings -> {method: {key: value}} (ints and floats parsed)."""
    out: dict[str, dict[str, object]] = {}
    for item in items:
        lhs, _, text = item.partition("=")
        method, _, key = lhs.partition(".")
        value: object = text
        for cast in (int, float):
            try:
                value = cast(text)
                break
            except ValueError:
                continue
        out.setdefault(method, {})[key] = value
    return out


def main() -> None:
    """Run the benchmark and print/write the table."""
    args = parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    model = create_model(args.arch, num_classes=args.num_classes, image_size=args.image_size).to(device).eval()
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.rand(args.batch, 3, args.image_size, args.image_size, generator=gen).to(device)
    with torch.no_grad():
        t = model(x).argmax(1)
    if args.vs_captum:
        vs_captum(args, model, x, t, device)
        return
    invertible = is_invertible(model)
    names = [n for n in args.methods.split(",") if n] or [
        n for n in list_methods()
        if ("invertible" not in get_info(n).requires or invertible)
        and ("conv_layer" not in get_info(n).requires or getattr(model, "gradcam_layer", None) is not None)]
    overrides = _overrides(args.param)

    rows = []
    for name in names:
        info = get_info(name)
        # raw throughput re-measured next to each method: shared machines drift over a run
        raw_ips = args.batch / timed(lambda: raw_forward_backward(model, x, t), device, args.repeats)
        params = dict(overrides.get(name, {}))
        if args.micro_batch:
            params["micro_batch"] = args.batch if args.micro_batch < 0 else args.micro_batch
        if info.stochastic:
            params["seed"] = args.seed
        passes = info.passes({**info.defaults, **params})
        batched_s = timed(lambda name=name, params=params: attribute(name, model, x, t, **params), device,
                          args.repeats)
        ips = args.batch / batched_s
        k = min(args.loop_images, args.batch)
        loop_params = {**params, "micro_batch": 1}

        def loop(k: int = k, name: str = name, loop_params: dict = loop_params) -> None:
            for i in range(k):
                attribute(name, model, x[i:i + 1], t[i:i + 1], **loop_params)

        loop_ips = k / timed(loop, device, 1)
        eff = ips * passes / raw_ips if passes else float("nan")
        rows.append({"method": name, "passes_per_image": passes, "images_per_s": round(ips, 3),
                     "loop_images_per_s": round(loop_ips, 3), "speedup_vs_loop": round(ips / loop_ips, 2),
                     "raw_images_per_s": round(raw_ips, 1), "efficiency_vs_raw": round(eff, 3),
                     "target_met": (eff >= 0.8) if passes else None,
                     "params": ",".join(f"{k_}={v}" for k_, v in params.items() if k_ not in ("seed", "micro_batch"))})
        print(f"{name}: {ips:.2f} img/s, {passes} passes, efficiency {eff:.2f}", flush=True)
    frame = pd.DataFrame(rows)
    write_csv(args.out, frame)
    print(f"\narch {args.arch} @ {args.image_size}px, batch {args.batch}, device {device}, "
          f"threads {torch.get_num_threads()}, peak memory {peak_memory_mb(device):.0f} MiB\n")
    print(markdown_table(frame))
    print(f"\nwrote {args.out}")


def vs_captum(args: argparse.Namespace, model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor,
              device: torch.device) -> None:
    """The --vs-captum mode: one interleaved run, a table of ratios, a CSV."""
    from _vs_captum import run

    clock = args.clock if args.clock != "auto" else ("cpu" if device.type == "cpu" and torch.get_num_threads() == 1
                                                     else "wall")
    frame = pd.DataFrame(run(model, x, t, args.rounds, clock))
    write_csv(args.out, frame)
    print(f"\nbam vs captum: arch {args.arch} @ {args.image_size}px (random weights), batch {args.batch}, device "
          f"{device}, threads {torch.get_num_threads()}, {args.rounds} interleaved rounds, clock {clock}; "
          f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}\n")
    print(markdown_table(frame.fillna("")))
    print("\nbam_over_captum > 1: bam faster. efficiency = bam images/s x passes / raw forward+backward images/s "
          "(gradcam: raw = forward + backward to its layer). max_rel_diff: max |bam - captum| / max |bam| "
          "(IG, SmoothGrad: different quadrature / noise by design; DeepLIFT: captum is inexact on ResNets).")
    print(f"wrote {args.out}")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table of ``frame`` (no extra dependency)."""
    cells = [[str(c) for c in frame.columns]] + [["" if v is None else str(v) for v in row]
                                                 for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(r) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("---" for _ in frame.columns) + "|")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

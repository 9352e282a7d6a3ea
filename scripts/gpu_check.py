#!/usr/bin/env python
"""One-device performance check: methods on ResNet-50 at 224 px, the trainer, the `paper` protocol's cost.

Run through ``scripts/gpu_check.sh`` (fails fast without CUDA). On one CUDA device, in a few minutes:

1. per method (every registered method that runs on a ResNet-50; the invertible ones on the
   i-RevNet of configs/train/paper_iresnet.yaml), at its ``paper`` defaults and the default
   micro-batch: images/s in fp32, images/s under bf16 autocast + channels_last, the max |difference|
   between the two maps (absolute, and relative to max |fp32 map|), and peak memory;
2. the trainer's images/s (``bam.train.fit``, configs/train/paper.yaml: ResNet-50 at 224, bf16 +
   channels_last) for one epoch on a small synthetic build;
3. the extrapolated wall time of the full `paper` evaluation (configs/eval/paper.yaml: MCS on
   10,000 composites for the obj and scene models, IDR on 10,000 scene-only images, IIR on 100 + 100
   patched images, RMCS on 100 images for each commonality model, every method) from the measured
   per-image cost, naming the dominant costs.

The models are 128-px inputs resized to 224 inside the network (the `paper` models) with random
weights (timings do not depend on training). Expensive methods are timed on fewer images
(``--pass-budget`` forward+backward passes per method, at least 2 images).

    scripts/gpu_check.sh                         # CUDA: writes gpu_check.md
    python scripts/gpu_check.py --device cpu --tiny --out /tmp/check.md   # the same code path in seconds

Writes a markdown report (``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bam._io import write_text
from bam.methods import attribute, get_info, list_methods

#: Attributions per method in the `paper` protocol (configs/eval/paper.yaml; K = 10 scene classes):
#: MCS obj + scene on 10,000 composites, IDR adds the scene model on 10,000 scene-only images (its
#: composites are MCS's), IIR 100 IIR-scene + 100 patched images, RMCS 100 images x K models.
PAPER_ATTRIBUTIONS = {"mcs": 2 * 10_000, "idr": 10_000, "iir": 2 * 100, "rmcs": 10 * 100}
#: The IIR patch (SPEC §4.6): 300 gradient steps on the 100 IIR-scene images, once per scene_only model.
PATCH_PASSES = 300 * 100


@dataclass(frozen=True)
class Setup:
    """What one run measures on: device, models, image side, image counts, parameter overrides."""

    device: torch.device
    standard: torch.nn.Module
    invertible: torch.nn.Module | None
    image_size: int
    images: int
    pass_budget: int
    overrides: dict[str, dict[str, Any]]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, out


@contextlib.contextmanager
def _bf16(device: torch.device) -> Iterator[None]:
    """bf16 autocast on CUDA (on CPU: CPU autocast, for the --tiny path)."""
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        yield


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mb(device: torch.device) -> float:
    from bam._device import peak_memory_mb

    return peak_memory_mb(device)


def methods_for(setup: Setup) -> list[tuple[str, torch.nn.Module]]:
    """(method, model) for every registered method that can run here."""
    out = []
    for name in list_methods():
        info = get_info(name)
        model = setup.invertible if "invertible" in info.requires else setup.standard
        if model is not None:
            out.append((name, model))
    return out


def measure_method(setup: Setup, name: str, model: torch.nn.Module) -> dict[str, Any]:
    """fp32 and bf16 + channels_last images/s, max map difference, peak memory, for one method."""
    info = get_info(name)
    params = {**setup.overrides.get(name, {})}
    passes = max(1, info.passes({**info.defaults, **params}))
    n = max(2, min(setup.images, setup.pass_budget // passes))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, setup.image_size, setup.image_size, generator=gen).to(setup.device)
    with torch.no_grad():
        target = model(x).argmax(1)
    seed = {"seed": 0} if info.stochastic else {}
    row: dict[str, Any] = {"method": name, "images": n, "passes_per_image": passes if info.uses_model else 0}
    try:
        attribute(name, model, x[:1], target[:1], **params, **seed)  # warm-up (kernels, caches)
        _peak_reset(setup.device)
        fp32_s, fp32 = _timed(lambda: attribute(name, model, x, target, **params, **seed), setup.device)
        row["peak_memory_mb"] = round(_peak_mb(setup.device), 1)
        row["fp32_images_per_s"] = round(n / fp32_s, 2)
        row["s_per_image"] = fp32_s / n
        xc = x.contiguous(memory_format=torch.channels_last)
        model.to(memory_format=torch.channels_last)
        try:
            with _bf16(setup.device):
                attribute(name, model, xc[:1], target[:1], **params, **seed)
                bf_s, bf = _timed(lambda: attribute(name, model, xc, target, **params, **seed), setup.device)
        finally:
            model.to(memory_format=torch.contiguous_format)
        row["bf16_images_per_s"] = round(n / bf_s, 2)
        ok = torch.isfinite(fp32.flatten(1)).all(1) & torch.isfinite(bf.flatten(1)).all(1)
        diff = (fp32[ok].float() - bf[ok].float()).abs().max() if ok.any() else torch.tensor(float("nan"))
        scale = fp32[ok].abs().max() if ok.any() else torch.tensor(float("nan"))
        row["max_abs_diff"] = float(diff)
        row["max_rel_diff"] = float(diff / scale.clamp_min(1e-30))
    except Exception as exc:  # report and go on: one failing method must not hide the others
        row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
    return row


def measure_trainer(device: torch.device, tiny: bool, workdir: Path) -> dict[str, Any]:
    """images/s of one epoch of ``bam.train.fit`` (paper config on CUDA; synthetic config with --tiny)."""
    import dataclasses

    from bam.data import build_dataset, load_recipe, open_dataset
    from bam.train import fit, load_train_config

    recipe = load_recipe("tiny" if tiny else "synthetic")
    if not tiny:  # ~4,000 training images per role: enough for a steady epoch, built in seconds
        recipe = dataclasses.replace(recipe, instances_per_class=50, val_instances=10)
    build_dataset(recipe, workdir / "data", seed=0, workers=1 if tiny else 8)
    data = open_dataset(workdir / "data")
    config = load_train_config("synthetic" if tiny else "paper").replace(
        epochs=1, warmup_epochs=0.0, cache="memory", workers=0)
    t0 = time.perf_counter()
    fit(config, data, workdir / "model", "scene", device=device)
    wall = time.perf_counter() - t0
    state = torch.load(workdir / "model" / "train_state.pt", weights_only=True)
    ips = float(state["history"][-1]["images_per_s"])
    return {"arch": config.arch, "input_size": config.input_size or data.image_size, "batch_size": config.batch_size,
            "amp": config.amp and device.type == "cuda", "images_per_s": round(ips, 1), "epoch_wall_s": round(wall, 1)}


def extrapolate(rows: list[dict[str, Any]]) -> tuple[list[tuple[str, float]], float]:
    """Seconds of the `paper` evaluation per method (fp32, as evaluate runs) and in total."""
    per_image = sum(PAPER_ATTRIBUTIONS.values())
    costs = [(r["method"], r["s_per_image"] * per_image) for r in rows if "s_per_image" in r]
    grad = next((r for r in rows if r["method"] == "gradient" and "s_per_image" in r), None)
    if grad is not None:  # the IIR patch: PATCH_PASSES gradient steps, one per scene_only model family
        costs.append(("(IIR patch, 2 model families)", 2 * PATCH_PASSES * grad["s_per_image"]))
    costs.sort(key=lambda c: -c[1])
    return costs, sum(c for _, c in costs)


def _hms(seconds: float) -> str:
    h, rem = divmod(round(seconds), 3600)
    return f"{h} h {rem // 60:02d} min" if h else f"{rem // 60} min {rem % 60:02d} s"


def report(header: str, rows: list[dict[str, Any]], trainer: dict[str, Any] | None, wall_s: float) -> str:
    """The markdown report."""
    lines = [f"# bam GPU check\n\n{header}\n", "## Methods (paper defaults, default micro-batch)\n",
             "| method | images timed | passes / image | fp32 images/s | bf16+CL images/s | bf16 speed-up | "
             "max abs diff | max rel diff | peak memory MiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['method']} | {r['images']} | {r['passes_per_image']} | error: {r['error']} |||||| ")
            continue
        speed = r["bf16_images_per_s"] / r["fp32_images_per_s"] if r["fp32_images_per_s"] else float("nan")
        lines.append(f"| {r['method']} | {r['images']} | {r['passes_per_image']} | {r['fp32_images_per_s']} | "
                     f"{r['bf16_images_per_s']} | {speed:.2f}x | {r['max_abs_diff']:.3g} | {r['max_rel_diff']:.3g} | "
                     f"{r['peak_memory_mb']} |")
    if trainer:
        lines += ["\n## Trainer\n", f"`bam.train.fit`, {trainer['arch']} at {trainer['input_size']} px, batch "
                  f"{trainer['batch_size']}, bf16 + channels_last: {trainer['amp']}: **{trainer['images_per_s']} "
                  f"images/s** (one epoch, {trainer['epoch_wall_s']} s wall including evaluation and checkpoint)."]
    costs, total = extrapolate(rows)
    lines += ["\n## The full `paper` evaluation, extrapolated\n",
              f"{sum(PAPER_ATTRIBUTIONS.values()):,} attributions per method (MCS 2 x 10,000, IDR 10,000, IIR 200, "
              f"RMCS 10 x 100), fp32 as `bam evaluate` runs, at the measured seconds per image: "
              f"**{_hms(total)}** in total (model training, data build and reports not included).\n",
              "| cost | time | share |", "|---|---|---|"]
    lines += [f"| {name} | {_hms(sec)} | {100 * sec / total:.1f} % |" for name, sec in costs]
    if costs:
        top = ", ".join(f"{name} ({100 * sec / total:.0f} %)" for name, sec in costs[:3])
        lines.append(f"\nDominant costs: {top}.")
    lines.append(f"\nThis check ran in {wall_s:.0f} s.")
    return "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (with --tiny, for tests)")
    ap.add_argument("--tiny", action="store_true",
                    help="small models, step counts and images: the same code path in seconds")
    ap.add_argument("--images", type=int, default=32, help="images per method (fewer for expensive ones)")
    ap.add_argument("--pass-budget", type=int, default=6400, help="forward+backward passes per method timing")
    ap.add_argument("--methods", default="", help="comma-separated subset (default: all)")
    ap.add_argument("--no-trainer", action="store_true", help="skip the trainer measurement")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.md"))
    return ap.parse_args()


def _tiny_overrides() -> dict[str, dict[str, Any]]:
    """Every integer step/sample count capped at 2 (the --tiny path)."""
    out: dict[str, dict[str, Any]] = {}
    for name in list_methods():
        for key, value in get_info(name).defaults.items():
            if isinstance(value, int) and not isinstance(value, bool) and key.endswith(("steps", "samples")):
                out.setdefault(name, {})[key] = min(value, 2)
    return out


def main() -> None:
    """Measure and write the report."""
    args = parse_args()
    from bam._device import resolve_device
    from bam.models import create_model

    t_start = time.perf_counter()
    device = resolve_device(args.device)
    if device.type != "cuda" and not args.tiny:
        raise SystemExit("error: gpu_check needs a CUDA device (use --device cpu --tiny to test the code path)")
    torch.manual_seed(0)
    if args.tiny:
        size = 32
        standard = create_model("small_resnet", num_classes=10, image_size=size).to(device).eval()
        invertible = create_model("iresnet", num_classes=10, image_size=size).to(device).eval()
    else:
        size = 128
        standard = create_model("resnet50", num_classes=10, image_size=size, input_size=224,
                                normalization="paper").to(device).eval()
        from bam.train import load_train_config

        inv = load_train_config("paper_iresnet")
        invertible = create_model(inv.arch, num_classes=10, image_size=size, input_size=inv.input_size,
                                  **dict(inv.arch_kwargs)).to(device).eval()
    setup = Setup(device=device, standard=standard, invertible=invertible, image_size=size,
                  images=2 if args.tiny else args.images, pass_budget=64 if args.tiny else args.pass_budget,
                  overrides=_tiny_overrides() if args.tiny else {})
    wanted = {m for m in args.methods.split(",") if m}
    rows = []
    for name, model in methods_for(setup):
        if wanted and name not in wanted:
            continue
        rows.append(measure_method(setup, name, model))
        print({k: v for k, v in rows[-1].items() if k != "s_per_image"}, flush=True)
    trainer = None
    if not args.no_trainer:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = measure_trainer(device, args.tiny, Path(tmp))
        print(trainer, flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    header = (f"Device: {name} ({device}); torch {torch.__version__}; models: "
              f"{type(standard).__name__} / {type(invertible).__name__ if invertible else '-'} at {size} px "
              f"{'(tiny mode: step counts capped at 2 — not representative)' if args.tiny else '-> 224 inside'}.")
    text = report(header, rows, trainer, time.perf_counter() - t_start)
    write_text(args.out, text)
    print(text)


if __name__ == "__main__":
    main()

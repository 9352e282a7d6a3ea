"""Time a dataset build and report images/s and disk footprint.

    .venv/bin/python scripts/bench_build.py                      # paper-scale synthetic (synthetic_full)
    .venv/bin/python scripts/bench_build.py --recipe synthetic --workers 2 --out /tmp/bench-data

Builds into a fresh temporary directory (or --out, which must not exist), then times a verify
pass, the cost of checking each image's sha256 against the manifest when it is decoded, and the
loader (obj train subset, batches of 256, after decoding everything into memory).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch


def footprint(root: Path) -> tuple[int, int]:
    """(bytes, files) under ``root``."""
    files = [p for p in root.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def verification_cost(root: Path, manifest: dict, rounds: int) -> tuple[float, float]:
    """Best-of-``rounds`` seconds to decode every stored image with and without the per-file
    sha256 check (interleaved, so that machine load affects both alike)."""
    from bam.data._store import ImageStore

    best = {True: float("inf"), False: float("inf")}
    for _ in range(rounds):
        for checked in (True, False):
            store = ImageStore.from_manifest(root, manifest)
            if not checked:
                store.hashes = None
            t0 = time.perf_counter()
            store.load_all(threads=1)
            best[checked] = min(best[checked], time.perf_counter() - t0)
    return best[True], best[False]


def main() -> None:
    """Parse arguments, build, verify, load; print one line per measurement."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="synthetic_full")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for the loader benchmark")
    ap.add_argument("--load-batches", type=int, default=40)
    ap.add_argument("--keep", action="store_true", help="keep the build (default: delete a temporary one)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the hash-check cost measurement")
    args = ap.parse_args()

    from bam.data import BuildOptions, build_dataset, load_recipe, open_dataset, verify_dataset

    recipe = load_recipe(args.recipe)
    tmp = None
    if args.out is None:
        tmp = Path(tempfile.mkdtemp(prefix="bam-bench-"))
        out = tmp / "data"
    else:
        out = args.out
        if out.exists():
            raise SystemExit(f"--out {out} exists; give a new path")
    try:
        t0 = time.perf_counter()
        res = build_dataset(recipe, out, seed=args.seed, options=BuildOptions(workers=args.workers), progress=True)
        build_s = time.perf_counter() - t0
        nbytes, nfiles = footprint(out)
        stored = res.counts["objects"] + res.counts["scenes"]
        print(f"recipe {recipe.name}: {len(recipe.object_classes)}x{len(recipe.scene_classes)} classes, "
              f"{recipe.instances_per_class} instances, {recipe.image_size} px, workers {args.workers}")
        print(f"build: {build_s:.1f} s, {stored / build_s:.0f} stored images/s, "
              f"{res.counts['composites'] / build_s:.0f} composites/s (on the fly)")
        print(f"disk: {nbytes / 2**20:.1f} MiB in {nfiles} files")
        t0 = time.perf_counter()
        problems = verify_dataset(out)
        print(f"verify: {time.perf_counter() - t0:.1f} s, {len(problems)} problems")
        torch.set_num_threads(args.threads)
        data = open_dataset(out)
        t0 = time.perf_counter()
        data.preload()
        print(f"decode all into memory: {time.perf_counter() - t0:.1f} s")
        checked, unchecked = verification_cost(out, data.manifest, args.rounds)
        print(f"decode with/without sha256 checks against the manifest (best of {args.rounds}, interleaved, "
              f"1 thread): {checked:.2f} s / {unchecked:.2f} s = {checked / unchecked:.3f}")
        sub = data.subset("obj", "train")
        perm = torch.randperm(len(sub), generator=torch.Generator().manual_seed(0))
        t0 = time.perf_counter()
        n = 0
        for k in range(args.load_batches):
            batch = perm[(k * 256) % len(sub):][:256]
            n += len(sub.load_batch(batch)[1])
        dt = time.perf_counter() - t0
        print(f"load_batch: {n / dt:.0f} images/s ({args.threads} threads, batch 256, {recipe.image_size} px)")
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Throughput of bam-like torch workloads on an idle CPU and beside one competing torch process.

For each candidate thread setting (environment variables applied before ``import torch`` in a
fresh worker process, plus the intra-op thread count) and each workload, the script runs

1. the worker alone for ``--seconds`` (idle throughput), then
2. the worker beside one competing CPU-bound torch process with torch's default settings (a
   matrix-multiplication loop, or ``--competitor train``: the training workload) -- the situation of
   a shared CI runner or laptop,

and prints images/s idle and contended, contended / idle (bam's target: >= ~0.4 with one
competitor on the same cores) and idle / idle of torch's default (target: >= 0.95).

Workloads (small_resnet of the synthetic default at 32 px, random data, random weights):

* ``train``: SGD steps, batch 64 (forward + backward + optimizer step);
* ``evaluate``: ``integrated_gradients`` (8 steps) on batches of 50 images through ``bam.methods``.

Candidates: ``torch-default`` (no variables: one thread per core, OpenMP's spinning wait),
``passive`` (OMP_WAIT_POLICY=PASSIVE), ``one-thread`` (OMP_NUM_THREADS=1), ``spin-short``
(GOMP_SPINCOUNT=10000) and ``bam`` (what ``bam._threads.configure_environment`` and
``configure_threads`` set, i.e. what the ``bam`` command runs with).

    PYTHONPATH=. python scripts/bench_shared_cpu.py --seconds 15
    PYTHONPATH=. python scripts/bench_shared_cpu.py --candidates torch-default,bam --workloads train

Numbers move with whatever else runs on the machine: run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CANDIDATES: dict[str, dict[str, str]] = {
    "torch-default": {},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
    "one-thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "spin-short": {"GOMP_SPINCOUNT": "10000"},
    "bam": {"__bam__": "1"},
}
WORKLOADS = ("train", "evaluate")
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "KMP_BLOCKTIME", "GOMP_SPINCOUNT",
                "OMP_PROC_BIND", "KMP_AFFINITY")


def worker(workload: str, seconds: float, bam_threads: bool) -> dict[str, Any]:
    """Run ``workload`` for about ``seconds`` after a warm-up; returns images/s and the thread setup."""
    if bam_threads:
        from bam._threads import configure_environment

        configure_environment(os.environ)
    import torch

    if bam_threads:
        from bam._threads import configure_threads

        configure_threads(None, os.environ)
    from bam.models import create_model

    torch.manual_seed(0)
    model = create_model("small_resnet", num_classes=10, image_size=32, widths=[16, 32, 64], depths=[1, 1, 1],
                         normalization="centered")
    if workload == "train":
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x, y = torch.rand(64, 3, 32, 32), torch.randint(0, 10, (64,))

        def step() -> int:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return x.shape[0]
    elif workload == "evaluate":
        from bam.methods import attribute

        model.eval()
        x = torch.rand(50, 3, 32, 32)
        with torch.no_grad():
            t = model(x).argmax(1)

        def step() -> int:
            attribute("integrated_gradients", model, x, t, steps=8, micro_batch=64)
            return x.shape[0]
    elif workload == "burn":  # the competitor: a CPU-bound torch loop with torch's default settings
        a = torch.rand(384, 384)

        def step() -> int:
            for _ in range(8):
                a.copy_(torch.tanh(a @ a * 1e-3))
            return 1
    else:
        raise SystemExit(f"unknown workload {workload!r}")
    step()
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        images += step()
    wall = time.perf_counter() - start
    return {"images_per_s": images / wall, "threads": torch.get_num_threads(),
            "env": {k: os.environ[k] for k in _THREAD_VARS if k in os.environ}}


def _env(candidate: dict[str, str]) -> dict[str, str]:
    """The worker's environment: this one without thread variables, plus the candidate's."""
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARS}
    env.update({k: v for k, v in candidate.items() if not k.startswith("__")})
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _spawn(workload: str, seconds: float, candidate: dict[str, str]) -> subprocess.Popen[str]:
    """Start a worker process (a fresh interpreter, so that the variables apply before torch loads)."""
    cmd = [sys.executable, __file__, "--worker", workload, "--seconds", str(seconds)]
    if "__bam__" in candidate:
        cmd.append("--bam-threads")
    return subprocess.Popen(cmd, env=_env(candidate), stdout=subprocess.PIPE, text=True)


def measure(workload: str, candidate: dict[str, str], seconds: float, competitor: str | None) -> dict[str, Any]:
    """One worker run, alone (``competitor`` None) or beside a competing default-torch process."""
    rival = _spawn(competitor, seconds * 3 + 30, {}) if competitor else None
    try:
        if rival is not None:
            time.sleep(3.0)  # let the competitor import torch and start computing
        proc = _spawn(workload, seconds, candidate)
        out, _ = proc.communicate(timeout=seconds * 20 + 120)
        if proc.returncode != 0:
            raise RuntimeError(f"worker {workload} failed with exit code {proc.returncode}")
        return json.loads(out.strip().splitlines()[-1])
    finally:
        if rival is not None:
            rival.kill()
            rival.wait()


def main() -> None:
    """Run every (candidate, workload) idle and contended; print a markdown table and write JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0, help="measured seconds per run (after a warm-up step)")
    ap.add_argument("--candidates", default=",".join(CANDIDATES), help=f"subset of {', '.join(CANDIDATES)}")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help=f"subset of {', '.join(WORKLOADS)}")
    ap.add_argument("--competitor", default="burn", choices=("burn", "train"),
                    help="the competing process: a matmul loop or the training workload, torch defaults")
    ap.add_argument("--out", type=Path, default=Path("bench_shared_cpu.json"))
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--bam-threads", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.seconds, args.bam_threads)), flush=True)
        return
    rows = []
    for workload in [w for w in args.workloads.split(",") if w]:
        for name in [c for c in args.candidates.split(",") if c]:
            idle = measure(workload, CANDIDATES[name], args.seconds, None)
            busy = measure(workload, CANDIDATES[name], args.seconds, args.competitor)
            rows.append({"workload": workload, "setting": name, "threads": idle["threads"], "env": idle["env"],
                         "idle_images_per_s": round(idle["images_per_s"], 1),
                         "contended_images_per_s": round(busy["images_per_s"], 1),
                         "contended_over_idle": round(busy["images_per_s"] / idle["images_per_s"], 3)})
            print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        base = next((r for r in rows if r["workload"] == row["workload"] and r["setting"] == "torch-default"), None)
        ratio = row["idle_images_per_s"] / base["idle_images_per_s"] if base else None
        row["idle_over_torch_default"] = round(ratio, 3) if ratio is not None else None
    from bam._io import write_json

    write_json(args.out, {"cpus": os.cpu_count(), "competitor": args.competitor, "rows": rows})
    print(f"\n{os.cpu_count()} CPUs; competitor: one '{args.competitor}' process with torch's default settings\n")
    print("| workload | setting | threads | idle img/s | contended img/s | contended / idle | idle / torch-default |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['workload']} | {r['setting']} | {r['threads']} | {r['idle_images_per_s']} | "
              f"{r['contended_images_per_s']} | {r['contended_over_idle']} | {r['idle_over_torch_default']} |")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

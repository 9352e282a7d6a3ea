"""Train many small models at once: one process per CPU, one intra-op thread each (``bam run``).

Small models use two intra-op threads poorly (and two processes with two threads each on two
cores spin against each other); one single-threaded process per available CPU keeps every core
busy. It also makes the trained weights independent of the machine's core count: every model is
trained with one thread, whatever the machine (the weights still depend on the CPU's instruction
set). On CUDA the jobs run one after the other in this process.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from bam._threads import available_cpus

log = logging.getLogger("bam.train")


@dataclass(frozen=True)
class Job:
    """One model to train: training config name (or path), role, checkpoint folder, seed."""

    config: str
    role: str
    out: Path
    seed: int


@dataclass(frozen=True)
class Done:
    """A trained (or already finished) model."""

    job: Job
    arch: str
    val_accuracy: float
    seconds: float


def _init_worker(threads: int) -> None:
    """Worker start-up: a fixed intra-op thread count before any torch work."""
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)


def _train(job: Job, data_dir: Path, device: str) -> Done:
    """Train one job (in a worker or in this process)."""
    from bam.train import load_train_config, train_model

    t0 = time.perf_counter()
    card = train_model(load_train_config(job.config, {"seed": job.seed}), data_dir, job.out, job.role,
                       device=device, progress=False)
    return Done(job, card.arch, float(card.accuracy.get("val", float("nan"))), time.perf_counter() - t0)


def train_all(jobs: Sequence[Job], data_dir: Path, *, device: str = "auto", workers: int | None = None,
              on_done: Callable[[Done], None] | None = None) -> list[Done]:
    """Train ``jobs`` (each resumes or confirms a finished run), ``workers`` processes at a time.

    ``workers`` None: one per available CPU on a CPU device, 1 on CUDA. Jobs are started in the
    order given (put the longest first). ``on_done`` is called as each job finishes.
    """
    from bam._device import resolve_device

    dev = resolve_device(device)
    n = 1 if dev.type != "cpu" else (workers or min(available_cpus(), len(jobs)))
    done: list[Done] = []
    if n <= 1:
        for job in jobs:
            done.append(_train(job, data_dir, str(dev)))
            if on_done is not None:
                on_done(done[-1])
        return done
    threads = max(1, available_cpus() // n)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=_init_worker, initargs=(threads,)) as pool:
        pending: set[Future[Done]] = {pool.submit(_train, job, data_dir, "cpu") for job in jobs}
        try:
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    done.append(fut.result())
                    if on_done is not None:
                        on_done(done[-1])
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    order = {job: i for i, job in enumerate(jobs)}
    return sorted(done, key=lambda d: order[d.job])

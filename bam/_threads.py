"""CPU threads for torch on shared machines: how many, and how idle OpenMP threads wait.

On a shared CPU (CI runners, laptops, a 2-core box with other jobs) two torch processes that each
run one intra-op thread per core slow each other down by 20-100x, not 2x: an OpenMP thread that
reaches a barrier *spins* for its peers, and a peer that another process has descheduled makes it
spin for a whole time slice. ``scripts/bench_shared_cpu.py`` measures the candidates (docs/methods.md,
"Shared CPUs"); bam's setting is:

* intra-op threads = the CPUs this process may actually use: the affinity mask
  (``os.sched_getaffinity``) capped by the cgroup CPU quota (cgroup v2 ``cpu.max`` or v1
  ``cpu.cfs_quota_us / cpu.cfs_period_us``), never the host's core count;
* ``OMP_WAIT_POLICY=PASSIVE``: an idle OpenMP thread sleeps instead of spinning, so a descheduled
  peer costs a wake-up, not a time slice. libgomp (torch's OpenMP on Linux) reads it when it loads,
  i.e. at ``import torch``: :func:`configure_environment` must run before that (the CLI entry point
  ``bam.cli.main.main`` calls it first thing); ``KMP_BLOCKTIME=0`` does the same for Intel's
  OpenMP, should torch be built with it.

Values the user set in the environment are kept (``setdefault``), and a thread count the user set in
any of the count variables (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
``VECLIB_MAXIMUM_THREADS``, ``NUMEXPR_NUM_THREADS``; the first valid one in that order) is the count
bam gives the others, so ``OMP_NUM_THREADS=1`` alone means one intra-op thread, not MKL's CPU count.
``--threads N`` overrides the count. Library code never reads the environment: the CLI passes
``os.environ`` in, and :func:`configure_environment` keeps a record of what it found and set (which
variables the user set, in ``BAM_USER_THREAD_ENV`` too, so child processes record the user's
settings and not bam's defaults) that :func:`thread_settings` puts in provenance.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bam.errors import BamError

#: Thread-count variables, in the order a user's value is taken from (the first valid one wins).
COUNT_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
             "NUMEXPR_NUM_THREADS")
#: Environment variables that decide how torch's CPU threads behave (recorded in provenance).
THREAD_ENV = (*COUNT_ENV, "OMP_WAIT_POLICY", "KMP_BLOCKTIME", "GOMP_SPINCOUNT", "OMP_PROC_BIND", "KMP_AFFINITY")
#: Which of THREAD_ENV the user set (comma-separated names), written by the first configure_environment.
USER_ENV_KEY = "BAM_USER_THREAD_ENV"
#: What configure_environment found and set in this process: {"env": ..., "user_env": ...}.
_RECORD: dict[str, dict[str, str]] = {}
#: What :func:`configure_environment` sets unless the user already has (besides the thread counts).
WAIT_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}

_CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ThreadSettings:
    """How torch's CPU threads were configured (and why), for logs and provenance."""

    intra_op_threads: int
    interop_threads: int
    requested: int | None
    available_cpus: int
    affinity_cpus: int
    cgroup_quota: float | None
    source: str  # "requested" | "environment" (the user's thread variable) | "available"
    env: Mapping[str, str]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        out = asdict(self)
        out["env"] = dict(self.env)
        return out


def parse_cpu_max(text: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` line (``"max 100000"`` -> None, ``"150000 100000"`` -> 1.5)."""
    parts = text.split()
    if not parts or parts[0] == "max":
        return None
    try:
        quota = float(parts[0])
        period = float(parts[1]) if len(parts) > 1 else 100000.0
    except ValueError:
        raise BamError(f"bad cgroup cpu.max {text.strip()!r}; accepted: 'max [period]' or '<quota> <period>'") from None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def parse_cfs(quota_us: str, period_us: str) -> float | None:
    """CPUs allowed by cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (quota -1 -> None)."""
    try:
        quota, period = float(quota_us.strip()), float(period_us.strip())
    except ValueError:
        raise BamError(f"bad cgroup v1 quota {quota_us.strip()!r} / period {period_us.strip()!r}; accepted: numbers") \
            from None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def cgroup_quota(root: Path = _CGROUP) -> float | None:
    """The CPU quota of this process's cgroup (v2, else v1), in CPUs; None when unlimited or unknown."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            return parse_cpu_max(v2.read_text())
        v1 = root / "cpu" / "cpu.cfs_quota_us"
        if v1.is_file():
            return parse_cfs(v1.read_text(), (root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, BamError):
        return None
    return None


def affinity_cpus() -> int:
    """CPUs in this process's affinity mask (``os.cpu_count()`` where affinity is not available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def usable_cpus(affinity: int, quota: float | None) -> int:
    """Intra-op threads for ``affinity`` CPUs under a cgroup quota of ``quota`` CPUs (rounded up, >= 1)."""
    if affinity < 1:
        raise BamError(f"bad affinity CPU count {affinity}; accepted: an integer >= 1")
    if quota is None:
        return affinity
    return max(1, min(affinity, math.ceil(quota - 1e-9)))


def available_cpus() -> int:
    """CPUs this process may actually use: its affinity mask capped by its cgroup quota."""
    return usable_cpus(affinity_cpus(), cgroup_quota())


def user_count(env: Mapping[str, str]) -> int | None:
    """The thread count the user set: the first of :data:`COUNT_ENV` whose value is an integer >= 1
    (OpenMP's nested form "4,2" gives 4); None when none is set (an unusable value is skipped)."""
    for key in COUNT_ENV:
        text = env.get(key, "").split(",")[0].strip()
        if text.isdigit() and int(text) >= 1:
            return int(text)
    return None


def user_env(env: Mapping[str, str]) -> dict[str, str]:
    """The thread variables of ``env`` that the user set (not bam's defaults), per ``BAM_USER_THREAD_ENV``
    when a configure_environment has run in this process or a parent, else every thread variable."""
    if USER_ENV_KEY in env:
        names = {n for n in env[USER_ENV_KEY].split(",") if n}
        return {k: env[k] for k in THREAD_ENV if k in names and k in env}
    return {k: env[k] for k in THREAD_ENV if k in env}


def configure_environment(env: MutableMapping[str, str], cpus: int | None = None) -> dict[str, str]:
    """Set bam's thread defaults in ``env`` (e.g. ``os.environ``) unless already set; before ``import torch``.

    ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` = the user's count (:func:`user_count`), else ``cpus``
    (default: :func:`available_cpus`); ``OMP_WAIT_POLICY=PASSIVE``, ``KMP_BLOCKTIME=0``. Records which
    variables the user set (``BAM_USER_THREAD_ENV`` and the record :func:`thread_settings` reads).
    Returns the thread variables now in ``env``.
    """
    env.setdefault(USER_ENV_KEY, ",".join(k for k in THREAD_ENV if k in env))
    n = str(user_count(env) or (int(cpus) if cpus else available_cpus()))
    for key, value in {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, **WAIT_DEFAULTS}.items():
        env.setdefault(key, value)
    now = {k: env[k] for k in THREAD_ENV if k in env}
    _RECORD.clear()
    _RECORD.update({"env": now, "user_env": user_env(env)})
    return now


def check_requested(requested: Any) -> int | None:
    """Validate a requested thread count (None or 0 = automatic)."""
    if requested is None or (isinstance(requested, int) and not isinstance(requested, bool) and requested == 0):
        return None
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 0:
        raise BamError(f"bad threads {requested!r}; accepted: an integer >= 1, or 0 / none for the available CPUs")
    return requested


def configure_threads(requested: int | None, env: Mapping[str, str] | None = None) -> ThreadSettings:
    """Set torch's intra-op threads to ``requested`` or to the CPUs available to this process.

    Inter-op threads are left as they are unless torch has not started its pool yet, in which case
    they are capped at the same count. ``env``: the process environment, recorded (not read otherwise).
    """
    import torch

    req = check_requested(requested)
    affinity, quota = affinity_cpus(), cgroup_quota()
    available = usable_cpus(affinity, quota)
    users = user_count(user_env(env)) if env is not None else None
    n = req if req is not None else (users or available)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        if torch.get_num_interop_threads() > n:
            torch.set_num_interop_threads(n)
    except RuntimeError:  # the inter-op pool already started: it can no longer be resized
        pass
    recorded = {k: env[k] for k in THREAD_ENV if env is not None and k in env}
    return ThreadSettings(intra_op_threads=torch.get_num_threads(), interop_threads=torch.get_num_interop_threads(),
                          requested=req, available_cpus=available, affinity_cpus=affinity, cgroup_quota=quota,
                          source="requested" if req is not None else ("environment" if users else "available"),
                          env=recorded)


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else ``platform.processor()``)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _parallel_backend(info: str) -> str:
    """The "ATen parallel backend" line of ``torch.__config__.parallel_info()`` (e.g. "OpenMP")."""
    for line in info.splitlines():
        if line.startswith("ATen parallel backend:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def thread_settings(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What decides CPU speed and reproducibility now: threads, thread env, CPU model and instruction
    set, deterministic flags. For provenance (``evaluate`` records it beside the results).

    ``env``: the thread variables in effect (``env``) and those the user set (``user_env``) come from
    it; without it, from what :func:`configure_environment` recorded in this process ({} if it never ran).
    """
    import torch

    if env is not None:
        in_effect, users = {k: env[k] for k in THREAD_ENV if k in env}, user_env(env)
    else:
        in_effect, users = dict(_RECORD.get("env", {})), dict(_RECORD.get("user_env", {}))
    return {
        "intra_op_threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "available_cpus": available_cpus(),
        "affinity_cpus": affinity_cpus(),
        "cgroup_quota": cgroup_quota(),
        "env": in_effect,
        "user_env": users,
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "parallel_backend": _parallel_backend(torch.__config__.parallel_info()),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }

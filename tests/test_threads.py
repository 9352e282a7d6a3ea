"""bam._threads: CPU counts from affinity and cgroup quotas, the environment defaults, the settings record."""

from __future__ import annotations

import json

import pytest
import torch

from bam import _threads
from bam.errors import BamError


@pytest.mark.parametrize("text, cpus", [
    ("max 100000\n", None),
    ("max", None),
    ("200000 100000\n", 2.0),
    ("150000 100000", 1.5),
    ("50000 100000", 0.5),
    ("100000", 1.0),  # period omitted: the kernel default 100 ms
])
def test_parse_cgroup_v2_cpu_max(text: str, cpus: float | None) -> None:
    assert _threads.parse_cpu_max(text) == cpus


def test_parse_cgroup_v1_and_bad_values() -> None:
    assert _threads.parse_cfs("-1\n", "100000\n") is None
    assert _threads.parse_cfs("300000", "100000") == 3.0
    with pytest.raises(BamError, match=r"cpu\.max") as err:
        _threads.parse_cpu_max("lots 100000")
    assert "\n" not in str(err.value)
    with pytest.raises(BamError, match="quota"):
        _threads.parse_cfs("x", "100000")


@pytest.mark.parametrize("affinity, quota, expected", [
    (8, None, 8),  # no quota: the affinity mask
    (8, 2.0, 2),  # a container limited to 2 CPUs on an 8-core host
    (8, 1.5, 2),  # fractional quotas round up
    (8, 0.5, 1),  # never below one thread
    (2, 16.0, 2),  # a quota above the mask does not add CPUs
])
def test_usable_cpus(affinity: int, quota: float | None, expected: int) -> None:
    assert _threads.usable_cpus(affinity, quota) == expected


def test_cgroup_quota_reads_v2_then_v1(tmp_path) -> None:
    assert _threads.cgroup_quota(tmp_path) is None  # neither file: unknown = unlimited
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("250000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert _threads.cgroup_quota(tmp_path) == 2.5
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert _threads.cgroup_quota(tmp_path) == 1.0
    (tmp_path / "cpu.max").write_text("garbage here\n")
    assert _threads.cgroup_quota(tmp_path) is None  # unreadable: treated as unknown, never an error


def test_available_cpus_is_within_the_affinity_mask(monkeypatch) -> None:
    import os

    assert _threads.affinity_cpus() == len(os.sched_getaffinity(0))
    assert 1 <= _threads.available_cpus() <= _threads.affinity_cpus()
    monkeypatch.setattr(_threads, "affinity_cpus", lambda: 6)
    monkeypatch.setattr(_threads, "cgroup_quota", lambda root=None: 2.0)
    assert _threads.available_cpus() == 2
    monkeypatch.setattr(_threads, "cgroup_quota", lambda root=None: None)
    assert _threads.available_cpus() == 6


def test_configure_environment_sets_defaults_and_keeps_the_users() -> None:
    env: dict[str, str] = {"OMP_NUM_THREADS": "3", "PATH": "/bin"}
    out = _threads.configure_environment(env, cpus=2)
    assert env["OMP_NUM_THREADS"] == "3"  # the user's value wins, and is the count for the other variables
    assert env["MKL_NUM_THREADS"] == "3" and env["OMP_WAIT_POLICY"] == "PASSIVE" and env["KMP_BLOCKTIME"] == "0"
    assert out == {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "OMP_WAIT_POLICY": "PASSIVE", "KMP_BLOCKTIME": "0"}
    assert env["PATH"] == "/bin" and env[_threads.USER_ENV_KEY] == "OMP_NUM_THREADS"
    assert _threads.thread_settings()["user_env"] == {"OMP_NUM_THREADS": "3"}  # the record of this configuration
    assert _threads.thread_settings()["env"] == out
    env2: dict[str, str] = {"OMP_WAIT_POLICY": "ACTIVE"}
    _threads.configure_environment(env2, cpus=4)
    assert env2["OMP_WAIT_POLICY"] == "ACTIVE" and env2["OMP_NUM_THREADS"] == "4" and env2["MKL_NUM_THREADS"] == "4"
    assert _threads.user_env(env2) == {"OMP_WAIT_POLICY": "ACTIVE"}


@pytest.mark.parametrize("env, count", [
    ({"MKL_NUM_THREADS": "2"}, 2),
    ({"OPENBLAS_NUM_THREADS": "5", "NUMEXPR_NUM_THREADS": "7"}, 5),  # the first in COUNT_ENV's order
    ({"OMP_NUM_THREADS": "4,2"}, 4),  # OpenMP's nested form: the outer level
    ({"OMP_NUM_THREADS": "zero", "VECLIB_MAXIMUM_THREADS": "3"}, 3),  # an unusable value is skipped
    ({"OMP_NUM_THREADS": "0"}, None),
    ({}, None),
])
def test_user_count_takes_any_thread_variable(env: dict[str, str], count: int | None) -> None:
    assert _threads.user_count(env) == count
    configured = dict(env)
    _threads.configure_environment(configured, cpus=6)
    want = str(count or 6)  # the user's count, else the CPUs
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        assert configured[key] == env.get(key, want)  # a user's own value is never replaced


def test_a_child_process_records_the_users_variables_not_bams_defaults() -> None:
    parent: dict[str, str] = {"OMP_NUM_THREADS": "1"}
    _threads.configure_environment(parent, cpus=8)
    child = dict(parent)  # what a worker process inherits
    _threads.configure_environment(child, cpus=8)
    assert _threads.user_env(child) == {"OMP_NUM_THREADS": "1"}
    assert child["MKL_NUM_THREADS"] == "1"


def test_omp_num_threads_alone_gives_one_intra_op_thread_and_is_recorded(tmp_path) -> None:
    """The CLI entry point with only OMP_NUM_THREADS=1 set: torch runs one thread, provenance has the setting."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in _threads.THREAD_ENV and k != _threads.USER_ENV_KEY}
    env["OMP_NUM_THREADS"] = "1"
    code = ("import json, os, sys\n"
            "from bam._threads import configure_environment, thread_settings\n"
            "configure_environment(os.environ)\n"  # what bam.cli.main.main does first
            "import torch\n"
            "t = thread_settings()\n"
            "print(json.dumps({'torch': torch.get_num_threads(), 'mkl': os.environ['MKL_NUM_THREADS'],\n"
            "                  'user_env': t['user_env'], 'intra': t['intra_op_threads']}))\n")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got == {"torch": 1, "mkl": "1", "user_env": {"OMP_NUM_THREADS": "1"}, "intra": 1}


def test_configure_threads_sets_torch_and_records(monkeypatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(_threads, "affinity_cpus", lambda: 1)
    monkeypatch.setattr(_threads, "cgroup_quota", lambda root=None: None)
    try:
        s = _threads.configure_threads(None, {"OMP_WAIT_POLICY": "PASSIVE", "HOME": "/x"})
        assert s.intra_op_threads == torch.get_num_threads() == 1
        assert s.source == "available" and s.requested is None and s.available_cpus == 1
        assert s.env == {"OMP_WAIT_POLICY": "PASSIVE"}  # only thread variables are recorded
        r = _threads.configure_threads(2)
        assert r.intra_op_threads == 2 and r.source == "requested" and r.requested == 2 and r.env == {}
        assert _threads.configure_threads(0).source == "available"  # 0 = automatic
        json.dumps(r.as_dict())
        with pytest.raises(dataclass_error()):
            r.requested = 3  # type: ignore[misc]
    finally:
        torch.set_num_threads(before)


def dataclass_error() -> type[Exception]:
    """The exception a frozen dataclass raises on assignment."""
    import dataclasses

    return dataclasses.FrozenInstanceError


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_bad_thread_counts_raise_one_line(bad: object) -> None:
    with pytest.raises(BamError, match="threads") as err:
        _threads.configure_threads(bad)  # type: ignore[arg-type]
    assert "\n" not in str(err.value)


def test_thread_settings_describe_the_process(tmp_path) -> None:
    info = _threads.thread_settings({"OMP_NUM_THREADS": "1", "UNRELATED": "x"})
    assert info["intra_op_threads"] == torch.get_num_threads()
    assert info["env"] == {"OMP_NUM_THREADS": "1"}
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert isinstance(info["cpu_model"], str) and info["cpu_model"]
    assert info["parallel_backend"] != "unknown"
    assert info["deterministic_algorithms"] in (True, False)
    json.dumps(info)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Test CPU @ 3 GHz\nflags\t: avx2\n")
    assert _threads.cpu_model(cpuinfo) == "Test CPU @ 3 GHz"

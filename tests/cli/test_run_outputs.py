"""A small real `bam run` as a user runs it: files readable like any tool's (umask), a log with no `\\r`."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bam._io import atomic_open, write_text
from bam.outputs import write_output_set

#: What an evaluation writes (the output set, TCAV included) and the report beside it.
EVAL_FILES = ("results.csv", "records.csv", "comparisons.csv", "provenance.json", "config.yaml", "outputs.json",
              "examples.safetensors", "tcav_records.csv", "tcav_summary.csv", "tcav_cavs.csv", "report.html")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`bam run` on the tiny recipe (1-epoch narrow models, gradient + random, MCS + TCAV MCS) under
    umask 022, stdout and stderr into one log file (not a terminal); returns (out, log text)."""
    tmp = tmp_path_factory.mktemp("run")
    train = tmp / "train.yaml"
    train.write_text(yaml.safe_dump({"arch": "small_resnet", "arch_kwargs": {"widths": [8, 8, 8]},
                                     "epochs": 1, "batch_size": 32, "lr": 0.01}))
    ev = tmp / "eval.yaml"
    ev.write_text(yaml.safe_dump({"methods": ["gradient", "random", "tcav"], "metrics": ["mcs", "tcav_mcs"],
                                  "bootstrap": 20, "examples": 2, "images": {"mcs": 12},
                                  "tcav": {"concept_size": 6, "random_size": 4, "num_random": 2,
                                           "target_images": 6}}))
    cfg = tmp / "run.yaml"
    cfg.write_text(yaml.safe_dump({"recipe": "tiny", "seed": 1, "train_config": str(train),
                                   "commonality_config": None, "invertible_config": None, "eval_config": str(ev)}))
    out, log = tmp / "out", tmp / "run.log"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    with open(log, "wb") as fh:
        proc = subprocess.run([sys.executable, "-m", "bam", "run", "--config", str(cfg), "--out", str(out),
                               "--device", "cpu"], stdout=fh, stderr=subprocess.STDOUT, env=env, umask=0o022,
                              timeout=600, check=False)
    text = log.read_bytes().decode("utf-8", errors="replace")
    assert proc.returncode == 0, text[-3000:]
    return out, text


def test_every_file_of_a_run_honours_the_umask(small_run: tuple[Path, str]) -> None:
    out, _ = small_run
    ev = out / "eval"
    assert {name: oct(mode(ev / name)) for name in EVAL_FILES} == {name: "0o644" for name in EVAL_FILES}
    everything = [p for p in out.rglob("*") if p.is_file()]
    assert len(everything) > len(EVAL_FILES)  # data, models, caches, figures too
    wrong = {str(p.relative_to(out)): oct(mode(p)) for p in everything if mode(p) != 0o644}
    assert wrong == {}


def test_a_run_log_has_no_carriage_returns(small_run: tuple[Path, str]) -> None:
    out, text = small_run
    assert (out / "eval" / "tcav_records.csv").is_file() and "[evaluate]" in text  # the TCAV stage ran
    assert "\r" not in text, repr(text[max(0, text.find("\r") - 200):text.find("\r") + 200])


@pytest.mark.parametrize("umask, expect", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_and_output_sets_honour_the_umask(tmp_path: Path, umask: int, expect: int) -> None:
    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
        with atomic_open(tmp_path / "b.bin", "wb") as fh:
            fh.write(b"y")
        write_output_set(tmp_path / "set", {"results.csv": b"a,b\n", "records.csv": b"c\n"})
    finally:
        os.umask(old)
    files = [tmp_path / "a.txt", tmp_path / "b.bin", *(tmp_path / "set").iterdir()]
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == ["outputs.json", "records.csv", "results.csv"]
    assert {p.name: oct(mode(p)) for p in files} == {p.name: oct(expect) for p in files}

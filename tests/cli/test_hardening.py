"""Hostile inputs (issue 24), each through the CLI with its exit code and one line: symlinks that
leave a root, an edited derived file, two runs into one --out, a card with hostile sizes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner, Result

from bam._lock import LOCK_FILE, output_lock
from bam.cli.main import cli
from bam.errors import BamError

REPO = Path(__file__).resolve().parents[2]
TINY_TRAIN = {"arch": "small_resnet", "arch_kwargs": {"widths": [8, 16, 32]}, "lr": 0.05}
EVAL = ["--method", "gradient", "--config", "ci", "--device", "cpu"]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def error_line(res: Result) -> str:
    """The one ``error:`` line of a failed command (asserting there is exactly one)."""
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    return lines[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny build and a models dir with (untrained) small_resnet checkpoints for the IIR/MCS roles."""
    from bam.data import open_dataset
    from bam.models import ModelCard, create_model, save

    root = tmp_path_factory.mktemp("hard")
    res = run("-q", "build-data", "--recipe", "tiny", "--out", str(root / "data"))
    assert res.exit_code == 0, res.output
    data = open_dataset(root / "data")
    for role in ("obj", "scene", "scene_only"):
        torch.manual_seed(len(role))
        k = len(data.object_classes) if role == "obj" else len(data.scene_classes)
        model = create_model("small_resnet", num_classes=k, image_size=data.image_size, widths=[8, 16, 32])
        card = ModelCard(arch="small_resnet", role=role, num_classes=k, image_size=data.image_size,
                         arch_kwargs={"widths": [8, 16, 32]}, dataset_manifest_hash=data.manifest_hash, recipe="tiny")
        save(model, root / "models" / role, card)
    return root / "data", root / "models"


def _copy_data(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("derived", LOCK_FILE))
    return dst


# --- symlinks ------------------------------------------------------------------------------------


def test_symlinked_image_is_refused_by_show_and_evaluate(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    data, models = tiny
    copy = _copy_data(data, tmp_path / "data")
    outside = tmp_path / "outside"
    for png in sorted((copy / "scenes").rglob("*.png")):  # same bytes elsewhere: the hash alone passes
        target = outside / png.relative_to(copy)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(png, target)
        png.symlink_to(target)
    res = run("data", "show", str(copy), "--out", str(tmp_path / "grid.png"))
    assert res.exit_code == 2
    line = error_line(res)
    assert line.startswith(f"error: dataset image {copy}/scenes/") and f"resolves to {outside}/scenes/" in line
    assert f"outside {copy} (a symlink leaves it)" in line and not (tmp_path / "grid.png").exists()
    res = run("-q", "evaluate", "--data", str(copy), "--models", str(models), "--metric", "mcs", *EVAL,
              "--out", str(tmp_path / "eval"))
    assert res.exit_code == 2
    line = error_line(res)
    assert line.startswith(f"error: dataset image {copy}/scenes/") and f"outside {copy}" in line
    assert not (tmp_path / "eval" / "results.csv").exists()
    res = run("data", "verify", str(copy))
    assert res.exit_code != 0 and "outside" in res.output


def test_symlinked_derived_folder_is_not_written(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    data, models = tiny
    copy = _copy_data(data, tmp_path / "data")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (copy / "derived").symlink_to(outside, target_is_directory=True)
    res = run("-q", "evaluate", "--data", str(copy), "--models", str(models), "--metric", "iir", *EVAL,
              "--out", str(tmp_path / "eval"))
    assert res.exit_code == 2
    assert error_line(res) == (f"error: derived folder {copy}/derived/iir_patch resolves to {outside}/iir_patch, "
                               f"outside {copy} (a symlink leaves it); refusing to use it (replace the link by a "
                               "real file or folder)")
    assert list(outside.iterdir()) == []  # nothing written outside the dataset


def test_symlinked_checkpoint_file_and_cache_folder(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    data, models = tiny
    ckpt = tmp_path / "models" / "obj"
    shutil.copytree(models / "obj", ckpt)
    outside = tmp_path / "weights.safetensors"
    shutil.move(ckpt / "model.safetensors", outside)
    (ckpt / "model.safetensors").symlink_to(outside)
    res = run("models", "list", str(tmp_path / "models"))
    assert res.exit_code == 1
    assert f"checkpoint file {ckpt}/model.safetensors resolves to {outside}, outside {ckpt}" in error_line(res)
    out = tmp_path / "eval"
    (tmp_path / "cache_elsewhere").mkdir()
    out.mkdir()
    (out / "cache").symlink_to(tmp_path / "cache_elsewhere", target_is_directory=True)
    res = run("-q", "evaluate", "--data", str(data), "--models", str(models), "--metric", "mcs", *EVAL,
              "--out", str(out))
    assert res.exit_code == 2
    assert error_line(res).startswith(f"error: evaluation cache folder {out}/cache resolves to "
                                      f"{tmp_path / 'cache_elsewhere'}, outside {out}")
    assert list((tmp_path / "cache_elsewhere").iterdir()) == []


# --- derived files verified --------------------------------------------------------------------------


def test_edited_iir_table_is_rebuilt(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    data, models = tiny
    copy = _copy_data(data, tmp_path / "data")
    args = ["evaluate", "--data", str(copy), "--models", str(models), "--metric", "iir", *EVAL]
    first = run("-q", *args, "--out", str(tmp_path / "a"))
    assert first.exit_code == 0, first.output
    (folder,) = list((copy / "derived" / "iir_patch").iterdir())
    meta = json.loads((folder / "meta.json").read_text())
    assert set(meta["files"]) == {"patch.safetensors", "table.csv"} and meta["meta_sha256"]
    table = (folder / "table.csv").read_text()
    rows = table.splitlines()
    col = rows[0].split(",").index("unchanged")
    i = next((n for n, r in enumerate(rows[1:], 1) if r.split(",")[col] == "True"), 1)
    cells = rows[i].split(",")
    cells[col] = "False" if cells[col] == "True" else "True"
    rows[i] = ",".join(cells)
    (folder / "table.csv").write_text("\n".join(rows) + "\n")
    second = run("-q", *args, "--out", str(tmp_path / "b"))
    assert second.exit_code == 0, second.output
    warn = [ln for ln in second.output.splitlines() if "IIR patch cache" in ln]
    assert warn == [f"IIR patch cache in {folder} is not intact (table.csv does not match its sha256 in meta.json "
                    "(edited or damaged)); rebuilding it"]
    assert (folder / "table.csv").read_text() == table  # rebuilt: the edit is gone
    keep = ["method", "metric", "value", "ci_low", "ci_high", "n_used", "n_excluded", "excluded_reasons"]
    a, b = (pd.read_csv(tmp_path / d / "results.csv")[keep] for d in "ab")
    pd.testing.assert_frame_equal(a, b)  # the rebuilt set gives the first run's IIR
    # an edited meta record (here: the hash of the table made to match the edit) is caught by its own hash
    meta["n_unchanged"] += 1
    (folder / "meta.json").write_text(json.dumps(meta))
    third = run("-q", *args, "--out", str(tmp_path / "c"))
    assert third.exit_code == 0
    assert any("meta.json does not match its own hash" in ln for ln in third.output.splitlines())


# --- locks and the verified checkpoint set ------------------------------------------------------------


@pytest.fixture(scope="module")
def train_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY_TRAIN))
    return path


def _train_args(data: Path, out: Path, config: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--role", "obj", "--out", str(out), "--config", str(config),
            "--batch-size", "16", "--device", "cpu", "-q", *extra]


def test_second_train_into_a_locked_out_is_refused(tiny: tuple[Path, Path], train_config: Path,
                                                   tmp_path: Path) -> None:
    """The first `bam train` (a subprocess) holds the lock; a second into the same --out is refused in
    one line naming it, and the first's checkpoint ends intact and verified."""
    from bam.models import load

    data, _ = tiny
    out = tmp_path / "m"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    first = subprocess.Popen([sys.executable, "-m", "bam", *_train_args(data, out, train_config, "--epochs", "6",
                                                                       "--seed", "1", "--lr", "0.05")],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / LOCK_FILE).is_file() or not (out / LOCK_FILE).read_text().startswith(f"{first.pid} "):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first run never took the lock"
            time.sleep(0.05)
        second = CliRunner().invoke(cli, _train_args(data, out, train_config, "--epochs", "1", "--seed", "7",
                                                     "--lr", "0.02"))
        still_running = first.poll() is None
    finally:
        _stdout, stderr = first.communicate(timeout=600)
    assert still_running, "the first run ended before the second was started; the test did not test the lock"
    assert second.exit_code == 2
    assert error_line(second) == (f"error: {out} is in use by another bam run (pid {first.pid} (bam train) holds "
                                  f"{out / LOCK_FILE}); wait for it to finish or use another output folder")
    assert first.returncode == 0, stderr
    model = load(out)  # every file of the set matches the card
    card = json.loads((out / "card.json").read_text())
    assert card["seed"] == 1 and yaml.safe_load((out / "config.yaml").read_text())["lr"] == 0.05
    assert card["config_sha256"] and card["state_sha256"] and model.card.seed == 1
    res = run("models", "list", str(tmp_path))
    assert res.exit_code == 0 and res.output.strip().splitlines()[-1].split()[-2:] == ["ok", str(out)]


def test_lock_in_this_process_and_stale_locks(tiny: tuple[Path, Path], train_config: Path, tmp_path: Path) -> None:
    data, _ = tiny
    out = tmp_path / "m"
    with output_lock(out, "bam evaluate"):
        res = CliRunner().invoke(cli, _train_args(data, out, train_config, "--epochs", "1"))
        assert res.exit_code == 2
        assert error_line(res) == (f"error: {out} is in use by another bam run (pid {os.getpid()} (bam evaluate) "
                                   f"holds {out / LOCK_FILE}); wait for it to finish or use another output folder")
        assert not (out / "card.json").exists()
        with pytest.raises(BamError, match="in use by another bam run"), output_lock(out, "bam build-data"):
            pass
    # a lock file left by a process that died holding the lock (kill -9) does not block
    code = ("import sys, time\nfrom bam._lock import output_lock\n"
            f"with output_lock({str(out)!r}, 'bam train'):\n    print('locked', flush=True)\n    time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    with pytest.raises(BamError, match=f"pid {holder.pid} "), output_lock(out, "test"):
        pass
    holder.kill()
    holder.wait()
    assert (out / LOCK_FILE).read_text().startswith(f"{holder.pid} ")  # stale content stays ...
    res = CliRunner().invoke(cli, _train_args(data, out, train_config, "--epochs", "1"))
    assert res.exit_code == 0, res.output  # ... but the lock died with its process


def test_mixed_checkpoint_set_is_refused(tiny: tuple[Path, Path], train_config: Path, tmp_path: Path) -> None:
    """The config (or training state) of one run beside the card and weights of another: load and list refuse."""
    from bam.models import load

    data, _ = tiny
    a, b = tmp_path / "models" / "a", tmp_path / "models" / "b"
    for out, lr in ((a, "0.05"), (b, "0.02")):
        assert run(*_train_args(data, out, train_config, "--epochs", "1", "--lr", lr)).exit_code == 0
    shutil.copy(b / "config.yaml", a / "config.yaml")
    with pytest.raises(BamError, match=r"checkpoint .*/a is not one verified set: config\.yaml does not match the "
                                       r"card's sha256 \(from another run, or edited\)"):
        load(a)
    res = run("models", "list", str(tmp_path / "models"))
    assert res.exit_code == 1
    assert error_line(res) == (f"error: 1 of 2 checkpoint(s) failed verification: {a}: config.yaml does not match "
                               "the card's sha256 (from another run, or edited)")
    shutil.copy(b / "train_state.pt", a / "train_state.pt")
    res = run(*_train_args(data, a, train_config, "--epochs", "1", "--lr", "0.05"))
    assert res.exit_code == 2  # a resumed/confirmed run refuses the mixed folder too


# --- hostile sizes ----------------------------------------------------------------------------------

_PROBE = """
import json, resource, sys, time
from bam.errors import BamError
from bam.models import load
import bam.models._header, safetensors.torch  # imports done before measuring
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
try:
    load(sys.argv[1])
    msg = ""
except BamError as exc:
    msg = str(exc)
print(json.dumps({"s": time.perf_counter() - t0, "kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0,
                  "msg": msg}))
"""


def test_oversized_card_is_refused_before_allocating(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    data, models = tiny
    ckpt = tmp_path / "models" / "obj"
    shutil.copytree(models / "obj", ckpt)
    card = json.loads((ckpt / "card.json").read_text())
    card["arch_kwargs"]["widths"] = [4000, 4000, 4000]  # ~0.5 G parameters if built for real
    (ckpt / "card.json").write_text(json.dumps(card))
    res = subprocess.run([sys.executable, "-c", _PROBE, str(ckpt)], env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["msg"].startswith(f"weights {ckpt}/model.safetensors do not fit the card's architecture "
                                 "'small_resnet': tensor '")
    assert "in the weights, the card's architecture needs [4000" in got["msg"] and "\n" not in got["msg"]
    assert got["s"] < 1.0, got  # the real model would take tens of seconds to build
    assert got["kb"] < 200 * 1024, got  # and GBs of memory (peak RSS grew by < 200 MB)
    line_res = run("-q", "evaluate", "--data", str(data), "--models", str(tmp_path / "models"), "--metric", "mcs",
                   *EVAL, "--out", str(tmp_path / "eval"))
    assert line_res.exit_code == 2
    assert error_line(line_res) == f"error: {got['msg']}"


# --- thread settings ----------------------------------------------------------------------------------


def test_omp_num_threads_alone_reaches_torch_and_provenance(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """`bam evaluate` with only OMP_NUM_THREADS=1 set: one intra-op thread, and provenance records the user's
    setting apart from the defaults bam derived from it."""
    from bam._threads import THREAD_ENV, USER_ENV_KEY

    data, models = tiny
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV and k != USER_ENV_KEY}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)})
    out = tmp_path / "eval"
    res = subprocess.run([sys.executable, "-m", "bam", "-q", "evaluate", "--data", str(data), "--models", str(models),
                          "--metric", "mcs", "--limit", "3", *EVAL, "--out", str(out)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    threads = json.loads((out / "provenance.json").read_text())["threads"]
    assert threads["intra_op_threads"] == 1
    assert threads["user_env"] == {"OMP_NUM_THREADS": "1"}
    assert threads["env"]["MKL_NUM_THREADS"] == "1" and threads["env"]["OMP_NUM_THREADS"] == "1"

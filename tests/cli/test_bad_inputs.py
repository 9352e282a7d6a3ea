"""The bad-input campaign of issue #14: every bad input is one line naming the value, and a
non-zero exit; plus the crafted-file cases (path escape, tampered train state, swapped PNG,
edited manifest, tampered weights, full disk) and the wheel install (slow).

To add a case, append a ``Case`` to ``CASES``: ``args`` may use the placeholders of
:func:`_fill` ({data}, {data2}, {model}, {tmp}, {file}, {dir}, {recipe}, {config}); ``setup``
writes the files a case needs into ``tmp`` (e.g. a recipe with one bad field); ``words`` must
all appear in the single output line; ``after`` checks what the command left behind.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from click.testing import CliRunner, Result

from bam.cli.main import cli

REPO = Path(__file__).resolve().parents[2]
TINY_RECIPE = yaml.safe_load((REPO / "datasets" / "tiny.yaml").read_text())
TINY_TRAIN = {"arch": "small_resnet", "arch_kwargs": {"widths": [8, 8, 8]}, "epochs": 1, "batch_size": 16,
              "lr": 0.05}
FAST = ("--device", "cpu", "-q")


@dataclass(frozen=True)
class Case:
    """One bad input: the command line, the exit code and the words its one line must contain."""

    id: str
    args: tuple[str, ...]
    words: tuple[str, ...]
    code: int = 2
    setup: Callable[[Path], None] | None = None
    after: Callable[[Path], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def recipe(**change: Any) -> Callable[[Path], None]:
    """Setup: write {tmp}/recipe.yaml = the tiny recipe with ``change`` (None values delete keys)."""
    def write(tmp: Path) -> None:
        data = {**TINY_RECIPE, **change}
        (tmp / "recipe.yaml").write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not None}))
    return write


def raw_recipe(content: bytes) -> Callable[[Path], None]:
    """Setup: write {tmp}/recipe.yaml with exactly these bytes."""
    def write(tmp: Path) -> None:
        (tmp / "recipe.yaml").write_bytes(content)
    return write


def train_config(**change: Any) -> Callable[[Path], None]:
    """Setup: write {tmp}/config.yaml = the tiny train config with ``change``."""
    def write(tmp: Path) -> None:
        (tmp / "config.yaml").write_text(yaml.safe_dump({**TINY_TRAIN, **change}))
    return write


def raw_config(content: bytes) -> Callable[[Path], None]:
    """Setup: write {tmp}/config.yaml with exactly these bytes."""
    def write(tmp: Path) -> None:
        (tmp / "config.yaml").write_bytes(content)
    return write


def no_build_state(tmp: Path) -> None:
    """After: the failed build left nothing that blocks the next run."""
    assert not (tmp / "out").exists() or not any((tmp / "out").iterdir())


def foreign_dir(tmp: Path) -> None:
    """Setup: {tmp}/out holds an unrelated file."""
    (tmp / "out").mkdir()
    (tmp / "out" / "notes.txt").write_text("mine")


def scenes_recipe(tmp: Path) -> None:
    """Setup: a recipe reading scenes from folders (needs --scenes)."""
    recipe(scene_source="scenes")(tmp)


def results_file(rows: int = 1) -> Callable[[Path], None]:
    """Setup: {tmp}/r.csv, a results.csv with ``rows`` rows (0: the header only)."""
    def write(tmp: Path) -> None:
        from bam.schema import RESULTS_COLUMNS

        row = {c: "" for c in RESULTS_COLUMNS} | {"schema_version": 2, "dataset": "tiny", "model_pair": "obj|scene",
                                                  "method": "gradient", "metric": "mcs", "value": 0.1,
                                                  "direction": "higher", "metric_params": "{}", "space": "pixel"}
        import pandas as pd

        pd.DataFrame([row] * rows, columns=list(RESULTS_COLUMNS)).to_csv(tmp / "r.csv", index=False)
    return write


def interrupted_set(tmp: Path) -> None:
    """Setup: {tmp}/ev holds a results.csv beside the marker of an interrupted output-set swap."""
    (tmp / "ev").mkdir()
    results_file()(tmp)
    shutil.copy(tmp / "r.csv", tmp / "ev" / "results.csv")
    (tmp / "ev" / ".writing").write_text("")


EV = ("evaluate", "--data", "{data}", "--models", "{model}", "--out", "{tmp}/ev", "--device", "cpu", "-q")
EVC = (*EV, "--config", "{config}", "--method", "gradient", "--metric", "mcs")


BD = ("build-data", "--out", "{tmp}/out")
BDR = ("build-data", "--recipe", "{recipe}", "--out", "{tmp}/out")
TR = ("train", "--data", "{data}", "--role", "obj", "--out", "{tmp}/m", *FAST)
TRC = ("train", "--data", "{data}", "--role", "obj", "--out", "{tmp}/m", "--config", "{config}", *FAST)
EX = ("explain", "--data", "{data}", "--model", "{model}", "--out", "{tmp}/x.png", "--device", "cpu", "-q")
SHOW = ("data", "show", "{data}", "--out", "{tmp}/g.png")
SEED_RANGE = "0..4294967295"

CASES = [
    # root options and commands
    Case("root-unknown-option", ("--bogus",), ("No such option", "--bogus")),
    Case("root-unknown-command", ("frobnicate",), ("No such command", "frobnicate")),
    Case("root-missing-out", ("build-data",), ("Missing option", "--out")),
    Case("root-option-needs-value", ("train", "--data"), ("--data", "requires an argument")),
    # build-data: seeds (validated before anything is written)
    Case("build-seed-negative", (*BD, "--seed", "-1"), ("--seed", "-1", SEED_RANGE), after=no_build_state),
    Case("build-seed-2**32", (*BD, "--seed", "4294967296"), ("4294967296", SEED_RANGE), after=no_build_state),
    Case("build-seed-2**64", (*BD, "--seed", "18446744073709551616"), ("18446744073709551616", SEED_RANGE)),
    Case("build-seed-text", (*BD, "--seed", "abc"), ("'abc'", "not an integer")),
    # build-data: recipes by name and path
    Case("build-recipe-unknown", (*BD, "--recipe", "nope"), ("unknown recipe 'nope'", "tiny", "synthetic")),
    Case("build-recipe-missing-file", (*BD, "--recipe", "{tmp}/missing.yaml"), ("missing.yaml", "not found")),
    Case("build-recipe-is-dir", (*BD, "--recipe", "{dir}/"), ("is a directory", "expected a YAML file")),
    Case("build-recipe-not-utf8", BDR, ("recipe.yaml", "not UTF-8", "0xff"), setup=raw_recipe(b"name: \xff\xfe\n")),
    Case("build-recipe-malformed-yaml", BDR, ("malformed YAML", "recipe.yaml"), setup=raw_recipe(b"name: [tiny\n")),
    Case("build-recipe-not-mapping", BDR, ("expected a mapping", "list"), setup=raw_recipe(b"- a\n- b\n")),
    Case("build-recipe-empty", BDR, ("missing config key(s)", "name", "object_classes", "common_object"),
         setup=raw_recipe(b"")),
    Case("build-recipe-missing-keys", BDR, ("missing config key(s)", "common_scene", "iir_scene"),
         setup=recipe(common_scene=None, iir_scene=None)),
    Case("build-recipe-unknown-key", BDR, ("unknown config key(s) colour", "accepted:", "image_size"),
         setup=recipe(colour="red")),
    Case("build-rotation-negative", BDR, ("synthetic_max_rotation -400", "0..180"),
         setup=recipe(synthetic_max_rotation=-400), after=no_build_state),
    Case("build-rotation-too-large", BDR, ("synthetic_max_rotation 181", "0..180"),
         setup=recipe(synthetic_max_rotation=181)),
    Case("build-rotation-nan", BDR, ("synthetic_max_rotation", "finite", "nan"),
         setup=raw_recipe(yaml.safe_dump(TINY_RECIPE).encode() + b"synthetic_max_rotation: .nan\n")),
    Case("build-image-size-small", BDR, ("image_size 8", "16..1024"), setup=recipe(image_size=8)),
    Case("build-image-size-text", BDR, ("image_size", "expected an integer", "'big'"), setup=recipe(image_size="big")),
    Case("build-instances-one", BDR, ("instances_per_class 1", "2..100000"), setup=recipe(instances_per_class=1)),
    Case("build-instances-huge", BDR, ("instances_per_class 1000000000", "2..100000"),
         setup=recipe(instances_per_class=10**9)),
    Case("build-val-zero", BDR, ("val_instances 0", "1..11"), setup=recipe(val_instances=0)),
    Case("build-val-all", BDR, ("val_instances 12", "1..11"), setup=recipe(val_instances=12)),
    Case("build-corrupt-fraction", BDR, ("max_corrupt_fraction 2.0", "0..1"), setup=recipe(max_corrupt_fraction=2)),
    Case("build-classes-not-list", BDR, ("object_classes", "expected a list", "'circle'"),
         setup=recipe(object_classes="circle")),
    Case("build-one-class", BDR, ("object_classes needs at least 2", "circle"),
         setup=recipe(object_classes=["circle"])),
    Case("build-common-object", BDR, ("common_object 'dog'", "accepted: circle, cross, triangle"),
         setup=recipe(common_object="dog")),
    Case("build-bad-name", BDR, ("'../evil'", "bad name"), setup=recipe(name="../evil")),
    Case("build-source-unknown", BDR, ("object_source 'flickr'", "synthetic, coco"),
         setup=recipe(object_source="flickr")),
    Case("build-scene-folder-escape", BDR, ("scene_folders.checker", "'../../etc'", "no '..'"),
         setup=recipe(scene_folders={"checker": "../../etc"})),
    Case("build-scene-folder-type", BDR, ("scene_folders.checker", "expected a string", "5"),
         setup=recipe(scene_folders={"checker": 5})),
    Case("build-scene-folder-class", BDR, ("scene_folders names unknown class(es)", "'desert'"),
         setup=recipe(scene_folders={"desert": "d/desert"})),
    Case("build-scenes-missing", BDR, ("scene_source 'scenes'", "--scenes DIR"), setup=scenes_recipe),
    Case("build-scenes-is-file", (*BDR, "--scenes", "{file}"), ("--scenes", "is a file", "expected a directory"),
         setup=scenes_recipe),
    Case("build-coco-missing", BDR, ("object_source 'coco'", "--coco-images DIR"), setup=recipe(object_source="coco")),
    # build-data: output directory
    Case("build-out-is-file", ("build-data", "--recipe", "tiny", "--out", "{file}"), ("--out", "is a file")),
    Case("build-out-foreign", ("build-data", "--recipe", "tiny", "--out", "{tmp}/out"),
         ("not empty and holds no bam build", "out"), setup=foreign_dir),
    Case("build-out-other-seed", ("build-data", "--recipe", "tiny", "--seed", "5", "--out", "{data}"),
         ("holds recipe 'tiny' seed 0", "asked for recipe 'tiny' seed 5")),
    Case("build-workers-zero", (*BD, "--workers", "0"), ("--workers", "0", "x>=1")),
    # data verify / show
    Case("verify-missing", ("data", "verify", "{tmp}/nope"), ("nope", "does not exist", "expected a directory")),
    Case("verify-is-file", ("data", "verify", "{file}"), ("is a file", "expected a directory")),
    Case("verify-no-manifest", ("data", "verify", "{dir}"), ("not a complete bam dataset", "no manifest.json")),
    Case("verify-bad-json", ("data", "verify", "{tmp}/d"), ("malformed JSON", "manifest.json"),
         setup=lambda t: ((t / "d").mkdir(), (t / "d" / "manifest.json").write_text("{nope"))),
    Case("show-n-zero", (*SHOW, "--n", "0"), ("--n", "0", "1<=x<=256")),
    Case("show-n-huge", (*SHOW, "--n", "1000"), ("--n", "1000")),
    Case("show-subset", (*SHOW, "--subset", "nope"), ("unknown subset 'nope'", "obj", "commonality-3")),
    Case("show-split", (*SHOW, "--split", "both"), ("--split", "'both'")),
    Case("show-out-dir", ("data", "show", "{data}", "--out", "{dir}"), ("--out", "is a directory")),
    Case("show-seed", (*SHOW, "--seed", "-5"), ("--seed", "-5", SEED_RANGE)),
    Case("show-data-missing", ("data", "show", "{tmp}/nope", "--out", "{tmp}/g.png"), ("nope", "does not exist")),
    # train
    Case("train-role", ("train", "--data", "{data}", "--role", "objects", "--out", "{tmp}/m", *FAST),
         ("unknown role 'objects'", "obj, scene, scene_only", "commonality-1..commonality-3")),
    Case("train-role-k", ("train", "--data", "{data}", "--role", "commonality-4", "--out", "{tmp}/m", *FAST),
         ("unknown role 'commonality-4'", "commonality-1..commonality-3")),
    Case("train-missing-role", ("train", "--data", "{data}", "--out", "{tmp}/m"), ("Missing option", "--role")),
    Case("train-arch", (*TR, "--arch", "vgg"), ("--arch", "'vgg'", "small_resnet")),
    Case("train-config-unknown", (*TR, "--config", "nope"), ("unknown train config 'nope'", "synthetic")),
    Case("train-config-dir", (*TR, "--config", "{dir}/"), ("train config file", "is a directory")),
    Case("train-epochs-zero", (*TR, "--epochs", "0"), ("epochs=0", "an integer >= 1")),
    Case("train-batch-negative", (*TR, "--batch-size", "-1"), ("batch_size=-1", "an integer >= 1")),
    Case("train-lr-negative", (*TR, "--lr", "-1"), ("lr=-1.0", "a finite number > 0")),
    Case("train-lr-nan", (*TR, "--lr", "nan"), ("lr", "finite", "nan")),
    Case("train-workers-negative", (*TR, "--workers", "-1"), ("workers=-1", ">= 0")),
    Case("train-seed-negative", (*TR, "--seed", "-1"), ("--seed", "-1", SEED_RANGE)),
    Case("train-seed-2**64", (*TR, "--seed", "18446744073709551616"), ("18446744073709551616", SEED_RANGE)),
    Case("train-device", (*TR, "--device", "tpu"), ("unknown device 'tpu'", "auto, cpu, cuda")),
    Case("train-data-missing", ("train", "--data", "{tmp}/nope", "--role", "obj", "--out", "{tmp}/m", *FAST),
         ("nope", "does not exist", "expected a directory")),
    Case("train-data-file", ("train", "--data", "{file}", "--role", "obj", "--out", "{tmp}/m", *FAST),
         ("is a file", "expected a directory")),
    Case("train-data-empty", ("train", "--data", "{dir}", "--role", "obj", "--out", "{tmp}/m", *FAST),
         ("not a complete bam dataset", "no manifest.json", "bam build-data")),
    Case("train-out-file", ("train", "--data", "{data}", "--role", "obj", "--out", "{file}", *FAST),
         ("--out", "is a file")),
    Case("train-pretrained", (*TR, "--arch", "small_resnet", "--pretrained"), ("has no pretrained weights",)),
    Case("train-config-unknown-key", TRC, ("unknown config key(s) epochz", "epochs"), setup=train_config(epochz=3)),
    Case("train-config-not-utf8", TRC, ("config.yaml", "not UTF-8"), setup=raw_config(b"lr: 0.1 \xe9\xff\n")),
    Case("train-config-kwargs-type", TRC, ("arch_kwargs", "expected a mapping", "5"),
         setup=train_config(arch_kwargs=5)),
    Case("train-config-warmup", TRC, ("warmup_epochs=5", "[0, epochs]"), setup=train_config(warmup_epochs=5)),
    Case("train-config-input-size", TRC, ("input_size=5", "16..4096"), setup=train_config(input_size=5)),
    Case("train-config-optimizer", TRC, ("optimizer 'rmsprop'", "adamw, sgd"), setup=train_config(optimizer="rmsprop")),
    Case("train-config-seed", TRC, ("seed=-3", SEED_RANGE), setup=train_config(seed=-3)),
    Case("train-config-seed-huge", TRC, ("seed=4294967296", SEED_RANGE), setup=train_config(seed=2**32)),
    Case("train-config-bool", TRC, ("hflip", "expected true/false", "'yes'"), setup=train_config(hflip="yes")),
    Case("train-resume-other-lr", ("train", "--data", "{data}", "--role", "obj", "--out", "{model}",
                                   "--config", "{config}", "--lr", "0.5", *FAST),
         ("setting 'lr' differs", "checkpoint 0.05, now 0.5"), setup=train_config()),
    Case("train-resume-other-data", ("train", "--data", "{data2}", "--role", "obj", "--out", "{model}",
                                     "--config", "{config}", *FAST),
         ("setting 'dataset_manifest_hash' differs",), setup=train_config()),
    # models / methods
    Case("models-missing", ("models", "list", "{tmp}/nope"), ("models directory", "nope", "does not exist")),
    Case("models-file", ("models", "list", "{file}"), ("ROOT", "is a file")),
    Case("models-command", ("models", "bogus"), ("No such command 'bogus'",)),
    Case("methods-unknown", ("methods", "show", "nope"), ("unknown method 'nope'", "gradient", "plug-in")),
    Case("methods-plugin-module", ("methods", "show", "no_such_pkg.mod:fn"), ("no_such_pkg.mod", "cannot import")),
    Case("methods-plugin-attr", ("methods", "show", "os:path"), ("'os:path'", "not callable")),
    Case("methods-option", ("methods", "list", "--tabel"), ("No such option", "--tabel")),
    # explain
    Case("explain-micro-batch", (*EX, "--micro-batch", "-1"), ("--micro-batch", "-1", "x>=0")),
    Case("explain-images-zero", (*EX, "--images", "0"), ("--images", "0", "1<=x<=64")),
    Case("explain-images-huge", (*EX, "--images", "1000"), ("--images", "1000", "1<=x<=64")),
    Case("explain-images-text", (*EX, "--images", "four"), ("--images", "'four'")),
    Case("explain-method", (*EX, "--method", "nope"), ("unknown method 'nope'",)),
    Case("explain-other-dataset", ("explain", "--data", "{data2}", "--model", "{model}", "--out", "{tmp}/x.png",
                                   "--device", "cpu"),
         ("was trained on dataset manifest", "but the data has manifest")),
    Case("explain-model-missing", ("explain", "--data", "{data}", "--model", "{tmp}/nope", "--out", "{tmp}/x.png"),
         ("checkpoint dir", "nope", "does not exist")),
    Case("explain-model-empty", ("explain", "--data", "{data}", "--model", "{dir}", "--out", "{tmp}/x.png"),
         ("no model card", "card.json")),
    Case("explain-data-file", ("explain", "--data", "{file}", "--model", "{model}", "--out", "{tmp}/x.png"),
         ("--data", "is a file")),
    Case("explain-subset", (*EX, "--subset", "nope"), ("unknown subset 'nope'",)),
    Case("explain-split", (*EX, "--split", "test"), ("--split", "'test'")),
    Case("explain-out-dir", ("explain", "--data", "{data}", "--model", "{model}", "--out", "{dir}"),
         ("--out", "is a directory")),
    Case("explain-seed", (*EX, "--seed", "99999999999"), ("99999999999", SEED_RANGE)),
    Case("explain-device", (*EX, "--device", "gpu"), ("unknown device 'gpu'",)),
    # evaluate (names, configs, parameters: all checked before any attribution is computed)
    Case("ev-method-unknown", (*EV, "--method", "nope"), ("unknown method 'nope'", "gradient", "tcav")),
    Case("ev-metric-unknown", (*EV, "--metric", "xyz"), ("--metric", "'xyz'")),
    Case("ev-config-unknown", (*EV, "--config", "nope"), ("unknown eval config 'nope'", "default", "paper")),
    Case("ev-config-typo-images", EVC, ("unknown metric in eval config images 'mcss'", "mcs"),
         setup=raw_config(b"images: {mcss: 27}\n")),
    Case("ev-config-unknown-key", EVC, ("unknown config key(s) bogus",), setup=raw_config(b"bogus: 1\n")),
    Case("ev-config-nested-key", EVC, ("unknown config key(s) stepz", "iir_patch"),
         setup=raw_config(b"iir_patch: {stepz: 3}\n")),
    Case("ev-config-method-params-typo", EVC, ("unknown method in eval config method_params", "integrated_gradient"),
         setup=raw_config(b"method_params: {integrated_gradient: {steps: 8}}\n")),
    Case("ev-param-negative", (*EV, "--config", "{config}", "--method", "integrated_gradients", "--metric", "mcs"),
         ("steps=-3 is invalid", "integer >= 2"),
         setup=raw_config(b"method_params: {integrated_gradients: {steps: -3}}\n")),
    Case("ev-param-unknown", EVC, ("unknown parameter(s) stepz for method 'gradient'",),
         setup=raw_config(b"method_params: {gradient: {stepz: 3}}\n")),
    Case("ev-metric-param-unknown", EVC, ("unknown parameter(s) treshold for metric 'iir'", "threshold"),
         setup=raw_config(b"metric_params: {iir: {treshold: 0.2}}\n")),
    Case("ev-space", EVC, ("space 'latent' is invalid", "pixel, model"), setup=raw_config(b"space: latent\n")),
    Case("ev-images-zero", EVC, ("images.mcs = 0", "positive integer"), setup=raw_config(b"images: {mcs: 0}\n")),
    Case("ev-limit-zero", (*EV, "--limit", "0"), ("--limit", "0", "x>=1")),
    Case("ev-seed", (*EV, "--seed", "-1"), ("--seed", "-1", SEED_RANGE)),
    Case("ev-data-missing", ("evaluate", "--data", "{tmp}/nope", "--models", "{model}", "--out", "{tmp}/ev"),
         ("nope", "does not exist", "bam build-data")),
    Case("ev-models-missing", ("evaluate", "--data", "{data}", "--models", "{tmp}/nope", "--out", "{tmp}/ev"),
         ("nope", "does not exist")),
    Case("ev-out-file", ("evaluate", "--data", "{data}", "--models", "{model}", "--out", "{file}"),
         ("--out", "is a file")),
    Case("ev-missing-role", (*EV, "--method", "gradient", "--metric", "mcs"),
         ("metric mcs needs standard model role(s) scene", "bam train --data", "--role scene")),
    # compare
    Case("cmp-missing", ("compare", "{tmp}/a.csv", "{tmp}/b.csv"), ("results file not found", "a.csv")),
    Case("cmp-empty-baseline", ("compare", "{tmp}/r.csv", "{tmp}/r.csv"), ("has a header but no rows", "r.csv"),
         setup=results_file(0)),
    Case("cmp-tolerance", ("compare", "{tmp}/r.csv", "{tmp}/r.csv", "--tolerance", "-1"), ("--tolerance -1",),
         setup=results_file()),
    Case("cmp-out-dir", ("compare", "{tmp}/r.csv", "{tmp}/r.csv", "--out", "{dir}"), ("--out", "is a directory"),
         setup=results_file()),
    Case("cmp-dir-as-file", ("compare", "{dir}", "{dir}"), ("is a directory", "results.csv")),
    Case("cmp-interrupted-set", ("compare", "{tmp}/r.csv", "{tmp}/ev/results.csv"), ("partly written output set",),
         setup=interrupted_set),
    # report
    Case("report-missing", ("report", "{tmp}/nope"), ("nope", "not found", "bam evaluate")),
    Case("report-file", ("report", "{file}"), ("a file", "expected a folder")),
    Case("report-interrupted-set", ("report", "{tmp}/ev"), ("partly written output set",), setup=interrupted_set),
    Case("report-worst", ("report", "{tmp}/ev", "--worst", "-1"), ("--worst", "-1")),
    # run
    Case("run-stage", ("run", "--out", "{tmp}/r", "--stages", "build,deploy"), ("deploy", "build, train, evaluate")),
    Case("run-config", ("run", "--out", "{tmp}/r", "--config", "nope"), ("unknown run config 'nope'", "synthetic")),
    Case("run-repeats", ("run", "--out", "{tmp}/r", "--repeats", "0"), ("--repeats", "0", "1<=x<=100")),
    Case("run-seed", ("run", "--out", "{tmp}/r", "--seed", "-5"), ("--seed", "-5", SEED_RANGE)),
    Case("run-config-key", ("run", "--out", "{tmp}/r", "--config", "{config}"), ("unknown config key(s) recipie",),
         setup=raw_config(b"recipie: tiny\n")),
]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny datasets (seeds 0 and 1) and a model trained on the first."""
    root = tmp_path_factory.mktemp("campaign")
    for name, seed in (("data", "0"), ("data2", "1")):
        res = CliRunner().invoke(cli, ["-q", "build-data", "--recipe", "tiny", "--seed", seed,
                                       "--out", str(root / name)])
        assert res.exit_code == 0, res.output
    cfg = root / "train.yaml"
    cfg.write_text(yaml.safe_dump(TINY_TRAIN))
    res = CliRunner().invoke(cli, ["train", "--data", str(root / "data"), "--role", "obj", "--out", str(root / "model"),
                                   "--config", str(cfg), *FAST])
    assert res.exit_code == 0, res.output
    (root / "a_file.txt").write_text("not a directory")
    return {"data": root / "data", "data2": root / "data2", "model": root / "model", "file": root / "a_file.txt"}


def _fill(args: tuple[str, ...], env: dict[str, Path], tmp: Path) -> list[str]:
    """Substitute the placeholders of a case's command line."""
    (tmp / "empty").mkdir(exist_ok=True)
    names = {**{k: str(v) for k, v in env.items()}, "tmp": str(tmp), "dir": str(tmp / "empty"),
             "recipe": str(tmp / "recipe.yaml"), "config": str(tmp / "config.yaml")}
    return [a.format(**names) for a in args]


def one_line(res: Result) -> str:
    """The single non-empty output line of a failed command (asserting there is exactly one)."""
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    assert lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_clear_line(case: Case, env: dict[str, Path], tmp_path: Path) -> None:
    if case.setup is not None:
        case.setup(tmp_path)
    res = CliRunner().invoke(cli, _fill(case.args, env, tmp_path))
    assert res.exit_code == case.code, res.output
    line = one_line(res)
    for word in case.words:
        assert word.format(tmp=tmp_path) in line, (word, line)
    if case.after is not None:
        case.after(tmp_path)


def test_campaign_size() -> None:
    """Issue #14 asks for at least 60 bad inputs; ids stay unique so failures are findable."""
    assert len(CASES) >= 60 and len({c.id for c in CASES}) == len(CASES)


# --- crafted files ------------------------------------------------------------------------------

def _interrupted_build(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tiny build stopped after its first class (a resumable folder with a .build_state.json)."""
    import bam.data.build as build

    real = build.run_unit
    calls = {"n": 0}

    def die_second(args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(args)

    out = tmp / "out"
    monkeypatch.setattr(build, "run_unit", die_second)
    res = CliRunner().invoke(cli, ["-q", "build-data", "--recipe", "tiny", "--out", str(out)])
    monkeypatch.setattr(build, "run_unit", real)
    assert res.exit_code == 130 and one_line(res) == "error: interrupted; re-run the same command to resume"
    assert (out / ".build_state.json").is_file() and not (out / "manifest.json").exists()
    return out


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_crafted_build_state_cannot_touch_files_outside_out(kind: str, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """SECURITY: a crafted .build_state.json naming a file outside --out neither hashes nor deletes it."""
    out = _interrupted_build(tmp_path, monkeypatch)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    state = json.loads((out / ".build_state.json").read_text())
    unit = next(iter(state["units"].values()))
    rel = {"dotdot": "../victim.txt", "absolute": str(victim), "symlink": "objects/circle/link.png"}[kind]
    if kind == "symlink":
        (out / "objects" / "circle" / "link.png").symlink_to(victim)
    unit["files"] = {rel: "0" * 64, **unit["files"]}
    unit["items"].append("x")
    unit["hw"].append([1, 1])
    (out / ".build_state.json").write_text(json.dumps(state))
    res = CliRunner().invoke(cli, ["-q", "build-data", "--recipe", "tiny", "--out", str(out)])
    assert res.exit_code == 2
    line = one_line(res)
    assert ".build_state.json" in line and "victim.txt" in line
    assert ("escapes" if kind != "symlink" else "outside") in line
    assert victim.read_text() == "precious"


def test_interrupted_build_resumes_with_the_same_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = _interrupted_build(tmp_path, monkeypatch)
    res = CliRunner().invoke(cli, ["-q", "build-data", "--recipe", "tiny", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "manifest_hash a667ae6f67baf20b" in res.output  # the same bytes as an uninterrupted build


def test_crafted_manifest_paths_are_refused(env: dict[str, Path], tmp_path: Path) -> None:
    """A manifest listing ../ or absolute paths: verify reports them unsafe (never opens them);
    opening the dataset refuses the manifest."""
    from bam.data import open_dataset, verify_dataset
    from bam.errors import BamError

    data = tmp_path / "data"
    shutil.copytree(env["data"], data)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["files"]["../secret.txt"] = "0" * 64
    manifest["files"]["/etc/hostname"] = "0" * 64
    manifest["subsets"]["obj"]["file"] = "../secret.txt"
    (data / "manifest.json").write_text(json.dumps(manifest))
    problems = verify_dataset(data)
    assert sum(p.startswith("unsafe path:") for p in problems) == 2
    assert any("'../secret.txt' escapes" in p for p in problems) and any("'/etc/hostname'" in p for p in problems)
    with pytest.raises(BamError, match="is not self-consistent"):
        open_dataset(data)


def test_edited_instances_per_class_fails_verify_and_open(env: dict[str, Path], tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(env["data"], data)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["instances_per_class"] = 11
    (data / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    res = CliRunner().invoke(cli, ["data", "verify", str(data)])
    assert res.exit_code == 1 and "inconsistent manifest: manifest train_instances is 9" in res.output
    res = CliRunner().invoke(cli, ["data", "show", str(data), "--out", str(tmp_path / "g.png")])
    assert res.exit_code == 2
    assert "is not self-consistent" in one_line(res) and f"bam data verify {data}" in res.output


def test_swapped_png_is_refused_when_read(env: dict[str, Path], tmp_path: Path) -> None:
    """A valid PNG swapped for another changes nothing in the manifest, but reading it fails."""
    data = tmp_path / "data"
    shutil.copytree(env["data"], data)
    a, b = data / "objects" / "circle" / "0000.png", data / "objects" / "circle" / "0001.png"
    a.write_bytes(b.read_bytes())
    for args in (["data", "show", str(data), "--subset", "obj", "--split", "train", "--n", "81",
                  "--out", str(tmp_path / "g.png")],
                 ["train", "--data", str(data), "--role", "obj", "--out", str(tmp_path / "m"), *FAST]):
        res = CliRunner().invoke(cli, args)
        assert res.exit_code == 2
        line = one_line(res)
        assert "objects/circle/0000.png does not match its manifest hash" in line and "bam data verify" in line
    assert not (tmp_path / "m" / "card.json").exists()


def test_tampered_weights_marked_by_models_list(env: dict[str, Path], tmp_path: Path) -> None:
    models = tmp_path / "models"
    shutil.copytree(env["model"], models / "good")
    shutil.copytree(env["model"], models / "bad")
    blob = bytearray((models / "bad" / "model.safetensors").read_bytes())
    blob[-3] ^= 0x01
    (models / "bad" / "model.safetensors").write_bytes(bytes(blob))
    res = CliRunner().invoke(cli, ["models", "list", str(models)])
    assert res.exit_code == 1
    rows = {line.split()[-1]: line.split()[-2] for line in res.stdout.splitlines()[2:]}
    assert rows == {str(models / "bad"): "FAILED", str(models / "good"): "ok"}
    assert res.stderr.strip().splitlines() == [f"error: 1 of 2 checkpoint(s) failed verification: {models / 'bad'}: "
                                               "model.safetensors does not match the card's sha256 (corrupt or edited)"]


def _interrupted_training(env: dict[str, Path], tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """`bam train` (2 epochs) killed by Ctrl-C right after epoch 1 was saved; returns the command."""
    import bam.train.trainer as trainer

    cfg = tmp / "train.yaml"
    cfg.write_text(yaml.safe_dump({**TINY_TRAIN, "epochs": 2}))
    args = ["train", "--data", str(env["data"]), "--role", "scene", "--out", str(tmp / "m"), "--config", str(cfg),
            *FAST]
    real = trainer.save_state

    def save_then_die(out_dir: Path, state: dict[str, Any]) -> None:
        real(out_dir, state)
        if state["epoch"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "save_state", save_then_die)
    res = CliRunner().invoke(cli, args)
    monkeypatch.setattr(trainer, "save_state", real)
    assert res.exit_code == 130 and one_line(res) == "error: interrupted; re-run the same command to resume"
    return args


def test_train_after_ctrl_c_the_same_command_resumes(env: dict[str, Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    args = _interrupted_training(env, tmp_path, monkeypatch)
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert res.output.startswith("scene (small_resnet): val")
    state = torch.load(tmp_path / "m" / "train_state.pt", weights_only=True)
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0 and "already trained (2 epochs), nothing to do" in res.output
    assert f"card: {tmp_path / 'm' / 'card.json'}" in res.output


def _flip_tensor_byte(path: Path) -> None:
    """Flip one byte in the middle of the largest tensor storage of a torch zip file."""
    import zipfile

    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    blob = bytearray(path.read_bytes())
    start = info.header_offset + 30 + int.from_bytes(blob[info.header_offset + 26:info.header_offset + 28], "little") \
        + int.from_bytes(blob[info.header_offset + 28:info.header_offset + 30], "little")
    blob[start + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("damage", ["edited-tensor", "flipped-byte", "no-checksum"])
def test_tampered_train_state_is_refused(damage: str, env: dict[str, Path], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    args = _interrupted_training(env, tmp_path, monkeypatch)
    path = tmp_path / "m" / "train_state.pt"
    if damage == "flipped-byte":
        _flip_tensor_byte(path)
    else:
        state = torch.load(path, weights_only=True)
        if damage == "edited-tensor":
            key = next(iter(state["model"]))
            state["model"][key].view(-1)[0] += 1.0
        else:
            del state["checksum"]
        torch.save(state, path)
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2
    line = one_line(res)
    assert f"training state {path} is damaged" in line and "delete it" in line
    assert not (tmp_path / "m" / "card.json").exists()


def test_tampered_best_weights_refused_on_resume(env: dict[str, Path], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    args = _interrupted_training(env, tmp_path, monkeypatch)
    weights = tmp_path / "m" / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0x01
    weights.write_bytes(bytes(blob))
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2 and "does not match the hash in train_state.pt" in one_line(res)


def test_full_disk_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC raised by the low-level write (which names no file) is reported with the path."""
    import bam._io

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(bam._io.os, "fsync", no_space)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["-q", "build-data", "--recipe", "tiny", "--out", str(out)])
    assert res.exit_code == 1
    line = one_line(res)
    assert line.startswith("error: No space left on device: ") and str(out) in line
    assert not list(out.rglob(".*.tmp"))  # the temp file of the failed write is gone


# --- the installed package ----------------------------------------------------------------------

def _copy_source(dst: Path) -> None:
    """The files a wheel is built from (not build/ or egg-info leftovers of the working tree)."""
    for name in ("bam", "datasets", "configs"):
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dst / name)


@pytest.mark.slow
def test_wheel_install_runs_outside_the_repo(tmp_path: Path) -> None:
    """Build a wheel, install it into a fresh venv (dependencies from this interpreter's
    site-packages through a .pth added after the install), and run bam from another directory."""
    import site
    import sysconfig

    src, wheels, venv, work = tmp_path / "src", tmp_path / "wheels", tmp_path / "venv", tmp_path / "work"
    src.mkdir()
    work.mkdir()
    _copy_source(src)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    run = {"check": True, "capture_output": True, "text": True, "env": env}
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(src)], cwd=src, **run)
    wheel = next(wheels.glob("bam-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", str(venv)], **run)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], **run)
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             **run).stdout.strip()
    deps = [p for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (Path(purelib) / "_bam_test_deps.pth").write_text("\n".join(deps) + "\n")
    bam = str(venv / "bin" / "bam")
    where = subprocess.run([str(py), "-c", "import bam, bam.config as c; print(bam.__file__); "
                                           "print(c.resource_dir('datasets'))"], cwd=work, **run).stdout.split()
    assert all(w.startswith(str(venv)) for w in where), where
    out = subprocess.run([bam, "methods", "list"], cwd=work, **run).stdout
    assert "integrated_gradients" in out and "gradcam" in out
    out = subprocess.run([bam, "train", "--help"], cwd=work, **run).stdout
    assert "--config" in out and "configs/train" in out
    (work / "synthetic").mkdir()  # a same-named folder in the cwd does not shadow the built-in recipe
    out = subprocess.run([bam, "-q", "build-data", "--recipe", "synthetic", "--out", str(work / "data")],
                         cwd=work, **run).stdout
    assert "recipe synthetic seed 0, 40000 composites" in out
    res = subprocess.run([bam, "build-data", "--recipe", "nope", "--out", str(work / "x")], cwd=work,
                         capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "paper, synthetic, synthetic_full, tiny" in res.stderr
    # `bam run --config synthetic --stages build` is the command; `bam run` is being
    # reshaped by the lead (issue #10), so this test drives build-data directly.

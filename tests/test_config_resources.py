"""bam.config: built-in resources through importlib.resources, name-vs-path resolution, YAML
reading, dataclass loading (unknown/missing keys at every level, types), seeds; the train
config's --arch rule; bam._paths."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from bam._paths import inside, require_dir, require_file
from bam.config import check_seed, from_dict, load_config, read_yaml, resolve_named, resource_dir, resource_names
from bam.errors import BamError
from bam.train.config import TrainConfig, config_for_arch, load_train_config

REPO = Path(__file__).resolve().parents[1]


def test_resources_in_a_source_checkout_are_the_top_level_folders() -> None:
    assert resource_dir("datasets") == REPO / "datasets"
    assert resource_dir("configs/train") == REPO / "configs" / "train"
    assert resource_dir("nope") is None and resource_names("nope") == []
    assert resource_names("datasets") == sorted(p.stem for p in (REPO / "datasets").glob("*.yaml"))
    assert {"synthetic", "synthetic_iresnet"} <= set(resource_names("configs/train"))


def test_shipped_resources_come_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed package reads bam/_resources/<folder> (the wheel's copy), not the source tree."""
    import importlib.resources

    shipped = tmp_path / "_resources"
    (shipped / "datasets").mkdir(parents=True)
    (shipped / "datasets" / "only_here.yaml").write_text("name: only_here\n")
    monkeypatch.setattr(importlib.resources, "files", lambda pkg: shipped if pkg == "bam._resources" else None)
    assert resource_dir("datasets") == shipped / "datasets"
    assert resource_names("datasets") == ["only_here"]
    assert resolve_named("only_here", "datasets", "recipe") == shipped / "datasets" / "only_here.yaml"


def test_setup_py_maps_every_resource_folder() -> None:
    """The wheel layout: every folder under datasets/ and configs/ becomes a bam._resources package."""
    import runpy
    from unittest import mock

    with mock.patch("setuptools.setup") as setup:
        runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
    kwargs = setup.call_args.kwargs
    assert {"bam", "bam.cli", "bam.data.sources", "bam._resources"} <= set(kwargs["packages"])
    assert {"bam._resources.datasets", "bam._resources.configs.train", "bam._resources.configs.eval",
            "bam._resources.configs.run"} <= set(kwargs["packages"])
    assert kwargs["package_dir"] == {"bam._resources.datasets": "datasets", "bam._resources.configs": "configs"}
    assert kwargs["package_data"]["bam._resources.configs.train"] == ["*.yaml"]


def test_builtin_names_win_over_cwd_folders_unless_path_like(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").mkdir()  # a folder named like the built-in recipe
    assert resolve_named("tiny", "datasets", "recipe") == REPO / "datasets" / "tiny.yaml"
    with pytest.raises(BamError, match=r"recipe file tiny is a directory; expected a YAML file"):
        resolve_named("./tiny", "datasets", "recipe")
    (tmp_path / "tiny.yaml").write_text("name: mine\n")
    assert resolve_named("tiny", "datasets", "recipe") == REPO / "datasets" / "tiny.yaml"
    assert resolve_named("tiny.yaml", "datasets", "recipe") == Path("tiny.yaml")
    (tmp_path / "myrecipe").write_text("name: mine\n")  # not a built-in name: an existing file is used
    assert resolve_named("myrecipe", "datasets", "recipe") == Path("myrecipe")
    with pytest.raises(BamError, match=r"unknown recipe 'nope'; accepted: paper, synthetic, synthetic_full, tiny"):
        resolve_named("nope", "datasets", "recipe")
    with pytest.raises(BamError, match="empty recipe name"):
        resolve_named("", "datasets", "recipe")


def test_read_yaml_errors(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(BamError, match=r"latin1.yaml is not UTF-8 text \(byte 0xe9 at offset 9\)"):
        read_yaml(tmp_path / "latin1.yaml")
    with pytest.raises(BamError, match="is a directory; expected a file"):
        read_yaml(tmp_path)
    with pytest.raises(BamError, match="does not exist; expected a file"):
        read_yaml(tmp_path / "missing.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert read_yaml(tmp_path / "empty.yaml") == {}


@dataclass(frozen=True)
class Inner:
    k: int = 1


@dataclass(frozen=True)
class Outer:
    name: str
    size: int
    inner: Inner = field(default_factory=Inner)
    mapping: dict[str, int] = field(default_factory=dict)
    pair: tuple[int, int] = (0, 0)
    ratio: float = 0.5


def test_from_dict_names_unknown_missing_and_mistyped_keys() -> None:
    assert from_dict(Outer, {"name": "a", "size": 2, "inner": {"k": 3}}).inner.k == 3
    with pytest.raises(BamError, match=r"^missing config key\(s\) size in Outer; required: name, size$"):
        from_dict(Outer, {"name": "a"})
    with pytest.raises(BamError, match=r"unknown config key\(s\) kk in Outer.inner; accepted: k"):
        from_dict(Outer, {"name": "a", "size": 2, "inner": {"kk": 3}}, "Outer")
    with pytest.raises(BamError, match=r"Outer.mapping.x: expected an integer, got 'big'"):
        from_dict(Outer, {"name": "a", "size": 2, "mapping": {"x": "big"}}, "Outer")
    with pytest.raises(BamError, match=r"Outer.pair: expected a list of 2 values, got 3"):
        from_dict(Outer, {"name": "a", "size": 2, "pair": [1, 2, 3]}, "Outer")
    with pytest.raises(BamError, match=r"Outer.ratio: expected a finite number, got inf"):
        from_dict(Outer, {"name": "a", "size": 2, "ratio": float("inf")}, "Outer")
    with pytest.raises(BamError, match=r"Outer.size: expected an integer, got True"):
        from_dict(Outer, {"name": "a", "size": True}, "Outer")


def test_load_config_overrides_do_not_mutate_the_source() -> None:
    source = {"name": "a", "size": 2, "inner": {"k": 1}}
    cfg = load_config(Outer, source, {"inner.k": 5})
    assert cfg.inner.k == 5 and source["inner"] == {"k": 1}
    with pytest.raises(BamError, match=r"Outer\.size: expected a mapping, got 2"):
        load_config(Outer, source, {"size.x": 1})


def test_check_seed() -> None:
    assert check_seed(0) == 0 and check_seed(2**32 - 1) == 2**32 - 1
    for bad in (-1, 2**32, True, 1.0, "3"):
        with pytest.raises(BamError, match=r"out of range; accepted: an integer in 0..4294967295"):
            check_seed(bad)


def test_arch_override_uses_the_config_made_for_it(tmp_path: Path) -> None:
    """`--arch iresnet` with the default config picks configs/train/synthetic_iresnet.yaml by name;
    a config without such a sibling keeps its schedule and drops its arch_kwargs."""
    made = yaml.safe_load((REPO / "configs" / "train" / "synthetic_iresnet.yaml").read_text())
    cfg = load_train_config("synthetic", {"arch": "iresnet"})
    assert cfg.arch == "iresnet" and dict(cfg.arch_kwargs) == made["arch_kwargs"] and cfg.epochs == made["epochs"]
    assert load_train_config("synthetic", {"arch": "small_resnet"}) == load_train_config("synthetic")
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"arch": "small_resnet", "arch_kwargs": {"widths": [4, 4, 4]},
                                                        "epochs": 3, "lr": 0.01}))
    cfg = load_train_config(str(tmp_path / "mine.yaml"), {"arch": "iresnet"})
    assert cfg.arch == "iresnet" and dict(cfg.arch_kwargs) == {} and (cfg.epochs, cfg.lr) == (3, 0.01)
    (tmp_path / "mine_resnet18.yaml").write_text(yaml.safe_dump({"arch": "resnet18", "epochs": 9}))
    cfg = load_train_config(str(tmp_path / "mine.yaml"), {"arch": "resnet18"})
    assert (cfg.arch, cfg.epochs) == ("resnet18", 9)
    assert config_for_arch({"arch": "small_resnet", "arch_kwargs": {"w": 1}}, None) == {
        "arch": "small_resnet", "arch_kwargs": {"w": 1}}
    assert load_train_config({"arch_kwargs": {"widths": [4, 4, 4]}}, {"arch": "iresnet"}).arch_kwargs == {}


def test_train_config_ranges() -> None:
    for change, word in [({"seed": -1}, "seed=-1"), ({"seed": 2**32}, "seed=4294967296"),
                         ({"input_size": 8}, "input_size=8"), ({"lr": float("inf")}, "lr=inf")]:
        with pytest.raises(BamError, match=word):
            TrainConfig(**change)  # type: ignore[arg-type]


def test_paths(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    (tmp_path / "d").mkdir()
    assert require_dir(tmp_path / "d", "thing") == tmp_path / "d"
    assert require_file(tmp_path / "f", "thing") == tmp_path / "f"
    with pytest.raises(BamError, match=r"^thing .*/f is a file; expected a directory \(hint\)$"):
        require_dir(tmp_path / "f", "thing", "hint")
    with pytest.raises(BamError, match=r"^thing .*/d is a directory; expected a file$"):
        require_file(tmp_path / "d", "thing")
    assert inside(tmp_path, "d/x.png", "state") == tmp_path / "d" / "x.png"
    for bad in ("../x", "d/../../x", "/etc/passwd", "", "a\x00b"):
        with pytest.raises(BamError, match="state"):
            inside(tmp_path, bad, "state")
    os.symlink(tmp_path.parent, tmp_path / "d" / "up")
    with pytest.raises(BamError, match=r"resolves to .* outside"):
        inside(tmp_path, "d/up/x", "state")
    with pytest.raises(BamError, match="bad path 5"):
        inside(tmp_path, 5, "state")

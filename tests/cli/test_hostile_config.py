"""A hostile config (a YAML alias bomb) is refused at once, with one line, for a recipe and an eval config."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from bam.cli.main import cli
from bam.config import MAX_YAML_NODES, load_yaml_text, short_repr
from bam.errors import BamError


def bomb(levels: int = 9, width: int = 9) -> str:
    """``description``: nine nested levels of nine aliases (9**9 ~ 387 million strings once expanded)."""
    parts = [f"&l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        parts.append(f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "name: hostile\ndescription: [" + ", ".join(parts) + "]\n"


def refused(args: list[str]) -> tuple[int, str, float]:
    """Run the CLI in-process; (exit code, output, seconds), imports done before the clock starts."""
    import bam.data.build
    import bam.evaluate  # noqa: F401  (what the commands import first: torch, pandas, ...)

    t0 = time.perf_counter()
    res = CliRunner().invoke(cli, args)
    return res.exit_code, res.output, time.perf_counter() - t0


def check_one_line(code: int, output: str, seconds: float, path: Path) -> None:
    assert code == 2, output
    assert output.count("\n") == 1 and output.startswith("error: "), output
    assert str(path) in output and "YAML nodes" in output and "Traceback" not in output
    assert seconds < 1.0, f"refused after {seconds:.2f} s"


def test_alias_bomb_recipe_is_refused_at_once(tmp_path: Path) -> None:
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(bomb())
    assert len(recipe.read_bytes()) < 600  # a few hundred bytes
    code, output, seconds = refused(["build-data", "--recipe", str(recipe), "--out", str(tmp_path / "data")])
    check_one_line(code, output, seconds, recipe)
    assert not (tmp_path / "data").exists()


def test_alias_bomb_eval_config_is_refused_at_once(tmp_path: Path) -> None:
    config = tmp_path / "bomb.yaml"
    config.write_text(bomb())
    (tmp_path / "data").mkdir()
    (tmp_path / "models").mkdir()
    code, output, seconds = refused(["evaluate", "--data", str(tmp_path / "data"), "--models",
                                     str(tmp_path / "models"), "--config", str(config), "--out", str(tmp_path / "o")])
    check_one_line(code, output, seconds, config)


def test_aliases_within_the_bound_still_work() -> None:
    text = "base: &p {steps: 8, samples: 4}\nsmoothgrad: *p\nig: {<<: *p, steps: 16}\n"
    assert load_yaml_text(text, "t") == {"base": {"steps": 8, "samples": 4}, "smoothgrad": {"steps": 8, "samples": 4},
                                         "ig": {"steps": 16, "samples": 4}}
    # the bound counts every expanded node: 3 levels of 9 (1 + 9 + 81 + 729 leaves) pass a bound of 1000 ...
    small = bomb(levels=3)
    assert len(load_yaml_text(small, "t", limit=1000)["description"]) == 3
    # ... and fail a bound just below their size
    with pytest.raises(BamError, match="expands to more than 100 YAML nodes"):
        load_yaml_text(small, "t", limit=100)
    assert MAX_YAML_NODES >= 10_000
    with pytest.raises(BamError, match="recursive alias"):
        load_yaml_text("a: &x [1, *x]\n", "t")


def test_a_bad_value_is_truncated_in_the_message(tmp_path: Path) -> None:
    from bam.config import read_yaml, resource_dir

    tiny = read_yaml(Path(str(resource_dir("datasets"))) / "tiny.yaml")
    recipe = tmp_path / "long.yaml"
    recipe.write_text(yaml.safe_dump({**tiny, "description": [f"item{i}" for i in range(5000)]}))
    code, output, _ = refused(["build-data", "--recipe", str(recipe), "--out", str(tmp_path / "data")])
    assert code == 2 and output.count("\n") == 1 and len(output) < 400, output
    assert "description" in output and "expected a string" in output
    assert len(short_repr(list(range(10**6)))) <= 80 and "..." in short_repr("x" * 1000)


def test_a_bad_eval_config_value_is_truncated_in_the_message(tmp_path: Path) -> None:
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump({"images": {"mcs": [f"item{i}" for i in range(5000)]}}))
    (tmp_path / "data").mkdir()
    (tmp_path / "models").mkdir()
    code, output, _ = refused(["evaluate", "--data", str(tmp_path / "data"), "--models", str(tmp_path / "models"),
                               "--config", str(config), "--out", str(tmp_path / "o")])
    assert code == 2 and output.count("\n") == 1 and len(output) < 400, output
    assert "images.mcs" in output and "accepted: a positive integer" in output

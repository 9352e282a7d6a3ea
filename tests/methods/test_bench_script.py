"""scripts/bench.py runs end to end on a tiny configuration and writes a consistent CSV."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"


def test_bench_script_tiny(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench.csv"
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--image-size", "32", "--batch", "4", "--loop-images", "1",
                                      "--repeats", "1", "--device", "cpu", "--num-classes", "3",
                                      "--methods", "gradient,integrated_gradients,edge",
                                      "--param", "integrated_gradients.steps=3", "--out", str(out)])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    frame = pd.read_csv(out)
    assert frame["method"].tolist() == ["gradient", "integrated_gradients", "edge"]
    assert frame["passes_per_image"].tolist() == [1, 3, 0]
    assert (frame["images_per_s"] > 0).all() and (frame["raw_images_per_s"] > 0).all()
    ig = frame.set_index("method").loc["integrated_gradients"]
    assert abs(ig["efficiency_vs_raw"] - ig["images_per_s"] * 3 / ig["raw_images_per_s"]) < 0.01
    assert "| method |" in capsys.readouterr().out

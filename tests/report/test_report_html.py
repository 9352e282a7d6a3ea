"""`bam report`: a self-contained HTML file with every method/metric, figures, worst cases, gallery."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _report_fixtures import METHODS, results_rows, write_records, write_results
from click.testing import CliRunner

from bam.cli.main import cli
from bam.report._cases import worst_mcs_cases
from bam.report.figures import heatmap
from bam.schema import read_records

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One full report (results + records + provenance + examples) shared by the tests below."""
    from safetensors.numpy import save_file

    d = tmp_path_factory.mktemp("eval")
    write_results(d / "results.csv", results_rows())
    write_records(d / "records.csv")
    (d / "provenance.json").write_text(json.dumps({
        "dataset": "tiny", "manifest_hash": "ab" * 32, "seed": 7, "device": "cpu", "wall_time_s": 12.5,
        "versions": {"bam": "0.1.0", "torch": "2.x"}, "checkpoints": {"standard:obj": {"weights_sha256": "11" * 32, "arch": "small_resnet"}},
    }))
    rng = np.random.default_rng(0)
    e, h = 2, 16
    masks = np.zeros((e, 1, h, h), np.float32)
    masks[:, :, 4:10, 4:10] = 1
    tensors = {"images": rng.uniform(0, 1, (e, 3, h, h)).astype(np.float32), "masks": masks}
    for m in ("gradcam", "gradient", "random"):
        for role in ("obj", "scene"):
            tensors[f"attr/{m}/{role}"] = rng.normal(size=(e, 3, h, h)).astype(np.float32)
    save_file(tensors, str(d / "examples.safetensors"), metadata={"image_ids": json.dumps(["a1", "b2"])})
    out = d / "site" / "index.html"
    res = CliRunner().invoke(cli, ["report", str(d), "--out", str(out), "--worst", "3", "-q"])
    assert res.exit_code == 0, res.output
    return out, out.read_text(encoding="utf-8")


def test_html_is_self_contained(report: tuple[Path, str]) -> None:
    _, text = report
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", text, flags=re.I)
    assert refs, "expected inline images"
    for ref in refs:  # only inline data and in-page anchors: nothing to fetch
        assert ref.startswith(("data:image/png;base64,", "#")), ref
    assert "<link" not in text.lower() and "<script" not in text.lower() and "url(" not in text.lower()


def test_every_method_and_metric_is_in_the_report(report: tuple[Path, str]) -> None:
    _, text = report
    for method in METHODS:
        assert re.search(rf"<td>{method}( \(control\))?</td>", text), method
    for metric, label in (("mcs", "obj vs scene"), ("idr", "scene"), ("iir", "scene_only"),
                          ("rmcs", "commonality-1 … commonality-10 (10 models)")):
        assert f"<h3 id=\"tiny_{metric}_" in text and f"{metric} — {label}</h3>" in text
    assert "random (control)" in text and "edge (control)" in text
    # the mcs ranking lists methods best first and ranks only non-controls
    section = text.split("<h3 id=\"tiny_mcs_obj_scene\">")[1].split("<h3")[0]
    names = re.findall(r"<td>([a-z]+)(?: \(control\))?</td>", section)
    assert names == ["gradcam", "gradient", "smoothgrad", "edge", "random"]
    assert re.findall(r'<td class="num">(\d*)</td><td>[a-z]+', section)[:3] == ["1", "2", "3"]


def test_figures_are_embedded_and_written_beside(report: tuple[Path, str]) -> None:
    out, text = report
    files = sorted(p.name for p in (out.parent / "figures").glob("*.png"))
    assert files == sorted(["ranking_mcs.png", "ranking_idr.png", "ranking_iir.png", "ranking_rmcs.png", "rmcs_curve.png",
                            "gallery_obj.png", "gallery_scene.png"])
    m = re.search(r'<img alt="RMCS curve" src="data:image/png;base64,([^"]+)"', text)
    assert m, "RMCS curve image missing"
    png = base64.b64decode(m.group(1))
    assert png.startswith(PNG_MAGIC) and png == (out.parent / "figures" / "rmcs_curve.png").read_bytes()
    assert '<img alt="gallery obj"' in text and '<img alt="gallery scene"' in text
    # the curve table has k = 1..9 and the known values value * (1 - k / 10)
    assert "<th>k=1</th>" in text and "<th>k=9</th>" in text
    assert "<td>gradcam</td>" + "".join(f'<td class="num">{0.6 * (1 - k / 10):.3f}</td>' for k in range(1, 10)) in text


def test_provenance_and_worst_cases(report: tuple[Path, str]) -> None:
    out, text = report
    assert "<td>seed</td><td>7</td>" in text and "<td>wall time (s)</td><td>12.5</td>" in text
    assert "<td>versions</td><td>bam 0.1.0, torch 2.x</td>" in text
    assert "<td>dataset manifest hash</td><td>" + "ab" * 32 + "</td>" in text
    assert "<td>models</td><td>standard:obj: small_resnet " + "11" * 8 + "</td>" in text
    # worst cases: slow reference over the same records
    rec = pd.read_csv(out.parent.parent / "records.csv")
    comp = rec[rec["input"] == "composite"].pivot(index=["method", "image_id"], columns="model_role", values="g")
    for method in METHODS:
        d = (comp.loc[method, "obj"] - comp.loc[method, "scene"]).sort_values()
        expected = list(d.index[:3])
        section = text.split('id="worst"')[1]
        got = re.findall(rf"<tr><td>{method}</td><td>(img\d+)</td>", section)
        assert got == expected


def test_worst_cases_apply_the_mcs_filter(tmp_path: Path) -> None:
    rows = []

    def add(image_id: str, role: str, g: float, correct: bool = True, valid: bool = True,
            inp: str = "composite") -> None:
        rows.append({"image_id": image_id, "subset": role, "input": inp, "model_role": role, "model_hash": "h",
                     "method": "m", "method_hash": "x", "prediction": 0, "label": 0, "correct": correct, "g": g,
                     "valid": valid, "status": "ok" if valid else "method_failed"})

    for i, (go, gs) in enumerate([(0.9, 0.1), (0.2, 0.6), (0.5, 0.5), (0.0, 1.0), (0.1, 0.95)]):
        add(f"i{i}", "obj", go)
        add(f"i{i}", "scene", gs, correct=(i != 3))  # i3 (diff -1.0) misclassified by the scene model
    add("i4", "scene", 0.0)  # a duplicate record of the same (method, image, role) is ignored
    add("i5", "obj", 0.0)
    add("i5", "scene", 1.0, valid=False)  # invalid attribution: never scored
    add("i6", "obj", 0.0)
    add("i6", "scene", 1.0, inp="scene_only")  # not a composite
    add("i7", "obj", 0.0)
    add("i7", "scene", float("nan"))  # constant map
    pd.DataFrame(rows).to_csv(tmp_path / "records.csv", index=False)
    worst = worst_mcs_cases(read_records(tmp_path / "records.csv"), n=2)
    assert worst["image_id"].tolist() == ["i4", "i1"]
    assert np.allclose(worst["difference"], [0.1 - 0.95, 0.2 - 0.6])


def test_heatmap_normalisation_known_answers() -> None:
    assert np.isnan(heatmap(np.full((3, 4, 4), 2.0))).all()  # constant: no map, as the metric sees it
    attr = np.zeros((2, 1, 101))
    attr[0, 0] = np.arange(101)  # M = 0..100 (the second channel is negative: dropped)
    attr[1, 0] = -np.arange(101)
    # P99 of 0..100 = 99, so M~ = p / 99 clipped to 1
    assert np.allclose(heatmap(attr)[0], np.minimum(np.arange(101) / 99.0, 1.0))


def test_minimal_results_dir_and_errors(tmp_path: Path) -> None:
    from PIL import Image

    write_results(tmp_path / "results.csv", [r for r in results_rows() if r["metric"] == "mcs"])
    (tmp_path / "examples").mkdir()
    Image.new("RGB", (4, 3), (255, 0, 0)).save(tmp_path / "examples" / "grid.png")
    res = CliRunner().invoke(cli, ["report", str(tmp_path), "-q"])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "report.html").read_text()
    assert "no RMCS curve rows" in text and "no records.csv" in text
    png = (tmp_path / "examples" / "grid.png").read_bytes()
    assert f'<img alt="grid.png" src="data:image/png;base64,{base64.b64encode(png).decode()}">' in text
    assert (tmp_path / "figures" / "ranking_mcs.png").read_bytes().startswith(PNG_MAGIC)
    res = CliRunner().invoke(cli, ["report", str(tmp_path / "nowhere")])
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "nowhere: not found" in res.stderr
    (tmp_path / "examples.safetensors").write_bytes(b"not a safetensors file")
    res = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert res.exit_code == 2 and res.stderr.startswith("error: cannot read examples file"), res.stderr
    assert res.stderr.count("\n") == 1

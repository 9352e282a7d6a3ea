"""End-to-end synthetic builds through the CLI: determinism, exact masks, subsets, resume, verify."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _data_helpers import TINY, invoke, write_recipe
from PIL import Image

import bam.data.build as build_mod
from bam.data import load_recipe, open_dataset
from bam.data._subsets import commonality_order
from bam.errors import BamError


def _hash(root: Path) -> str:
    res = invoke("data", "verify", str(root))
    assert res.exit_code == 0, res.output
    from bam._io import sha256_file

    return sha256_file(root / "manifest.json")


def _file_hashes(root: Path) -> dict[str, str]:
    return json.loads((root / "manifest.json").read_text())["files"]


def test_same_seed_same_bytes_other_seed_differs(tiny_build: Path, tiny_recipe: Path, tmp_path: Path) -> None:
    res = invoke("build-data", "--recipe", str(tiny_recipe), "--out", str(tmp_path / "a"), "--seed", "3",
                 "--workers", "2")
    assert res.exit_code == 0, res.output
    assert _hash(tmp_path / "a") == _hash(tiny_build)  # other dir, other worker count, same hash
    assert (tmp_path / "a" / "objects" / "cross" / "0004.png").read_bytes() == \
        (tiny_build / "objects" / "cross" / "0004.png").read_bytes()
    res = invoke("build-data", "--recipe", str(tiny_recipe), "--out", str(tmp_path / "b"), "--seed", "4")
    assert res.exit_code == 0, res.output
    assert _hash(tmp_path / "b") != _hash(tiny_build)
    a, b = _file_hashes(tiny_build), _file_hashes(tmp_path / "b")
    assert a["scenes/checker/0000.png"] != b["scenes/checker/0000.png"]
    assert a["placements.csv"] != b["placements.csv"]


def test_manifest_contents(tiny_build: Path) -> None:
    data = open_dataset(tiny_build)
    m = data.manifest
    assert m["seed"] == 3 and m["recipe"]["name"] == "tiny_t"
    assert m["sources"]["objects"]["generator_version"] and m["sources"]["scenes"]["source"] == "synthetic"
    assert m["counts"]["composites"] == 3 * 3 * 8 and m["counts"]["skipped"] == {"objects": 0, "scenes": 0}
    assert len([f for f in m["files"] if f.startswith(("objects/", "scenes/"))]) == 2 * 3 * 8
    assert "timestamp" not in json.dumps(m) and str(tiny_build) not in json.dumps(m)
    assert data.object_classes == ["circle", "cross", "triangle"] and data.image_size == 32
    assert (data.common_object, data.common_scene, data.iir_scene) == ("circle", "gradient", "stripes")


def test_split_sizes_and_labels(tiny_build: Path) -> None:
    data = open_dataset(tiny_build)
    for name in ("obj", "scene", "scene_only"):
        assert (len(data.subset(name, "train")), len(data.subset(name, "val")), len(data.subset(name, None))) \
            == (3 * 3 * 6, 3 * 3 * 2, 72)
    val = data.subset("obj", "val").table
    assert sorted(val["instance"].unique()) == [6, 7]  # the last instances are val
    assert (val.groupby(["object", "scene"]).size() == 2).all()  # 2 val images per (object, scene) pair
    obj, scene, so = (data.subset(n, None) for n in ("obj", "scene", "scene_only"))
    assert list(obj.table["image_id"]) == list(scene.table["image_id"]) == list(so.table["image_id"])
    assert (obj.table["label"] == obj.table["object_label"]).all() and obj.label_kind == "object"
    assert (scene.table["label"] == scene.table["scene_label"]).all() and scene.num_classes == 3
    row = obj.table.iloc[0]
    assert row["image_id"] == f"{row['object']}__{row['scene']}__{row['instance']:04d}"
    assert data.object_classes[row["object_label"]] == row["object"]


def test_masks_equal_pasted_pixels(tiny_build: Path) -> None:
    data = open_dataset(tiny_build)
    comp, so = data.subset("obj", "val"), data.subset("scene_only", "val")
    idx = list(range(len(comp)))
    ci, _, cm = comp.load_batch(idx)
    si, _, sm = so.load_batch(idx)
    assert torch.equal(cm, sm)  # scene_only mask = where the object is in the composite
    assert set(cm.unique().tolist()) <= {0.0, 1.0} and (cm.sum((1, 2, 3)) > 20).all()
    changed = (ci != si).any(1, keepdim=True)
    assert not (changed & (cm == 0)).any()  # outside the mask the composite is the scene, bit for bit
    for k in (0, 5, 17):  # inside: the bilinearly resized cut-out (slow reference with F.interpolate)
        row = comp.table.iloc[k]
        cut = np.asarray(Image.open(tiny_build / "objects" / row["object"] / f"{row['instance']:04d}.png"))
        ref = F.interpolate(torch.from_numpy(cut.copy()).permute(2, 0, 1)[None].float() / 255,
                            size=(int(row["h"]), int(row["w"])), mode="bilinear", align_corners=False)[0]
        ys, xs = slice(row["y0"], row["y0"] + row["h"]), slice(row["x0"], row["x0"] + row["w"])
        inside = cm[k, 0, ys, xs].bool()
        assert torch.equal(inside, ref[3] >= 0.5)
        assert torch.allclose(ci[k][:, ys, xs][:, inside], ref[:3][:, inside], atol=1e-5)
        assert cm[k].sum() == inside.sum()
    image, label, mask = comp[3]
    assert image.shape == (3, 32, 32) and mask.shape == (1, 32, 32) and label == int(comp.table["label"][3])
    assert float(image.min()) >= 0 and float(image.max()) <= 1


def test_subset_contents(tiny_build: Path) -> None:
    data = open_dataset(tiny_build)
    cis = data.subset("common_in_scene", "val").table
    assert len(cis) == 2 and set(cis["object"]) == {"circle"} and set(cis["scene"]) == {"gradient"}
    assert set(cis["label"]) == {data.scene_classes.index("gradient")} and set(cis["input"]) == {"composite"}
    assert len(data.subset("common_in_scene", "train")) == 0
    iir = data.subset("iir_scene", "val")
    t = iir.table
    assert len(t) == 2 and set(t["scene"]) == {"stripes"} and set(t["object"]) == {"circle"}
    assert set(t["input"]) == {"scene_only"}
    images, _labels, masks = iir.load_batch([0, 1])
    plain = data.subset("scene_only", "val")
    j = plain.table.index[plain.table["image_id"] == t["image_id"][0]][0]
    pi, _, pm = plain.load_batch([j])
    assert torch.equal(images[0], pi[0]) and torch.equal(masks[0], pm[0]) and masks[0].sum() > 0
    assert commonality_order(data.recipe) == ["gradient", "checker", "stripes"]
    for k in (1, 2, 3):
        sub = data.subset(f"commonality-{k}", None)
        t = sub.table
        assert len(t) == 3 * 8 and (t["label"] == t["scene_label"]).all()
        pasted = set(t.loc[t["input"] == "composite", "scene"])
        assert pasted == set(["gradient", "checker", "stripes"][:k])
        assert set(t.loc[t["input"] == "composite", "object"]) == {"circle"}
        plain_rows = t[t["input"] == "scene_only"]
        assert (plain_rows["object_label"] == -1).all() and (plain_rows["x0"] == -1).all()
        _, _, m = sub.load_batch(list(range(len(sub))))
        has = torch.tensor((t["input"] == "composite").to_numpy())
        assert (m[has].sum((1, 2, 3)) > 0).all() and (m[~has].sum() == 0)
    # a commonality composite is the very same image as the obj composite with that id
    c1 = data.subset("commonality-1", "val")
    row = c1.table[c1.table["input"] == "composite"].index[0]
    obj = data.subset("obj", "val")
    j = obj.table.index[obj.table["image_id"] == c1.table["image_id"][row]][0]
    assert torch.equal(c1.load_batch([row])[0], obj.load_batch([j])[0])


def test_verify_detects_corruption(tiny_recipe: Path, tmp_path: Path) -> None:
    out = tmp_path / "d"
    assert invoke("build-data", "--recipe", str(tiny_recipe), "--out", str(out)).exit_code == 0
    assert invoke("data", "verify", str(out)).exit_code == 0
    data = open_dataset(out)
    data.derived_dir("iir_patch").joinpath("x.txt").write_text("written later")  # ignored by verify
    assert invoke("data", "verify", str(out)).exit_code == 0
    target = out / "scenes" / "checker" / "0002.png"
    raw = bytearray(target.read_bytes())
    raw[-20] ^= 0xFF
    target.write_bytes(bytes(raw))
    (out / "stray.txt").write_text("x")
    (out / "subsets" / "iir_scene.csv").unlink()
    res = invoke("data", "verify", str(out))
    assert res.exit_code == 1
    assert "hash mismatch: scenes/checker/0002.png" in res.output
    assert "unexpected file: stray.txt" in res.output and "missing: subsets/iir_scene.csv" in res.output


def test_resume_after_interruption(tiny_build: Path, tiny_recipe: Path, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "r"
    real, calls = build_mod.run_unit, []

    def flaky(args):  # type: ignore[no-untyped-def]
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real(args)

    monkeypatch.setattr(build_mod, "run_unit", flaky)
    with pytest.raises(KeyboardInterrupt):
        build_mod.build_dataset(load_recipe(tiny_recipe), out, seed=3)
    assert not (out / "manifest.json").exists() and (out / ".build_state.json").exists()
    with pytest.raises(BamError, match=r"not a complete bam dataset.*interrupted"):
        open_dataset(out)
    monkeypatch.setattr(build_mod, "run_unit", real)
    done_before = {p: p.stat().st_mtime_ns for p in (out / "objects").rglob("*.png")}
    res = invoke("build-data", "--recipe", str(tiny_recipe), "--out", str(out), "--seed", "3")
    assert res.exit_code == 0, res.output
    assert _hash(out) == _hash(tiny_build)
    assert all(p.stat().st_mtime_ns == t for p, t in done_before.items())  # finished classes not redone
    # delete the manifest and some files: the rebuild restores identical bytes
    (out / "manifest.json").unlink()
    (out / "scenes" / "stripes" / "0001.png").unlink()
    (out / "subsets" / "obj.csv").unlink()
    assert invoke("build-data", "--recipe", str(tiny_recipe), "--out", str(out), "--seed", "3").exit_code == 0
    assert _hash(out) == _hash(tiny_build)
    # re-running a complete build changes nothing
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    res = invoke("build-data", "--recipe", str(tiny_recipe), "--out", str(out), "--seed", "3")
    assert res.exit_code == 0 and "nothing changed" in res.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_other_recipe_or_seed_in_out_dir(tiny_build: Path, tmp_path: Path) -> None:
    res = invoke("build-data", "--recipe", "tiny", "--out", str(tiny_build), "--seed", "3")
    assert res.exit_code == 2
    assert "holds recipe 'tiny_t' seed 3; asked for recipe 'tiny' seed 3" in res.output
    other = write_recipe(tmp_path / "r.yaml", **TINY)
    res = invoke("build-data", "--recipe", str(other), "--out", str(tiny_build), "--seed", "9")
    assert res.exit_code == 2 and "seed 3" in res.output and "seed 9" in res.output
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("x")
    res = invoke("build-data", "--recipe", str(other), "--out", str(tmp_path / "junk"))
    assert res.exit_code == 2 and "not empty" in res.output


def test_export_composites_match_loader(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path / "r.yaml", **{**TINY, "instances_per_class": 4, "val_instances": 1})
    out = tmp_path / "e"
    assert invoke("build-data", "--recipe", str(recipe), "--out", str(out), "--export-composites").exit_code == 0
    data = open_dataset(out)
    sub = data.subset("obj", None)
    images, _, _ = sub.load_batch(range(len(sub)))
    for k in (0, 7, len(sub) - 1):
        png = np.asarray(Image.open(out / "composites" / f"{sub.table['image_id'][k]}.png"))
        assert np.array_equal(png, (images[k] * 255).round().byte().permute(1, 2, 0).numpy())
    assert len(list((out / "composites").glob("*.png"))) == 3 * 3 * 4
    assert invoke("data", "verify", str(out)).exit_code == 0


def test_show_writes_grid(tiny_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "grid.png"
    res = invoke("data", "show", str(tiny_build), "--subset", "scene_only", "--split", "train", "--n", "5",
                 "--out", str(out))
    assert res.exit_code == 0, res.output
    img = np.asarray(Image.open(out))
    assert img.shape[0] > 64 and ((img == [255, 32, 32]).all(-1)).sum() > 50  # mask outlines drawn
    res = invoke("data", "show", str(tiny_build), "--subset", "nope", "--out", str(out))
    assert res.exit_code == 2 and "unknown subset 'nope'" in res.output


def test_open_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(BamError, match="missing does not exist; expected a directory"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BamError, match="afile is a file; expected a directory"):
        open_dataset(tmp_path / "afile")
    with pytest.raises(BamError, match=r"no manifest\.json"):
        open_dataset(tmp_path)


def test_preload_gives_same_batches(tiny_build: Path) -> None:
    lazy, eager = open_dataset(tiny_build), open_dataset(tiny_build)
    eager.preload(threads=2)
    assert bool(eager.store.scene_ok.all()) and bool(eager.store.object_ok.all())
    idx = [5, 0, 17, 5]
    for name in ("obj", "scene_only", "commonality-2"):
        a, b = lazy.subset(name, None).load_batch(idx), eager.subset(name, None).load_batch(idx)
        assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not bool(lazy.store.scene_ok.all())  # lazy: only what was asked for was decoded


def test_commonality_placements(tmp_path: Path) -> None:
    """commonality_placements = 3: each train scene image gets 3 rows (own placement, then the common
    object's boxes of the same instance in the next scene classes), val keeps one; scene-only rows repeat;
    the layout check accepts the build and a bad value is a one-line error."""
    recipe = write_recipe(tmp_path / "p.yaml", **{**TINY, "commonality_placements": 3})
    res = invoke("build-data", "--recipe", str(recipe), "--out", str(tmp_path / "d"), "--seed", "3")
    assert res.exit_code == 0, res.output
    data = open_dataset(tmp_path / "d")
    assert invoke("data", "verify", str(tmp_path / "d")).exit_code == 0
    obj = data.table("obj")
    circle = obj[obj["object"] == "circle"].set_index(["scene", "instance"])
    for k in (1, 3):
        t = data.table(f"commonality-{k}")
        train, val = t[t["split"] == "train"], t[t["split"] == "val"]
        assert len(train) == 3 * 6 * 3 and len(val) == 3 * 2 and t["image_id"].is_unique
        assert (train.groupby(["scene", "instance"]).size() == 3).all()
        assert not val["image_id"].str.contains("__p").any()
        comp = train[train["input"] == "composite"]
        for r in comp.itertuples():
            p = int(r.image_id.rsplit("__p", 1)[1]) if "__p" in r.image_id else 0
            other = [s for s in commonality_order(data.recipe) if s != r.scene]
            src = r.scene if p == 0 else other[p - 1]
            assert (r.x0, r.y0, r.w, r.h) == tuple(circle.loc[(src, r.instance), ["x0", "y0", "w", "h"]])
        if k == 3:  # every class has the object: its three rows of one image are three different boxes
            assert comp.groupby(["scene", "instance"])[["x0", "y0"]].nunique().max().max() > 1
        sub = data.subset(f"commonality-{k}", "train")
        _, _, masks = sub.load_batch(list(range(len(sub))))
        has = torch.tensor((sub.table["input"] == "composite").to_numpy())
        assert (masks[has].sum((1, 2, 3)) > 0).all() and masks[~has].sum() == 0
    bad = write_recipe(tmp_path / "b.yaml", **{**TINY, "commonality_placements": 4})
    res = invoke("build-data", "--recipe", str(bad), "--out", str(tmp_path / "e"))
    assert res.exit_code == 2 and "commonality_placements 4 out of range; accepted: 1..3" in res.output

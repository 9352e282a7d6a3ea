"""Build a BAM dataset directory from a recipe (SPEC §2): resumable, parallel, byte-deterministic.

Stages: (1) per class, draw images from the object/scene source and store them as PNG (one unit
of work per class, run in worker processes with ``workers > 1``); (2) draw the placements from
the seed; (3) write the placement and subset tables; (4) optionally export composites; (5) write
``manifest.json`` LAST. Progress is kept in ``.build_state.json`` (not hashed, kept after the
build) so an interrupted build resumes where it stopped: classes whose files are all present
with their recorded hashes are not redone; the tables are always rewritten (deterministic). A
directory without a manifest is incomplete.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bam import __version__
from bam._io import dumps_json, read_json, sha256_bytes, sha256_file, write_bytes, write_json, write_text
from bam._lock import LOCK_FILE, output_lock
from bam._paths import confine, describe, inside
from bam._progress import progress_bar
from bam.config import check_seed, dump_yaml
from bam.data._placement import draw_placements
from bam.data._subsets import id_width, placement_table, subset_tables
from bam.data.recipe import Recipe
from bam.data.sources import ClassPlan, SourceInputs, get_source
from bam.errors import BamError

log = logging.getLogger("bam.data")

FORMAT = "bam-dataset/1"
MANIFEST = "manifest.json"
STATE = ".build_state.json"
DERIVED = "derived"
_KIND_DIR = {"object": "objects", "scene": "scenes"}


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode uint8 HxWx{3,4} as PNG bytes (no metadata, fixed compression: deterministic)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def normalise_cutout(rgba: np.ndarray, size: int) -> np.ndarray | None:
    """Downscale a cut-out whose longer side exceeds ``size`` (bilinear, antialiased; alpha
    re-binarised at 0.5). Returns None if nothing of the mask survives."""
    from PIL import Image

    h, w = rgba.shape[:2]
    if max(h, w) <= size:
        return rgba
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    rgb = np.asarray(Image.fromarray(rgba[..., :3]).resize((nw, nh), Image.Resampling.BILINEAR))
    alpha = np.asarray(Image.fromarray(rgba[..., 3]).resize((nw, nh), Image.Resampling.BILINEAR))
    alpha = np.where(alpha >= 128, 255, 0).astype(np.uint8)
    if not alpha.any():
        return None
    return np.ascontiguousarray(np.concatenate([rgb, alpha[..., None]], axis=-1))


def run_unit(args: tuple[str, Recipe, ClassPlan, int, str]) -> tuple[str, dict[str, Any]]:
    """Worker: draw the first N usable images of one class and store them as PNG files."""
    source_name, recipe, plan, seed, out = args
    n, size = recipe.instances_per_class, recipe.image_size
    folder = f"{_KIND_DIR[plan.kind]}/{plan.class_name}"
    res: dict[str, Any] = {"files": {}, "hw": [], "items": [], "skipped": [], "notes": {},
                           "source_sha256": {}, "examined": 0, "corrupt": 0}
    notes: Counter[str] = Counter()
    first_corrupt = ""
    for item in get_source(source_name).produce(recipe, plan, seed):
        if len(res["items"]) >= n:
            break
        res["examined"] += 1
        pixels = item.pixels
        if pixels is not None and plan.kind == "object":
            pixels = normalise_cutout(pixels, size)
            if pixels is None:
                item.reason = "mask vanished when downscaled to image_size"
        if pixels is None:
            res["skipped"].append({"item": item.name, "reason": item.reason})
            if item.corrupt:
                res["corrupt"] += 1
                first_corrupt = first_corrupt or f"{item.name}: {item.reason}"
            continue
        data = png_bytes(pixels)
        rel = f"{folder}/{len(res['items']):0{id_width(n)}d}.png"
        write_bytes(confine(out, Path(out) / rel, "dataset image"), data)
        res["files"][rel] = sha256_bytes(data)
        res["hw"].append([int(pixels.shape[0]), int(pixels.shape[1])])
        res["items"].append(item.name)
        if item.source_sha256:
            res["source_sha256"][item.name] = item.source_sha256
        notes.update(item.notes)
    res["notes"] = dict(sorted(notes.items()))
    if res["corrupt"] > recipe.max_corrupt_fraction * max(res["examined"], 1):
        raise BamError(f"{plan.kind} class {plan.class_name!r}: {res['corrupt']} of {res['examined']} files are "
                       f"unreadable or corrupt (more than {recipe.max_corrupt_fraction:.0%}); first: {first_corrupt}")
    return f"{plan.kind}/{plan.class_name}", res


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_dataset` did."""

    root: Path
    manifest_hash: str
    up_to_date: bool
    seconds: float
    counts: dict[str, Any]


def _identity(recipe: Recipe, seed: int, export_composites: bool) -> dict[str, Any]:
    """What a build directory must match to be resumed or confirmed."""
    return {"recipe": recipe.to_dict(), "seed": seed, "export_composites": export_composites}


def _check_existing(out: Path, ident: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    """(complete and identical?, resumable state). Raises if ``out`` holds something else."""
    def differs(old: dict[str, Any]) -> None:
        """Raise the error naming the recipe/seed found and the one asked for."""
        o_rec, n_rec = old.get("recipe", {}), ident["recipe"]
        what = "" if o_rec.get("name") != n_rec["name"] or o_rec == n_rec else " (recipe contents differ)"
        if old.get("export_composites") != ident["export_composites"] and o_rec == n_rec:
            what = f" (export_composites {old.get('export_composites')} vs {ident['export_composites']})"
        raise BamError(f"output dir {out} holds recipe {o_rec.get('name')!r} seed {old.get('seed')}; asked for recipe "
                       f"{n_rec['name']!r} seed {ident['seed']}{what}; use another --out or delete it")

    for name in (MANIFEST, STATE):
        confine(out, out / name, "dataset file")
    if (out / MANIFEST).is_file():
        old = read_json(out / MANIFEST)
        if {k: old.get(k) for k in ident} != ident:
            differs(old)
        return True, None
    if (out / STATE).is_file():
        state = read_json(out / STATE)
        if not isinstance(state, dict) or not isinstance(state.get("units"), dict):
            raise BamError(f"build state {out / STATE} is malformed (not a bam build state); "
                           "delete the directory or use another --out")
        if state.get("identity") != ident:
            old = state.get("identity")
            differs(old if isinstance(old, dict) else {})
        return False, state
    if out.exists() and not out.is_dir():
        raise BamError(f"output dir {out} is {describe(out)}; expected a directory (new or empty)")
    if out.exists() and any(p.name != LOCK_FILE for p in out.iterdir()):
        raise BamError(f"output dir {out} is not empty and holds no bam build; use an empty or new --out")
    return False, None


#: keys and types of one finished class in the build state
_UNIT_FIELDS = {"files": dict, "hw": list, "items": list, "skipped": list, "notes": dict, "source_sha256": dict}


def _unit_done(out: Path, key: str, res: Any) -> bool:
    """True when a finished class recorded in the state is well formed and every one of its files
    is present with its recorded hash. Paths come from a file: each must stay inside its class folder."""
    if not isinstance(res, dict) or any(not isinstance(res.get(k), t) for k, t in _UNIT_FIELDS.items()):
        return False
    kind, cls = key.split("/", 1)
    folder = f"{_KIND_DIR[kind]}/{cls}/"
    for rel, sha in res["files"].items():
        path = inside(out, rel, str(out / STATE))
        if not str(rel).startswith(folder):
            raise BamError(f"{out / STATE}: path {rel!r} is outside the folder {folder} of class {key}; "
                           "refusing to use it (delete the directory or use another --out)")
        if not path.is_file() or sha256_file(path) != sha:
            return False
    return len(res["hw"]) == len(res["items"]) == len(res["files"])


def _map(fn: Callable[[Any], Any], jobs: list[Any], workers: int) -> Iterable[Any]:
    """Run jobs in-process (workers <= 1) or in a spawn pool, yielding results as they finish."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(fn, jobs)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap_unordered(fn, jobs)


@dataclass(frozen=True)
class BuildOptions:
    """How to build: source files of real recipes, worker processes, and what to do or write extra.

    ``allow_fewer``: build with fewer instances per class when a source runs short;
    ``export_composites``: also write every composite as ``composites/<image_id>.png``.
    """

    inputs: SourceInputs = field(default_factory=SourceInputs)
    workers: int = 1
    allow_fewer: bool = False
    export_composites: bool = False


@dataclass(frozen=True)
class _Parts:
    """What the stages of a build produced, for its manifest."""

    infos: dict[str, Any]
    done: dict[str, Any]
    tables: dict[str, Any]
    files: dict[str, str]


def build_dataset(recipe: Recipe, out: str | Path, seed: int = 0, options: BuildOptions | None = None,
                  progress: bool = False) -> BuildResult:
    """Build (or resume, or confirm) the dataset of ``recipe`` with ``seed`` in ``out``.

    The same recipe, seed and source files give byte-identical files and manifest whatever
    ``options.workers`` is. Returns the manifest hash (sha256 of manifest.json's bytes). ``out`` is
    locked while the build runs (:mod:`bam._lock`): a second build into it is refused in one line.
    """
    out = Path(out)
    seed = check_seed(seed, "seed")
    if out.exists() and not out.is_dir():
        raise BamError(f"output dir {out} is {describe(out)}; expected a directory (new or empty)")
    if (out / MANIFEST).is_file():  # complete: confirmed (or refused) without writing anything
        return _build(recipe, out, seed, options or BuildOptions(), progress)
    with output_lock(out, "bam build-data"):
        return _build(recipe, out, seed, options or BuildOptions(), progress)


def _build(recipe: Recipe, out: Path, seed: int, opts: BuildOptions, progress: bool) -> BuildResult:
    """:func:`build_dataset` with ``out`` locked."""
    t0 = time.perf_counter()
    inputs, workers = opts.inputs, opts.workers
    allow_fewer, export_composites = opts.allow_fewer, opts.export_composites
    ident = _identity(recipe, seed, export_composites)
    complete, state = _check_existing(out, ident)
    if complete:
        manifest = read_json(out / MANIFEST)
        return BuildResult(out, sha256_file(out / MANIFEST), True, time.perf_counter() - t0, manifest["counts"])

    plans: list[tuple[str, ClassPlan]] = []
    infos: dict[str, Any] = {}
    for kind, name in (("object", recipe.object_source), ("scene", recipe.scene_source)):
        kind_plans, infos[kind] = get_source(name).prepare(recipe, kind, inputs)
        plans += [(name, p) for p in kind_plans]
    if state is not None and state.get("sources") != infos:
        raise BamError(f"the source files differ from those of the interrupted build in {out}; "
                       "use the same sources or delete the directory")
    if state is not None:  # resuming: drop temp files of writes cut short by the interruption
        for tmp in out.rglob(".*.tmp"):
            if tmp.is_file() and not tmp.is_symlink():
                inside(out, tmp.relative_to(out).as_posix(), f"temp file under {out}").unlink(missing_ok=True)
    state = state or {"identity": ident, "sources": infos, "units": {}}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / STATE, state)

    keys = {f"{p.kind}/{p.class_name}" for _, p in plans}
    done = {k: r for k, r in state["units"].items() if k in keys and _unit_done(out, k, r)}
    jobs = [(name, recipe, p, seed, str(out)) for name, p in plans if f"{p.kind}/{p.class_name}" not in done]
    with progress_bar(total=len(plans), initial=len(plans) - len(jobs), desc="classes", enabled=progress,
                      unit="class") as bar:
        for key, res in _map(run_unit, jobs, workers):
            done[key] = res
            state["units"] = dict(sorted(done.items()))
            write_json(out / STATE, state)
            bar.update(1)

    n = _effective_count(recipe, done, allow_fewer)
    files = _collect_files(out, recipe, done, n)
    eff = recipe if n == recipe.instances_per_class else _with_count(recipe, n)
    hw = np.array([done[f"object/{c}"]["hw"][:n] for c in recipe.object_classes], dtype=np.int64)
    boxes = draw_placements(seed, hw, len(recipe.scene_classes), recipe.image_size, recipe.scale_range())
    placements = placement_table(eff, n, boxes)
    tables = {"placements": placements, **{f"subsets/{k}": v for k, v in subset_tables(eff, placements, n).items()}}
    for rel, frame in tables.items():
        data = frame.to_csv(index=False, lineterminator="\n").encode()
        write_bytes(confine(out, out / f"{rel}.csv", "dataset table"), data)
        files[f"{rel}.csv"] = sha256_bytes(data)
    text = dump_yaml(recipe)
    write_text(confine(out, out / "recipe.yaml", "dataset file"), text)
    files["recipe.yaml"] = sha256_bytes(text.encode())
    if export_composites:
        from bam.data._export import export_composites as export

        files.update(export(out, eff, n, placements, workers, progress))

    manifest = _manifest(recipe, seed, n, export_composites, _Parts(infos, done, tables, files))
    text = dumps_json(manifest)
    write_text(out / MANIFEST, text)  # last: its presence marks the build complete
    return BuildResult(out, sha256_bytes(text.encode()), False, time.perf_counter() - t0, manifest["counts"])


def _with_count(recipe: Recipe, n: int) -> Recipe:
    """The recipe with ``instances_per_class`` replaced (for --allow-fewer builds)."""
    import dataclasses

    return dataclasses.replace(recipe, instances_per_class=n)


def _effective_count(recipe: Recipe, done: dict[str, Any], allow_fewer: bool) -> int:
    """N used for every class (fully crossed: the minimum found); too few is an error unless allowed."""
    want = recipe.instances_per_class
    found = {k: len(r["items"]) for k, r in done.items()}
    short = {k: v for k, v in sorted(found.items()) if v < want}
    if not short:
        return want
    k, v = next(iter(short.items()))
    skipped = Counter(s["reason"] for s in done[k]["skipped"])
    why = "; ".join(f"{c}x {r}" for r, c in skipped.most_common(3)) or "source exhausted"
    n = min(found.values())
    if not allow_fewer:
        kind, cls = k.split("/", 1)
        raise BamError(f"{kind} class {cls!r} has {v} usable images, the recipe asks {want} (skipped: {why}); "
                       f"pass --allow-fewer to build {n} per class")
    if n <= recipe.val_instances:
        raise BamError(f"only {n} usable images per class; need more than val_instances={recipe.val_instances}")
    log.warning("building %d instances per class (fewer than %d): %s", n, want, ", ".join(
        f"{k}={v}" for k, v in short.items()))
    return n


def _collect_files(out: Path, recipe: Recipe, done: dict[str, Any], n: int) -> dict[str, str]:
    """Hashes of the first n stored images per class; images beyond n (allow_fewer) are deleted."""
    files: dict[str, str] = {}
    for res in done.values():
        for k, (rel, sha) in enumerate(sorted(res["files"].items())):  # zero-padded: index order
            if k < n:
                files[rel] = sha
            else:
                inside(out, rel, str(out / STATE)).unlink(missing_ok=True)
    return files


def _manifest(recipe: Recipe, seed: int, n: int, export: bool, parts: _Parts) -> dict[str, Any]:
    """Everything that identifies the build; no timestamps or absolute paths (hash-stable)."""
    infos, done, tables, files = parts.infos, parts.done, parts.tables, parts.files
    sources: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    notes: dict[str, Any] = {}
    for kind, classes in (("object", recipe.object_classes), ("scene", recipe.scene_classes)):
        info = dict(infos[kind])
        used = {}
        for c in classes:
            res = done[f"{kind}/{c}"]
            used[c] = {item: res["source_sha256"][item] for item in res["items"][:n] if item in res["source_sha256"]}
        if any(used.values()):
            info["used_files_sha256"] = used
        sources[_KIND_DIR[kind]] = info
        skipped[_KIND_DIR[kind]] = {c: done[f"{kind}/{c}"]["skipped"] for c in classes}
        notes[_KIND_DIR[kind]] = {c: done[f"{kind}/{c}"]["notes"] for c in classes if done[f"{kind}/{c}"]["notes"]}
    subsets = {}
    for rel, frame in tables.items():
        if rel.startswith("subsets/"):
            name = rel.split("/", 1)[1]
            subsets[name] = {"file": f"{rel}.csv", "label_kind": "object" if name == "obj" else "scene",
                             "train": int((frame["split"] == "train").sum()),
                             "val": int((frame["split"] == "val").sum())}
    return {
        "format": FORMAT, "bam_version": __version__, "recipe": recipe.to_dict(), "seed": seed,
        "export_composites": export, "object_classes": list(recipe.object_classes),
        "scene_classes": list(recipe.scene_classes), "image_size": recipe.image_size,
        "instances_per_class": n, "val_instances": recipe.val_instances, "train_instances": n - recipe.val_instances,
        "common_object": recipe.common_object, "common_scene": recipe.common_scene, "iir_scene": recipe.iir_scene,
        "sources": sources, "skipped": skipped, "notes": notes, "subsets": subsets,
        "counts": {"objects": n * len(recipe.object_classes), "scenes": n * len(recipe.scene_classes),
                   "composites": n * len(recipe.object_classes) * len(recipe.scene_classes),
                   "skipped": {k: sum(len(v) for v in d.values()) for k, d in skipped.items()},
                   "files": len(files)},
        "derived_dir": f"{DERIVED}/ (written later, e.g. the IIR patch set; not hashed here)",
        "files": dict(sorted(files.items())),
    }

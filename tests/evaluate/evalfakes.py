"""Tiny fakes following docs/architecture.md: a dataset, code-reading models and test methods."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from bam.methods import METHODS, AttributionResult, MethodInfo, register_method

CALLS: Counter[str] = Counter()
OBJECTS = ["ant", "bee", "cat"]
SCENES = ["lake", "park", "road"]
SIZE = 16


def _rng(key: str) -> np.random.Generator:
    return np.random.default_rng(int(hashlib.sha256(key.encode()).hexdigest()[:8], 16))


class FakeSubset:
    """One subset: a table and vectorised load_batch, pixels generated from the image id."""

    def __init__(self, data: FakeData, name: str, rows: list[dict[str, Any]], label_kind: str) -> None:
        self.data, self.name, self.label_kind = data, name, label_kind
        self.table = pd.DataFrame(rows)
        self.num_classes = len(OBJECTS) if label_kind == "object" else len(SCENES)

    def __len__(self) -> int:
        return len(self.table)

    def _image(self, row: pd.Series) -> tuple[Tensor, Tensor]:
        g = _rng(f"{self.data.seed}:{row['scene']}:{row['instance']}")
        img = torch.from_numpy(g.random((3, SIZE, SIZE))).float() * 0.5
        mask = torch.zeros(1, SIZE, SIZE)
        x0, y0, w, h = int(row["x0"]), int(row["y0"]), int(row["w"]), int(row["h"])
        mask[:, y0:y0 + h, x0:x0 + w] = 1
        if self.name not in ("scene_only", "iir_scene"):
            img[:, y0:y0 + h, x0:x0 + w] = torch.tensor([0.1, 0.2, 1.0])[:, None, None]
        flip = int(row["instance"]) % 4 == 3  # some images the obj model gets wrong
        img[0, 0, 0] = ((int(row["object_label"]) + (1 if flip else 0)) % len(OBJECTS)) / 10
        img[1, 0, 0] = int(row["scene_label"]) / 10
        return img, mask

    def __getitem__(self, i: int) -> tuple[Tensor, int, Tensor]:
        x, m = self._image(self.table.iloc[i])
        return x, int(self.table.iloc[i]["label"]), m

    def load_batch(self, indices: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        items = [self[i] for i in indices]
        return (torch.stack([a for a, _, _ in items]), torch.tensor([b for _, b, _ in items], dtype=torch.long),
                torch.stack([c for _, _, c in items]))


class FakeData:
    """Follows the bam.data Dataset contract for split="val"."""

    def __init__(self, root: Path, n: int = 4, seed: int = 0, manifest_hash: str | None = None) -> None:
        self.root, self.seed = Path(root), seed
        self.manifest_hash = manifest_hash or hashlib.sha256(f"fake{n}{seed}".encode()).hexdigest()
        self.manifest: dict[str, Any] = {}
        self.recipe = SimpleNamespace(name="fake")
        self.object_classes, self.scene_classes = list(OBJECTS), list(SCENES)
        self.image_size = SIZE
        self.common_object, self.common_scene, self.iir_scene = "bee", "park", "lake"
        comp = []
        for oi, o in enumerate(OBJECTS):
            for si, s in enumerate(SCENES):
                for i in range(n):
                    g = _rng(f"box{o}{s}{i}")
                    w, h = int(g.integers(4, 8)), int(g.integers(4, 8))
                    comp.append({"image_id": f"{o}-{s}-{i}", "object": o, "scene": s, "object_label": oi,
                                 "scene_label": si, "split": "val", "instance": i, "x0": int(g.integers(2, SIZE - w)),
                                 "y0": int(g.integers(2, SIZE - h)), "w": w, "h": h})
        lab = lambda rows, col: [{**r, "label": r[col]} for r in rows]  # noqa: E731
        self._subsets = {
            "obj": (lab(comp, "object_label"), "object"),
            "scene": (lab(comp, "scene_label"), "scene"),
            "scene_only": (lab(comp, "scene_label"), "scene"),
            "common_in_scene": (lab([r for r in comp if r["object"] == "bee" and r["scene"] == "park"], "scene_label"), "scene"),
            "iir_scene": (lab([r for r in comp if r["object"] == "bee" and r["scene"] == "lake"], "scene_label"), "scene"),
        }

    def subset(self, name: str, split: str | None = "val") -> FakeSubset:
        rows, kind = self._subsets[name]
        return FakeSubset(self, name, rows, kind)

    def derived_dir(self, kind: str) -> Path:
        p = self.root / "derived" / kind
        p.mkdir(parents=True, exist_ok=True)
        return p


class CodeModel(torch.nn.Module):
    """Classifies by reading a code pixel; ``weight`` [3] shapes what the test methods attribute."""

    def __init__(self, channel: int, k: int, weight: list[float], offset: float = 0.0) -> None:
        super().__init__()
        self.channel, self.k, self.offset = channel, k, offset
        self.register_buffer("weight", torch.tensor(weight))
        self.lin = torch.nn.Conv2d(3, 1, 3, padding=1)
        torch.nn.init.constant_(self.lin.weight, 0.001)

    def forward(self, x: Tensor) -> Tensor:
        code = 10 * x[:, self.channel, 0, 0] + self.offset
        logits = -(code[:, None] - torch.arange(self.k, dtype=x.dtype, device=x.device)) ** 2
        return logits + 0.01 * self.lin(x).mean((1, 2, 3))[:, None]


def make_models(manifest_hash: str, roles: list[str] | None = None, invertible: bool = False) -> list[Any]:
    """ModelEntry objects for the given roles (obj, scene, scene_only, commonality-1..3)."""
    from bam.evaluate import ModelEntry
    from bam.models import ModelCard

    roles = roles or ["obj", "scene", "scene_only", "commonality-1", "commonality-2", "commonality-3"]
    weights = {"obj": [0.2, 0.2, 1.0], "scene": [1.0, 0.3, 0.1], "scene_only": [0.5, 1.0, 0.5]}
    out = []
    for r in roles:
        ch = 0 if r == "obj" else 1
        k = len(OBJECTS) if r == "obj" else len(SCENES)
        if r.startswith("commonality"):
            kk = int(r.split("-")[1])
            w = [1.0 / kk, 0.5, 1.0 / kk]
        else:
            w = weights[r]
        model = CodeModel(ch, k, w)
        sha = hashlib.sha256(f"{r}:{invertible}".encode()).hexdigest()
        card = ModelCard(arch="code", role=r, num_classes=k, image_size=SIZE, invertible=invertible,
                         weights_sha256=sha, dataset_manifest_hash=manifest_hash)
        out.append(ModelEntry(model, card, f"models/{r}"))
    return out


def _weighted(model: Any, inputs: Tensor, target: Tensor, **params: Any) -> Tensor:
    """Test method: inputs * per-channel model weight (deterministic)."""
    CALLS["bamtest_weighted"] += 1
    return inputs * model.weight[None, :, None, None] * params.get("scale", 1.0)


def _noisy(model: Any, inputs: Tensor, target: Tensor, seed: int = 0, **params: Any) -> Tensor:
    """Test method: seeded noise plus the weighted input."""
    CALLS["bamtest_noisy"] += 1
    g = torch.Generator().manual_seed(int(seed))
    return inputs * model.weight[None, :, None, None] + 0.1 * torch.rand(inputs.shape, generator=g)


def _fail(model: Any, inputs: Tensor, target: Tensor, **params: Any) -> AttributionResult:
    """Test method that fails on every image."""
    CALLS["bamtest_fail"] += 1
    return AttributionResult(torch.zeros_like(inputs), valid=torch.zeros(inputs.shape[0], dtype=torch.bool))


def _inv(model: Any, inputs: Tensor, target: Tensor, **params: Any) -> Tensor:
    """Test method requiring an invertible model."""
    CALLS["bamtest_inv"] += 1
    return inputs


if "bamtest_weighted" not in METHODS:
    register_method(MethodInfo(name="bamtest_weighted", title="weighted input", paper="test", family="control",
                               defaults={"scale": 1.0}))(_weighted)
    register_method(MethodInfo(name="bamtest_noisy", title="noisy", paper="test", family="control",
                               stochastic=True, passes=lambda p: 3))(_noisy)
    register_method(MethodInfo(name="bamtest_fail", title="fail", paper="test", family="control"))(_fail)
    register_method(MethodInfo(name="bamtest_inv", title="inv", paper="test", family="control",
                               requires=("invertible",)))(_inv)


def dist_worker(rank: int, world: int, init_file: str, root: str, out: str, methods: tuple[str, ...]) -> None:
    """One rank of a gloo run of the evaluation on the fake data (for the sharding test)."""
    import torch.distributed as dist

    from bam._dist import DistInfo
    from bam.evaluate import EvalConfig, ExecContext, PatchConfig, evaluate

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        data = FakeData(Path(root), n=4)
        cfg = EvalConfig(methods=methods, batch_size=5, bootstrap=100, iir_patch=PatchConfig(steps=3), seed=1)
        evaluate(data, make_models(data.manifest_hash), cfg, out,
                 ctx=ExecContext(torch.device("cpu"), dist=DistInfo(rank, world)))
    finally:
        dist.destroy_process_group()


def input_plugin(model: Any, inputs: Tensor, target: Tensor, *, gain: float = 1.0) -> Tensor:
    """Plug-in method for CLI tests: the input itself (times ``gain``)."""
    CALLS["input_plugin"] += 1
    return inputs * gain


def raising_plugin(model: Any, inputs: Tensor, target: Tensor) -> Tensor:
    """Plug-in method for CLI tests: raises an ordinary exception on every call."""
    CALLS["raising_plugin"] += 1
    raise RuntimeError("plug-in exploded")


def exiting_plugin(model: Any, inputs: Tensor, target: Tensor) -> Tensor:
    """Plug-in method for CLI tests: ends the process with exit status 0 (must be a method failure)."""
    CALLS["exiting_plugin"] += 1
    raise SystemExit(0)

"""A small in-memory dataset object that follows the data contract (docs/architecture.md).

Scenes: class s = a background of colour-free stripes with class-dependent orientation/frequency
plus noise; objects: class o = a filled square with a class-dependent colour. Composition is
fully crossed like SPEC §2.3, so object and scene labels are independent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from bam.errors import BamError

_COLOURS = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0], [1.0, 1.0, 0.1], [0.1, 1.0, 1.0]])


@dataclass
class FakeRecipe:
    name: str = "fake"


class FakeSubset:
    def __init__(self, images: Tensor, masks: Tensor, table: pd.DataFrame, num_classes: int, label_kind: str):
        self.images, self.masks, self.table = images, masks, table.reset_index(drop=True)
        self.num_classes, self.label_kind = num_classes, label_kind

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> tuple[Tensor, int, Tensor]:
        return self.images[i], int(self.table["label"][i]), self.masks[i]

    def load_batch(self, indices: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.images[idx], torch.as_tensor(self.table["label"].to_numpy()[idx.numpy()].copy()), self.masks[idx]


@dataclass
class FakeData:
    root: Path = Path("/fake")
    n_obj: int = 3
    n_scene: int = 3
    image_size: int = 32
    instances: int = 12
    val: int = 3
    seed: int = 0
    manifest_hash: str = "f" * 64
    recipe: FakeRecipe = field(default_factory=FakeRecipe)
    omit: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.object_classes = [f"o{i}" for i in range(self.n_obj)]
        self.scene_classes = [f"s{i}" for i in range(self.n_scene)]
        self.common_object, self.common_scene, self.iir_scene = "o0", "s0", "s1"
        g = torch.Generator().manual_seed(self.seed)
        h = w = self.image_size
        yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
        scenes = []
        for s in range(self.n_scene):
            phase = torch.rand(self.instances, 1, 1, generator=g) * 6.28
            angle = s * 3.1416 / self.n_scene
            f = 0.4 + 0.1 * s
            wave = torch.sin(f * (xx * torch.cos(torch.tensor(angle)) + yy * torch.sin(torch.tensor(angle))) + phase)
            base = 0.5 + 0.35 * wave + 0.05 * torch.randn(self.instances, h, w, generator=g)
            scenes.append(base.clamp(0, 1).unsqueeze(1).expand(-1, 3, -1, -1))
        self.scenes = torch.stack(scenes)  # [S, I, 3, H, W]
        side = self.image_size // 3
        rows = []
        images, masks = [], []
        for o in range(self.n_obj):
            for s in range(self.n_scene):
                for i in range(self.instances):
                    y0 = int(torch.randint(0, h - side + 1, (1,), generator=g))
                    x0 = int(torch.randint(0, w - side + 1, (1,), generator=g))
                    m = torch.zeros(1, h, w)
                    m[:, y0:y0 + side, x0:x0 + side] = 1
                    img = self.scenes[s, i] * (1 - m) + _COLOURS[o].view(3, 1, 1) * m
                    images.append(img)
                    masks.append(m)
                    rows.append({"image_id": f"{o}_{s}_{i}", "object": f"o{o}", "scene": f"s{s}",
                                 "object_label": o, "scene_label": s, "split": "val" if i >= self.instances - self.val
                                 else "train", "instance": i, "x0": x0, "y0": y0, "w": side, "h": side})
        self.comp = torch.stack(images)
        self.comp_masks = torch.stack(masks)
        self.table = pd.DataFrame(rows)

    def subset(self, name: str, split: str | None = "val") -> FakeSubset:
        if name in self.omit:
            raise BamError(f"subset {name!r} is not in this dataset")
        t = self.table
        sel = t["split"] == split if split else t["split"].notna()
        if name in ("obj", "scene"):
            idx = t.index[sel].to_numpy().copy()
            tab = t.loc[idx].copy()
            tab["label"] = tab["object_label" if name == "obj" else "scene_label"]
            n = self.n_obj if name == "obj" else self.n_scene
            return FakeSubset(self.comp[idx], self.comp_masks[idx], tab, n, "object" if name == "obj" else "scene")
        if name == "scene_only":
            idx = t.index[sel].to_numpy().copy()
            tab = t.loc[idx].copy()
            tab["label"] = tab["scene_label"]
            scenes = self.scenes[torch.tensor(tab["scene_label"].to_numpy()), torch.tensor(tab["instance"].to_numpy())]
            return FakeSubset(scenes, self.comp_masks[idx], tab, self.n_scene, "scene")
        if name == "common_in_scene":
            idx = t.index[sel & (t["object"] == self.common_object) & (t["scene"] == self.common_scene)].to_numpy().copy()
            tab = t.loc[idx].copy()
            tab["label"] = tab["scene_label"]
            return FakeSubset(self.comp[idx], self.comp_masks[idx], tab, self.n_scene, "scene")
        if name.startswith("commonality-"):
            k = int(name.split("-")[1])
            if not 1 <= k <= self.n_scene:
                raise BamError(f"unknown subset {name!r}")
            idx = t.index[sel & (t["object"] == self.common_object)].to_numpy().copy()
            tab = t.loc[idx].copy()
            tab["label"] = tab["scene_label"]
            with_obj = torch.tensor((tab["scene_label"] < k).to_numpy()).view(-1, 1, 1, 1)
            scenes = self.scenes[torch.tensor(tab["scene_label"].to_numpy()), torch.tensor(tab["instance"].to_numpy())]
            imgs = torch.where(with_obj, self.comp[idx], scenes)
            return FakeSubset(imgs, self.comp_masks[idx] * with_obj, tab, self.n_scene, "scene")
        raise BamError(f"unknown subset {name!r}")

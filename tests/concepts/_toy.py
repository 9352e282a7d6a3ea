"""A hand-built model whose bottleneck encodes a concept along a known direction (known answers)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bam.concepts import ConceptSets, ImageSet, TensorImageSource

SIDE = 8  # images [3, 8, 8] -> 192 inputs
DIM = 64  # bottleneck width


class ToyNet(nn.Module):
    """a = W x (W with orthonormal rows, so input noise stays isotropic); two logits of a.

    ``linear``: (v.a, -v.a) with v the concept direction. Class 0's gradient is v (logit) or
    2 p_1 v (log-softmax): every derivative along a CAV has the sign of v.cav, so the concept CAV
    scores 1 for class 0 and 0 for class 1. ``quadratic``: (|a|^2 / 2, 0): class 0's gradient is
    a (logit) or (1 - p_0) a: the sign of a.cav varies with the image.
    """

    def __init__(self, seed: int = 0, head: str = "linear") -> None:
        super().__init__()
        self.head = head
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(3 * SIDE * SIDE, DIM, generator=g))
        self.block = nn.Linear(3 * SIDE * SIDE, DIM, bias=False)
        with torch.no_grad():
            self.block.weight.copy_(q.T)
        v = torch.randn(DIM, generator=g)
        self.register_buffer("v", v / v.norm())

    @property
    def bottlenecks(self) -> dict[str, nn.Module]:
        return {"block_layer1": self.block}

    def input_direction(self) -> Tensor:
        """d with W d = v, as an image."""
        return (self.block.weight.T @ self.v).view(3, SIDE, SIDE)

    def forward(self, x: Tensor) -> Tensor:
        a = self.block(x.flatten(1))
        if self.head == "linear":
            lin = a @ self.v
            return torch.stack([lin, -lin], dim=1)
        return torch.stack([0.5 * (a * a).sum(1), torch.zeros_like(a[:, 0])], dim=1)


def toy_images(model: ToyNet, n: int, shift: float, seed: int, scale: float = 1.0) -> Tensor:
    """n noise images shifted by ``shift`` along the concept direction (activations: scale * (N(0, I) + shift v))."""
    g = torch.Generator().manual_seed(seed)
    return scale * (torch.randn(n, 3, SIDE, SIDE, generator=g) + shift * model.input_direction())


def toy_sets(n: int, num_random: int, targets: int = 100, concept: str = "concept") -> ConceptSets:
    """Sets named like the protocol's, ids unique per set."""
    def mk(name: str, size: int, subset: str = "toy") -> ImageSet:
        return ImageSet(name, subset, "val", tuple(f"{name}-{i}" for i in range(size)), "toy")

    return ConceptSets(mk(concept, n, "toy_concept"), tuple(mk(f"random500_{i}", n) for i in range(num_random)),
                       mk("random_counter_part", n), mk("targets", targets, "toy_targets"))


def toy_source(model: ToyNet, sets: ConceptSets, concept_shift: float, target_shift: float,
               seed: int = 0, scale: float = 1.0) -> TensorImageSource:
    """Images for ``sets``: concept shifted by ``concept_shift``, random sets pure noise, targets
    shifted by ``target_shift`` (the targets contain the concept, like dog_bedroom)."""
    out = {sets.concept.name: toy_images(model, len(sets.concept), concept_shift, seed + 1, scale),
           sets.counterpart.name: toy_images(model, len(sets.counterpart), 0.0, seed + 2, scale),
           sets.targets.name: toy_images(model, len(sets.targets), target_shift, seed + 3, scale)}
    for i, r in enumerate(sets.randoms):
        out[r.name] = toy_images(model, len(r), 0.0, seed + 10 + i, scale)
    return TensorImageSource(out)

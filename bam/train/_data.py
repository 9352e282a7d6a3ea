"""Role -> subset, batched loading (RAM cache or streaming DataLoader) and protocol-safe augmentation."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from bam.errors import BamError

log = logging.getLogger(__name__)

def role_subset(role: str) -> str:
    """The data subset a role trains on (SPEC §2.4): the role name itself."""
    return role


def open_role_subset(data: Any, role: str, split: str) -> Any:
    """``data.subset(role, split)`` with a BamError naming the role when the data lacks it."""
    try:
        sub = data.subset(role_subset(role), split=split)
    except BamError as exc:
        raise BamError(f"dataset {data.root} has no {split} data for role {role!r}: {exc}") from None
    except (KeyError, FileNotFoundError) as exc:
        raise BamError(f"dataset {data.root} has no {split} data for role {role!r} ({exc})") from None
    if len(sub) == 0:
        raise BamError(f"dataset {data.root} has no {split} images for role {role!r}; rebuild it with `bam build-data`")
    return sub


class _Batches(Dataset):
    """A map-style dataset whose items are whole batches: ``load_batch(indices)`` (vectorised)."""

    def __init__(self, sub: Any) -> None:
        self.sub = sub

    def __len__(self) -> int:
        """Number of images in the subset."""
        return len(self.sub)

    def __getitem__(self, indices: Sequence[int]) -> tuple[Tensor, Tensor]:
        """One batch: (images, labels) for ``indices``."""
        images, labels, _ = self.sub.load_batch(list(indices))
        return images, torch.as_tensor(labels, dtype=torch.long)


class SplitLoader:
    """Batches of (images in [0, 1], labels) from one subset split.

    With ``in_memory`` the subset is decoded once (as uint8 when it is exactly 8-bit, else float32)
    and later batches are plain indexing; otherwise each batch is read through ``load_batch`` in
    ``workers`` DataLoader processes.
    """

    def __init__(self, sub: Any, *, labels: Tensor | None = None, in_memory: bool = False, workers: int = 0,
                 progress: bool = False, desc: str = "") -> None:
        self.sub = sub
        self.n = len(sub)
        self.workers = workers
        self.images: Tensor | None = None
        self.labels: Tensor | None = labels
        if in_memory:
            self._fill(progress, desc)

    def _fill(self, progress: bool, desc: str) -> None:
        """Decode the whole subset once into RAM."""
        from bam._progress import progress_bar

        chunks, labels, exact = [], [], True
        for start in progress_bar(range(0, self.n, 512), desc=f"caching {desc}", enabled=progress, leave=False,
                                  unit="chunk"):
            images, lab, _ = self.sub.load_batch(list(range(start, min(start + 512, self.n))))
            q = torch.round(images * 255)
            exact = exact and bool(((images * 255 - q).abs().max() < 1e-3).item())
            chunks.append((q.to(torch.uint8), images))
            labels.append(torch.as_tensor(lab, dtype=torch.long))
        self.images = torch.cat([c[0] if exact else c[1] for c in chunks])
        if self.labels is None:
            self.labels = torch.cat(labels)

    def batches(self, batch_indices: Sequence[Sequence[int]]) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield (float images [B,3,H,W] in [0, 1], labels [B]) for each list of indices."""
        if self.images is not None:
            assert self.labels is not None  # filled with the images
            for idx in batch_indices:
                t = torch.as_tensor(list(idx), dtype=torch.long)
                x = self.images[t]
                yield (x.float().div_(255) if x.dtype == torch.uint8 else x), self.labels[t]
            return
        loader = DataLoader(_Batches(self.sub), sampler=list(map(list, batch_indices)), batch_size=None,
                            num_workers=self.workers, persistent_workers=False)
        for (x, y), idx in zip(loader, batch_indices):
            yield x, (y if self.labels is None else self.labels[torch.as_tensor(list(idx), dtype=torch.long)])


def train_batches(n: int, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[list[int]]:
    """This rank's shuffled batches for ``epoch`` (DistributedSampler: permutation seeded by seed+epoch).

    The last incomplete batch is dropped when there is at least one full batch, so every rank runs
    the same number of steps.
    """
    sampler: DistributedSampler[int] = DistributedSampler(range(n), num_replicas=world, rank=rank,  # type: ignore[arg-type]
                                                          shuffle=True, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return [list(b) for b in BatchSampler(sampler, batch_size, drop_last=len(sampler) >= batch_size)]


def eval_batches(indices: Sequence[int], batch_size: int) -> list[list[int]]:
    """Consecutive batches of ``indices``."""
    idx = list(indices)
    return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]


def augment(images: Tensor, masks: Tensor | None, generator: torch.Generator, *, hflip: bool,
            max_shift: int) -> tuple[Tensor, Tensor | None]:
    """Random horizontal flip and integer translation (zero fill), the same for image and mask.

    Batched (no per-image loop); randomness comes only from ``generator`` (CPU), so a run is
    reproducible and resumable.
    """
    n = images.shape[0]
    if hflip:
        flip = (torch.rand(n, generator=generator) < 0.5).to(images.device).view(n, 1, 1, 1)
        images = torch.where(flip, images.flip(-1), images)
        if masks is not None:
            masks = torch.where(flip, masks.flip(-1), masks)
    if max_shift > 0:
        shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator).to(images.device)
        images = _translate(images, shifts)
        if masks is not None:
            masks = _translate(masks, shifts)
    return images, masks


def _translate(x: Tensor, shifts: Tensor) -> Tensor:
    """Shift each image by integer (dy, dx) pixels with zero fill, via one batched gather."""
    n, c, h, w = x.shape
    s = int(shifts.abs().max().item())
    padded = F.pad(x, (s, s, s, s))
    ys = (torch.arange(h, device=x.device).view(1, h) - shifts[:, :1] + s).view(n, 1, h, 1).expand(n, c, h, w + 2 * s)
    rows = padded.gather(2, ys)
    xs = (torch.arange(w, device=x.device).view(1, w) - shifts[:, 1:] + s).view(n, 1, 1, w).expand(n, c, h, w)
    return rows.gather(3, xs)

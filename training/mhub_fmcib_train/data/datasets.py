"""Datasets and a resumable distributed batch sampler.

Every random choice of an item is drawn from ``numpy.random.default_rng([seed, epoch, i])``,
so a batch is a pure function of (seed, epoch, step, rank): resuming at any step, with any
number of loader workers, reproduces the same views.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import Dataset, Sampler

from ..transforms import FinetuneAugment, SimCLRView, centre_crop
from .cache import PatchCache, random_scan_patch

Key = tuple[int, int]  # (epoch, item index)


class ResumableBatchSampler(Sampler[list[Key]]):
    """Per-epoch seeded permutation of ``n`` items cut into ``world`` × ``batch_size``
    blocks (the incomplete tail is dropped); rank ``r`` takes block column ``r``.

    ``set_position(epoch, step)`` makes the next iteration start at ``step`` of ``epoch``.
    Yields lists of (epoch, item) keys, ``batch_size`` long.
    """

    def __init__(
        self, n: int, batch_size: int, world: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True
    ) -> None:
        self.n, self.batch_size, self.world, self.rank = n, batch_size, world, rank
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start_step = 0, 0

    @property
    def steps_per_epoch(self) -> int:
        return self.n // (self.batch_size * self.world)

    def set_position(self, epoch: int, step: int = 0) -> None:
        self.epoch, self.start_step = epoch, step

    def __len__(self) -> int:
        return self.steps_per_epoch - self.start_step

    def __iter__(self) -> Iterator[list[Key]]:
        order = (
            np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle else np.arange(self.n)
        )
        spe = self.steps_per_epoch
        blocks = order[: spe * self.batch_size * self.world].reshape(spe, self.world, self.batch_size)
        for s in range(self.start_step, spe):
            yield [(self.epoch, int(i)) for i in blocks[s, self.rank]]


class PretrainDataset(Dataset[dict[str, torch.Tensor]]):
    """Item ``(epoch, i)``: two SimCLR views of lesion ``lesion_rows[i]`` and its negatives.

    ``negatives = "scan_random"`` (the authors'): one 50³ patch at a fresh random position
    of the lesion's own scan (:func:`~mhub_fmcib_train.data.cache.random_scan_patch`), two
    views of it: ``background`` is (2, 1, 50, 50, 50).
    ``negatives = "cached_cubes"`` (ours): ``n_background`` views, one each, of background
    cubes drawn at random from ``background_rows`` (cubes of any training scan that overlap
    no lesion): ``background`` is (n_background, 1, 50, 50, 50).

    Returns ``{"views": (2, 1, 50, 50, 50), "background": ...}``.
    """

    def __init__(
        self,
        cache: PatchCache,
        lesion_rows: Sequence[int],
        background_rows: Sequence[int],
        view: SimCLRView,
        n_background: int,
        seed: int,
        negatives: str = "scan_random",
    ) -> None:
        if negatives not in ("scan_random", "cached_cubes"):
            raise ValueError(f"negatives must be 'scan_random' or 'cached_cubes', got {negatives!r}")
        if negatives == "cached_cubes" and n_background > 0 and not background_rows:
            raise ValueError("background views were requested but the cache holds no background cubes")
        if negatives == "scan_random" and not cache.scans:
            raise ValueError("the patch cache holds no scans; rebuild it (delete the cache folder)")
        self.cache, self.lesion_rows, self.background_rows = cache, list(lesion_rows), list(background_rows)
        self.view, self.n_background, self.seed, self.negatives = view, n_background, seed, negatives

    def __len__(self) -> int:
        return len(self.lesion_rows)

    def _background(self, row: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
        if self.negatives == "scan_random":
            patch = random_scan_patch(self.cache.scans[self.cache.lesion_scan[row]], rng)
            return np.stack([self.view(patch, rng), self.view(patch, rng)])[:, None]
        bgs = []
        for _ in range(self.n_background):
            j = self.background_rows[int(rng.integers(len(self.background_rows)))]
            bgs.append(self.view(np.asarray(self.cache.background[j]), rng))
        return np.stack(bgs)[:, None] if bgs else np.zeros((0, 1, 50, 50, 50), np.float32)

    def __getitem__(self, key: Key) -> dict[str, torch.Tensor]:
        epoch, i = key
        rng = np.random.default_rng([self.seed, epoch, i])
        row = self.lesion_rows[i]
        cube = np.asarray(self.cache.lesions[row])
        views = np.stack([self.view(cube, rng), self.view(cube, rng)])[:, None]
        return {"views": torch.from_numpy(views), "background": torch.from_numpy(self._background(row, rng))}


class LabelledDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Item ``(epoch, i)``: the (augmented, if ``augment``) 50³ patch of lesion
    ``rows[i]`` as (1, 50, 50, 50) and its target (float for binary, long for classes)."""

    def __init__(
        self,
        cache: PatchCache,
        rows: Sequence[int],
        targets: Sequence[float] | Sequence[int],
        augment: FinetuneAugment | None,
        seed: int,
        binary: bool,
    ) -> None:
        self.cache, self.rows, self.targets = cache, list(rows), list(targets)
        self.augment, self.seed, self.binary = augment, seed, binary

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = key
        cube = np.asarray(self.cache.lesions[self.rows[i]])
        if self.augment is None:
            x = centre_crop(cube)
        else:
            x = self.augment(cube, np.random.default_rng([self.seed, epoch, i]))
        y = torch.tensor(self.targets[i], dtype=torch.float32 if self.binary else torch.long)
        return torch.from_numpy(x)[None], y

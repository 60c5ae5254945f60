"""Batches of tiles from the memory-mapped patch store.

Not a torch DataLoader: tiles are small and already decoded, so slicing the
memmap with sorted indices is faster than per-item workers, and a seeded
NumPy generator makes the batch order identical on every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ..errors import DataError
from ..io import read_json


class PatchStore:
    """Read-only view of ``data/patches/``."""

    def __init__(self, root: str | Path, scaler: dict | None = None) -> None:
        self.root = Path(root)
        self.scaler = scaler
        # Built once: batches() is the training hot path.
        self._shift = self._scale = None
        if scaler is not None:
            self._shift = torch.tensor(scaler["mean"], dtype=torch.float32)
            self._scale = torch.tensor(scaler["std"], dtype=torch.float32)
        self.meta = read_json(self.root / "meta.json")
        for name in ("patches.npy", "masks.npy"):
            if not (self.root / name).is_file():
                raise DataError(f"{self.root / name}: missing; rerun the patchify stage")
        self.tiles = np.load(self.root / "patches.npy", mmap_mode="r")
        self.masks = np.load(self.root / "masks.npy", mmap_mode="r")

    @property
    def channels(self) -> int:
        return int(self.meta["channels"])

    @property
    def tile_size(self) -> int:
        return int(self.meta["tile_size"])

    @property
    def tile_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one tile: square images, or (1, 1, D) for tabular rows."""
        return tuple(int(v) for v in self.tiles.shape[1:])

    @property
    def is_tabular(self) -> bool:
        return self.meta.get("kind") == "tabular"

    def read(self, ids: np.ndarray) -> torch.Tensor:
        """Float tensor (B, C, S, S) of tiles ``ids`` in that order: image tiles in
        [0, 1], table rows standardised. The memmap is read in sorted order."""
        ids = np.asarray(ids, dtype=np.int64)
        sort = np.argsort(ids, kind="stable")
        data = np.empty((len(ids), *self.tiles.shape[1:]), dtype=self.tiles.dtype)
        data[sort] = self.tiles[ids[sort]]
        return self.to_float(torch.from_numpy(data))

    def to_float(self, batch: torch.Tensor) -> torch.Tensor:
        """Stored values (uint8 images or raw table rows) as model input."""
        if self.tiles.dtype == np.uint8:
            return batch.float().div_(255.0)
        batch = batch.float()
        if self._shift is not None:
            shift = self._shift.to(batch.device).view_as(batch[0])
            scale = self._scale.to(batch.device).view_as(batch[0])
            return (batch - shift) / scale
        return batch

    def batches(self, ids: np.ndarray, batch_size: int) -> Iterator[torch.Tensor]:
        """Tiles ``ids`` in order, ``batch_size`` at a time (scoring)."""
        ids = np.asarray(ids, dtype=np.int64)
        for start in range(0, len(ids), batch_size):
            yield self.read(ids[start : start + batch_size])


class BatchSource:
    """A re-iterable of batches: each pass reshuffles with the same generator.

    Distributed (``world`` > 1), every rank draws the same global order and takes its
    share: ``split="batch"`` (gradient training) cuts every global batch of
    ``batch_size`` tiles into ``world`` parts, so the ranks' averaged gradients are the
    single-process step's (a last batch too small to give every rank a tile is
    dropped on every rank, so all ranks take the same number of steps);
    ``split="block"`` (memory banks, validation) gives each rank one contiguous block of
    the order, so gathering the blocks in rank order restores the single-process order.

    ``min_batches``: an epoch of a small set repeats the set (fresh permutations) until
    it has at least that many batches (``train.min_steps_per_epoch``).

    ``max_batches``: an epoch of a large set is the next ``max_batches`` batches of one
    running stream of permutations (``train.max_steps_per_epoch``), so successive epochs
    walk through every tile before any repeats, and the cost of an epoch (and of early
    stopping's patience) stops growing with the pixels.

    ``to_device`` keeps the tiles of ``ids`` on the training device as uint8 (a GPU-
    resident store: no host copies per step); ``pin`` pins host batches for
    asynchronous copies.
    """

    def __init__(
        self,
        store: PatchStore,
        ids: np.ndarray,
        batch_size: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world: int = 1,
        split: str = "batch",
        min_batches: int = 0,
        max_batches: int = 0,
    ) -> None:
        if split not in ("batch", "block"):
            raise ValueError(f"split must be batch or block, got {split!r}")
        self.store, self.ids, self.batch_size, self.shuffle = store, ids, batch_size, shuffle
        self.rank, self.world, self.split = rank, world, split
        # Small training sets: one pass is a handful of optimizer steps, and a budget in
        # epochs (with patience in epochs) then stops models long before they learn;
        # each epoch repeats fresh permutations until it has ``min_batches`` batches.
        self.passes = 1
        if min_batches and len(ids):
            self.passes = max(1, -(-min_batches * batch_size // len(ids)))
        # Large training sets: the per-epoch cost is capped instead (only when shuffled:
        # a fixed order would train on the same share every epoch).
        self.cap = 0
        if shuffle and max_batches and len(ids) * self.passes > max_batches * batch_size:
            self.cap, self.passes = max_batches * batch_size, 1
        self._stream = np.empty(0, dtype=np.int64)
        self.rng = np.random.default_rng([seed, 11])
        self.resident: torch.Tensor | None = None
        self.pin = False

    def to_device(self, device: torch.device) -> None:
        """Hold this source's tiles on ``device`` (raw stored values, e.g. uint8)."""
        self._sorted_ids = np.sort(np.asarray(self.ids, dtype=np.int64))
        raw = np.ascontiguousarray(self.store.tiles[self._sorted_ids])
        self.resident = torch.from_numpy(raw).to(device)

    def _chunks(self) -> list[np.ndarray]:
        ids = np.asarray(self.ids, dtype=np.int64)
        if self.cap:
            while len(self._stream) < self.cap:
                self._stream = np.concatenate([self._stream, self.rng.permutation(len(ids))])
            order, self._stream = self._stream[: self.cap], self._stream[self.cap :]
        elif self.shuffle:
            order = np.concatenate([self.rng.permutation(len(ids)) for _ in range(self.passes)])
        else:
            order = np.tile(np.arange(len(ids)), self.passes)
        ordered = ids[order]
        if self.world > 1 and self.split == "block":
            ordered = np.array_split(ordered, self.world)[self.rank]
        chunks = [ordered[s : s + self.batch_size] for s in range(0, len(ordered), self.batch_size)]
        if self.world > 1 and self.split == "batch":
            chunks = [
                np.array_split(chunk, self.world)[self.rank]
                for chunk in chunks
                if len(chunk) >= self.world
            ]
        return chunks

    def __iter__(self) -> Iterator[torch.Tensor]:
        for chunk in self._chunks():
            if self.resident is not None:
                where = torch.from_numpy(np.searchsorted(self._sorted_ids, chunk))
                where = where.to(self.resident.device, non_blocking=True)
                yield self.store.to_float(self.resident.index_select(0, where))
                continue
            batch = self.store.read(chunk)
            yield batch.pin_memory() if self.pin else batch

    def __len__(self) -> int:
        n = self.cap or len(self.ids) * self.passes
        if self.world > 1 and self.split == "block":
            n = len(np.array_split(np.arange(n), self.world)[self.rank])
        full, rest = divmod(n, self.batch_size)
        if self.world > 1 and self.split == "batch" and 0 < rest < self.world:
            rest = 0
        return full + (1 if rest else 0)


def open_store(patches_dir: str | Path, splits_dir: str | Path) -> PatchStore:
    """The pipeline's tile store, with the training split's feature scaler if it has one
    (tables: standardised with good training rows only, see ``tabular.fit_scaler``)."""
    scaler_file = Path(splits_dir) / "scaler.json"
    return PatchStore(patches_dir, read_json(scaler_file) if scaler_file.is_file() else None)

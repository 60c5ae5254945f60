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

    def batches(
        self,
        ids: np.ndarray,
        batch_size: int,
        shuffle: bool = False,
        rng: np.random.Generator | None = None,
    ) -> Iterator[torch.Tensor]:
        """Float tensors (B, C, S, S): image tiles in [0, 1], table rows standardised."""
        ids = np.asarray(ids, dtype=np.int64)
        order = rng.permutation(len(ids)) if shuffle and rng is not None else np.arange(len(ids))
        for start in range(0, len(ids), batch_size):
            chunk = ids[order[start : start + batch_size]]
            sort = np.argsort(chunk, kind="stable")
            data = np.empty((len(chunk), *self.tiles.shape[1:]), dtype=self.tiles.dtype)
            data[sort] = self.tiles[chunk[sort]]
            batch = torch.from_numpy(data).float()
            if self.tiles.dtype == np.uint8:
                yield batch.div_(255.0)
            elif self._shift is not None:
                yield (batch - self._shift.view_as(batch[0])) / self._scale.view_as(batch[0])
            else:
                yield batch


class BatchSource:
    """A re-iterable of batches: each pass reshuffles with the same generator."""

    def __init__(
        self, store: PatchStore, ids: np.ndarray, batch_size: int, shuffle: bool, seed: int
    ) -> None:
        self.store, self.ids, self.batch_size, self.shuffle = store, ids, batch_size, shuffle
        self.rng = np.random.default_rng([seed, 11])

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self.store.batches(self.ids, self.batch_size, self.shuffle, self.rng)

    def __len__(self) -> int:
        return (len(self.ids) + self.batch_size - 1) // self.batch_size


def open_store(patches_dir: str | Path, splits_dir: str | Path) -> PatchStore:
    """The pipeline's tile store, with the training split's feature scaler if it has one
    (tables: standardised with good training rows only, see ``tabular.fit_scaler``)."""
    scaler_file = Path(splits_dir) / "scaler.json"
    return PatchStore(patches_dir, read_json(scaler_file) if scaler_file.is_file() else None)

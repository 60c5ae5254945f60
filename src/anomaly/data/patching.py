"""Cut source images into tiles and store them as memory-mappable arrays.

Layout of ``data/patches/``:

- ``patches.npy``   uint8 (N, C, S, S) tiles, S = ``patch.resize`` or ``patch.size``
- ``masks.npy``     uint8 (N, S, S) defect masks at tile resolution (0/1)
- ``patches.csv``   one row per tile: patch_id, image_id, x, y, size, label,
                    defect_pixels, defect_type, group (tile position in image pixels)
- ``images.csv``    the manifest plus each image's height and width, for stitching
- ``meta.json``     channels, tile size, patch params

A tile is a defect tile (label 1) when its full-resolution mask has at least
``patch.min_defect_pixels`` defect pixels and good (label 0) when it has none.
Tiles with a few defect pixels are ambiguous (label -1): they never enter a
good-only set and tile-level metrics skip them, while pixel metrics still see
every pixel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from ..errors import DataError
from ..io import atomic_dir, write_csv, write_json
from ..params import PatchConfig
from .manifest import load_image_and_mask, resolve

IMAGE_MODES = {1: "L", 3: "RGB"}


def tile_origins(length: int, size: int, stride: int) -> list[int]:
    """Start offsets covering ``length`` with tiles of ``size``; the last one is flush."""
    if length < size:
        return []
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def _resize(tile: np.ndarray, out: int, resample: int) -> np.ndarray:
    if tile.shape[0] == out:
        return tile
    return np.asarray(Image.fromarray(tile).resize((out, out), resample=resample))


def patchify(
    manifest: pd.DataFrame, cfg: PatchConfig, out_dir: str | Path, channels: int = 1
) -> dict:
    """Tile every image in the manifest into ``out_dir`` (written atomically)."""
    mode = IMAGE_MODES[channels]
    sizes = []
    for _, row in manifest.iterrows():
        path = resolve(manifest, row["image_path"])
        if not path.is_file():
            raise DataError(f"{path}: image listed in the manifest is missing")
        try:
            with Image.open(path) as img:
                sizes.append((img.height, img.width))
        except (OSError, SyntaxError, ValueError) as exc:
            raise DataError(f"{path}: corrupt or unreadable image ({exc})") from exc
    plans = []
    for (h, w), (_, row) in zip(sizes, manifest.iterrows(), strict=True):
        ys, xs = tile_origins(h, cfg.size, cfg.stride), tile_origins(w, cfg.size, cfg.stride)
        if not ys or not xs:
            raise DataError(
                f"{resolve(manifest, row['image_path'])}: image is {w}x{h}, smaller than "
                f"patch.size={cfg.size}"
            )
        plans.append([(y, x) for y in ys for x in xs])
    total = sum(len(p) for p in plans)
    out = cfg.out_size

    with atomic_dir(out_dir) as tmp:
        tiles = np.lib.format.open_memmap(
            tmp / "patches.npy", mode="w+", dtype=np.uint8, shape=(total, channels, out, out)
        )
        masks = np.lib.format.open_memmap(
            tmp / "masks.npy", mode="w+", dtype=np.uint8, shape=(total, out, out)
        )
        rows, images = [], []
        k = 0
        progress = tqdm(list(manifest.iterrows()), desc="patchify", unit="img", disable=None)
        for (_, row), plan, (h, w) in zip(progress, plans, sizes, strict=True):
            image, mask = load_image_and_mask(manifest, row, mode=mode)
            images.append({**row.to_dict(), "height": h, "width": w})
            for y, x in plan:
                crop = image[y : y + cfg.size, x : x + cfg.size]
                crop_mask = mask[y : y + cfg.size, x : x + cfg.size]
                resized = _resize(crop, out, Image.BILINEAR)
                tiles[k] = resized[None] if channels == 1 else resized.transpose(2, 0, 1)
                small = _resize(crop_mask.astype(np.uint8) * 255, out, Image.BILINEAR)
                masks[k] = small >= 128
                defect_pixels = int(crop_mask.sum())
                if defect_pixels >= cfg.min_defect_pixels:
                    label = 1
                elif defect_pixels == 0:
                    label = 0
                else:
                    label = -1
                rows.append(
                    {
                        "patch_id": k,
                        "image_id": int(row["image_id"]),
                        "x": x,
                        "y": y,
                        "size": cfg.size,
                        "label": label,
                        "defect_pixels": defect_pixels,
                        "defect_type": row["defect_type"] if label == 1 else "good",
                        "group": row["group"],
                    }
                )
                k += 1
        tiles.flush()
        masks.flush()
        del tiles, masks
        frame = pd.DataFrame(rows)
        write_csv(tmp / "patches.csv", frame)
        write_csv(tmp / "images.csv", pd.DataFrame(images))
        meta = {
            "channels": channels,
            "tile_size": out,
            "patch": {
                "size": cfg.size,
                "stride": cfg.stride,
                "resize": cfg.resize,
                "min_defect_pixels": cfg.min_defect_pixels,
            },
            "n_patches": total,
            "n_images": len(manifest),
            "n_defect_patches": int((frame["label"] == 1).sum()),
            "n_ambiguous_patches": int((frame["label"] == -1).sum()),
        }
        write_json(tmp / "meta.json", meta)
    return meta

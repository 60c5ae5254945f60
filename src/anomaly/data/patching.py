"""Cut source images into tiles and store them as memory-mappable arrays.

Layout of ``data/patches/``:

- ``patches.npy``   uint8 (N, C, S, S) tiles, S = ``patch.resize`` or ``patch.side``
- ``masks.npy``     uint8 (N, S, S) defect masks at tile resolution (0/1)
- ``patches.csv``   one row per tile: patch_id, image_id, x, y, w, h (the tile's
                    box in original image pixels), label, defect_pixels, defect_type,
                    group, blank
- ``images.csv``    the manifest plus each image's height and width, for stitching
- ``meta.json``     channels, tile size, patch params

A tile is a defect tile (label 1) when its full-resolution mask has at least
``patch.min_defect_pixels`` defect pixels and good (label 0) when it has none.
Tiles with a few defect pixels are ambiguous (label -1): they never enter a
good-only set and tile-level metrics skip them, while pixel metrics still see
every pixel.

``patch.side: auto`` is resolved here from the images' sizes
(:meth:`PatchConfig.resolve_tiling`) and ``meta.json`` records the numbers, so
later stages and new images are cut the same way.

Images smaller than ``patch.side`` become one whole-image tile. With
``patch.image_size`` every image is first resized to that square side (MVTec:
1024 px photographs to 256) and then tiled; tile boxes are still recorded in
original pixels, so maps are stitched back at the masks' resolution. Tiles
with almost no variation (``patch.blank_std``, e.g. AITEX's flat white roll
ends) are marked ``blank`` and left out of training and scoring.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from ..errors import DataError
from ..image_reader import check_deep_range, image_size
from ..io import NpyWriter, atomic_dir, check_free_space, write_csv, write_json
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


def _plan(h: int, w: int, cfg: PatchConfig) -> tuple[tuple[int, int], list[tuple[int, int, int]]]:
    """Working size (after ``image_size``) and tile origins + side in working pixels."""
    work_h, work_w = (cfg.image_size, cfg.image_size) if cfg.image_size else (h, w)
    if work_h < cfg.side or work_w < cfg.side:
        return (work_h, work_w), [(0, 0, -1)]  # the whole image is one tile
    ys = tile_origins(work_h, cfg.side, cfg.stride)
    xs = tile_origins(work_w, cfg.side, cfg.stride)
    return (work_h, work_w), [(y, x, cfg.side) for y in ys for x in xs]


def tile_windows(
    h: int, w: int, work: tuple[int, int], plan: list[tuple[int, int, int]]
) -> list[tuple[tuple[slice, slice], tuple[int, int, int, int]]]:
    """For each planned tile: its crop window in working pixels and its box ``x, y, w, h``
    in original pixels. Shared by patchify and predict, so new images are cut exactly
    like the training ones."""
    sy, sx = h / work[0], w / work[1]
    windows = []
    for y, x, side in plan:
        if side < 0:  # the whole (working) image is the tile
            windows.append(((slice(None), slice(None)), (0, 0, w, h)))
        else:
            box = (round(x * sx), round(y * sy), round(side * sx), round(side * sy))
            windows.append(((slice(y, y + side), slice(x, x + side)), box))
    return windows


def _to_working(array: np.ndarray, work: tuple[int, int], resample: int) -> np.ndarray:
    if array.shape[:2] == work:
        return array
    return np.asarray(Image.fromarray(array).resize((work[1], work[0]), resample=resample))


def cut_tiles(
    image: np.ndarray, cfg: PatchConfig, out: int
) -> tuple[np.ndarray, list[tuple[int, int, int, int]], np.ndarray, tuple[int, int], list]:
    """One image's tiles exactly as the tile store holds them.

    Returns uint8 tiles (N, C, out, out), each tile's box ``x, y, w, h`` in original
    pixels, whether each tile is blank (``patch.blank_std``, measured before resizing),
    the working size and the crop windows (for cutting the mask the same way). The one
    function both patchify and :mod:`anomaly.inference.detector` cut with, so a new image is tiled,
    resized and blank-filtered like a training one.
    """
    h, w = image.shape[:2]
    work, plan = _plan(h, w, cfg)
    image_w = _to_working(image, work, Image.BILINEAR)
    windows = tile_windows(h, w, work, plan)
    tiles, boxes, blank = [], [], []
    for window, box in windows:
        crop = image_w[window]
        resized = _resize(crop, out, Image.BILINEAR)
        tiles.append(resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1))
        boxes.append(box)
        blank.append(float(crop.std()) < cfg.blank_std)
    return np.stack(tiles), boxes, np.asarray(blank, dtype=bool), work, windows


# One row of patches.csv per tile (tuples, not dicts: a dict per tile was most of the
# stage's memory growth with the dataset).
PATCH_COLUMNS = [
    "patch_id",
    "image_id",
    "x",
    "y",
    "w",
    "h",
    "label",
    "defect_pixels",
    "defect_type",
    "group",
    "blank",
]


def patchify(
    manifest: pd.DataFrame,
    cfg: PatchConfig,
    out_dir: str | Path,
    channels: int = 1,
    extra_meta: dict | None = None,
) -> dict:
    """Tile every image in the manifest into ``out_dir`` (written atomically);
    ``extra_meta`` (the dataset's score defaults) is passed on in ``meta.json``."""
    mode = IMAGE_MODES[channels]
    sizes = []
    for _, row in manifest.iterrows():
        path = resolve(manifest, row["image_path"])
        if not path.is_file():
            raise DataError(f"{path}: image listed in the manifest is missing")
        sizes.append(image_size(path))  # as displayed (EXIF orientation applied)
    # a 12-bit camera's 16-bit files are refused here, before any tile is cut
    check_deep_range(
        (resolve(manifest, relative) for relative in manifest["image_path"]), cfg.intensity_range
    )
    requested = {"side": cfg.side, "stride": cfg.stride, "auto_side_max": cfg.auto_side_max}
    cfg = cfg.resolve_tiling(sizes)
    plans = [_plan(h, w, cfg) for h, w in sizes]
    total = sum(len(tiles) for _, tiles in plans)
    out = cfg.out_size
    # A full disk is found before the first byte, not after minutes of tiling.
    needed = total * out * out * (channels + 1) + (1 << 20)
    check_free_space(Path(out_dir), needed, "the tile store")

    with atomic_dir(out_dir) as tmp:
        tiles_path, masks_path = tmp / "patches.npy", tmp / "masks.npy"
        with (
            NpyWriter(tiles_path, np.uint8, (total, channels, out, out)) as tiles,
            NpyWriter(masks_path, np.uint8, (total, out, out)) as masks,
        ):
            rows, images = [], []
            k = 0
            progress = tqdm(list(manifest.iterrows()), desc="patchify", unit="img", disable=None)
            for (_, row), (h, w) in zip(progress, sizes, strict=True):
                image, mask = load_image_and_mask(manifest, row, mode, cfg.intensity_range)
                images.append({**row.to_dict(), "height": h, "width": w})
                image_tiles, boxes, blank, work, windows = cut_tiles(image, cfg, out)
                mask_w = _to_working(mask.astype(np.uint8) * 255, work, Image.BILINEAR) >= 128
                tile_masks = []
                for box, is_blank, (window, _) in zip(boxes, blank, windows, strict=True):
                    crop_mask = mask_w[window]
                    small = _resize(crop_mask.astype(np.uint8) * 255, out, Image.BILINEAR)
                    tile_masks.append(small >= 128)
                    defect_pixels = int(crop_mask.sum())
                    if defect_pixels >= cfg.min_defect_pixels:
                        label = 1
                    elif defect_pixels == 0:
                        label = 0
                    else:
                        label = -1
                    rows.append(
                        (
                            k,
                            int(row["image_id"]),
                            *box,
                            label,
                            defect_pixels,
                            row["defect_type"] if label == 1 else "good",
                            row["group"],
                            int(is_blank),
                        )
                    )
                    k += 1
                if tile_masks:
                    tiles.write(image_tiles)
                    masks.write(np.stack(tile_masks))
        frame = pd.DataFrame(rows, columns=PATCH_COLUMNS)
        write_csv(tmp / "patches.csv", frame)
        write_csv(tmp / "images.csv", pd.DataFrame(images))
        meta = {
            "channels": channels,
            "tile_size": out,
            "patch": {
                "side": cfg.side,
                "stride": cfg.stride,
                "resize": cfg.resize,
                "image_size": cfg.image_size,
                "min_defect_pixels": cfg.min_defect_pixels,
                "blank_std": cfg.blank_std,
                "intensity_range": cfg.intensity_range,
            },
            # side: auto, as params.yaml asked for it: "patch" holds the numbers that
            # every later stage, the bundle and predict cut with
            **({"patch_requested": requested} if requested["side"] == "auto" else {}),
            "n_patches": total,
            "n_images": len(manifest),
            "n_defect_patches": int((frame["label"] == 1).sum()),
            "n_ambiguous_patches": int((frame["label"] == -1).sum()),
            "n_blank_patches": int(frame["blank"].sum()),
            **(extra_meta or {}),
        }
        write_json(tmp / "meta.json", meta)
    return meta


def patchify_table(
    manifest: pd.DataFrame,
    table_csv: str | Path,
    out_dir: str | Path,
    feature_names: list[str],
    extra_meta: dict | None = None,
) -> dict:
    """Tabular pass-through: each row becomes a float32 (1, 1, D) "tile" of its own."""
    from ..io import read_csv

    table = read_csv(table_csv)
    features = table[feature_names].to_numpy(dtype=np.float32)
    n, dims = features.shape
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / "patches.npy", features.reshape(n, 1, 1, dims))
        np.save(tmp / "masks.npy", np.zeros((n, 1, dims), dtype=np.uint8))
        labels = manifest["label"].to_numpy()
        write_csv(
            tmp / "patches.csv",
            pd.DataFrame(
                {
                    "patch_id": np.arange(n),
                    "image_id": manifest["image_id"].to_numpy(),
                    "x": 0,
                    "y": 0,
                    "w": dims,
                    "h": 1,
                    "label": labels,
                    "defect_pixels": labels,
                    "defect_type": manifest["defect_type"].to_numpy(),
                    "group": manifest["group"],
                    "blank": 0,
                }
            ),
        )
        write_csv(tmp / "images.csv", manifest.assign(height=1, width=dims))
        meta = {
            "channels": 1,
            "tile_size": dims,
            "kind": "tabular",
            "features": feature_names,
            "n_patches": n,
            "n_images": n,
            "n_defect_patches": int(labels.sum()),
            "n_ambiguous_patches": 0,
            "n_blank_patches": 0,
            "patch": {},
            **(extra_meta or {}),
        }
        write_json(tmp / "meta.json", meta)
    return meta

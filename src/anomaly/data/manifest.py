"""The manifest: one row per source image, the table every dataset family ends in.

Columns: ``image_path, mask_path, label, defect_type, group, source_split``.
Paths are relative to the manifest's folder, or absolute when the data lives
where the user keeps it (a local ``dataset.source``). ``mask_path`` may list
several masks separated by ``;`` (AITEX splits some defects over files); they
are merged. Everything after ``download`` reads only this table, which is why
the later stages do not care which dataset they run on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..image_reader import read_image, read_mask
from ..io import read_csv, read_json, write_csv

COLUMNS = ["image_path", "mask_path", "label", "defect_type", "group", "source_split"]
MANIFEST_NAME = "manifest.csv"


def write_manifest(frame: pd.DataFrame, path: str | Path) -> None:
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"manifest frame lacks {missing}")
    extra = [c for c in frame.columns if c not in COLUMNS]  # e.g. MVTec's category_type
    frame = frame[COLUMNS + extra].copy()
    frame["image_id"] = np.arange(len(frame))
    write_csv(path, frame[["image_id", *COLUMNS, *extra]])


def read_manifest(path: str | Path) -> pd.DataFrame:
    frame = read_csv(path, required=["image_id", *COLUMNS])
    for column in ("mask_path", "source_split"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), "").astype(str)
    frame["group"] = frame["group"].astype(str)
    frame["defect_type"] = frame["defect_type"].astype(str)
    bad = ~frame["label"].isin([0, 1])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"{path}: row {row + 2} has label {frame['label'].iloc[row]!r}, not 0 or 1")
    frame.attrs["root"] = str(Path(path).parent)
    return frame


def resolve(frame: pd.DataFrame, relative: str) -> Path:
    path = Path(relative)
    return path if path.is_absolute() else Path(frame.attrs.get("root", ".")) / path


def load_image_and_mask(
    frame: pd.DataFrame,
    row: pd.Series,
    mode: str = "L",
    intensity_range: list[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The image (HxW or HxWxC uint8) and its boolean mask (all False for good images),
    both through the one image reader (bit depth, EXIF orientation, modes)."""
    image = read_image(resolve(frame, row["image_path"]), mode, intensity_range)
    shape = image.shape[:2]
    mask = np.zeros(shape, dtype=bool)
    if row["mask_path"]:
        for part in str(row["mask_path"]).split(";"):
            mask |= read_mask(resolve(frame, part), expected_shape=shape)
    return image, mask


def dataset_info(raw_dir: str | Path) -> dict:
    """What the download stage recorded in dataset.json (channels, kind, variant);
    defaults when absent. Here, not in ``download``, so that later stages can read it
    without depending on the download code of every dataset family."""

    path = Path(raw_dir) / "dataset.json"
    return {"channels": 1, "kind": "images", **(read_json(path) if path.is_file() else {})}

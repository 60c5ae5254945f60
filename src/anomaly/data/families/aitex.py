"""Family ``aitex``: the AITEX fabric database (official 7z archives or a folder)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..aitex import FABRIC_FOLDERS, OFFICIAL_RESOURCES, fabric_of, read_aitex
from ..sources import cache_root, local_folder
from .registry import Family, register


def absolute(frame: pd.DataFrame, root: Path) -> pd.DataFrame:
    """Manifest paths under ``root`` (a local source is read in place, never copied)."""
    for column in ("image_path", "mask_path"):
        frame[column] = frame[column].map(
            lambda p: ";".join(str(root / m) for m in p.split(";")) if p else ""
        )
    return frame


def read(params, out: Path) -> tuple[pd.DataFrame, int, dict]:
    hint = (
        "Download Defect_images.7z, NODefect_images.7z and Mask_images.7z from AITEX's "
        "site, extract them into one folder and set dataset.source to it."
    )
    root = local_folder(
        params.dataset.source,
        OFFICIAL_RESOURCES,
        cache_root(params.dataset.cache_dir) / "aitex",
        hint,
    )
    frame = absolute(read_aitex(root, params.dataset.categories), root)
    return frame, 1, {"variant": f"AITEX from {root}"}


FAMILY = register(
    Family(
        name="aitex",
        read=read,
        group_of=fabric_of,
        categories=lambda _params: list(FABRIC_FOLDERS),
        category_type=lambda _category: "texture",
    )
)

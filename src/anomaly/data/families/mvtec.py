"""Family ``mvtec``: MVTec AD, one category per run (archive, URL or folder)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import DataError
from ..mvtec import CATEGORIES, OBJECTS, OFFICIAL_URL, TEXTURES, read_mvtec
from ..sources import Resource, cache_root, local_folder
from .registry import Family, register


def in_category(member: str, category: str) -> bool:
    """Extract only the chosen category (plus the archive's top-level licence and readme)."""
    parts = member.split("/")
    if category in parts:
        return True
    return parts[-1].lower() in ("license.txt", "readme.txt") and not any(
        p in CATEGORIES for p in parts
    )


def read(params, out: Path) -> tuple[pd.DataFrame, int | None, dict]:
    categories = params.dataset.categories
    if not categories or len(categories) != 1:
        raise DataError(f"dataset.category: choose one MVTec AD category ({', '.join(CATEGORIES)})")
    category = categories[0]
    hint = (
        "Download mvtec_anomaly_detection.tar.xz from MVTec's site and set dataset.source "
        "to the archive or to its extracted folder."
    )
    root = local_folder(
        params.dataset.source,
        [Resource(OFFICIAL_URL)],
        cache_root(params.dataset.cache_dir) / "mvtec",
        hint,
        select=lambda name: in_category(name, category),
        key=f"-{category}",
    )
    frame = read_mvtec(root, category)
    # The images decide (grid, screw and zipper are grayscale): a folder in MVTec layout
    # with a category of its own is often grayscale, and run as three equal channels
    # it cost three times the memory and got colour defects in its label-free figure.
    channels = None
    info = {
        "variant": f"MVTec AD {category} from {root}",
        "category_type": frame["category_type"].iloc[0],
    }
    return frame, channels, info


def category_type(category: str) -> str:
    if category in TEXTURES:
        return "texture"
    return "object" if category in OBJECTS else "other"


FAMILY = register(
    Family(
        name="mvtec",
        read=read,
        categories=lambda _params: list(CATEGORIES),
        category_type=category_type,
    )
)

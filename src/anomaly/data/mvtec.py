"""Read MVTec AD (or any folder in its layout) into a manifest.

Layout: ``<category>/train/good/*.png``, ``<category>/test/<defect>/*.png``,
``<category>/ground_truth/<defect>/<stem>_mask.png``. The official split is
kept in ``source_split``: training uses only ``train/good``, the test set is
the official ``test/`` folder.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ..errors import DataError

log = logging.getLogger(__name__)

TEXTURES = ("carpet", "grid", "leather", "tile", "wood")
OBJECTS = (
    "bottle",
    "cable",
    "capsule",
    "hazelnut",
    "metal_nut",
    "pill",
    "screw",
    "toothbrush",
    "transistor",
    "zipper",
)
CATEGORIES = tuple(sorted(TEXTURES + OBJECTS))
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

OFFICIAL_URL = (
    "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download/"
    "420938113-1629952094/mvtec_anomaly_detection.tar.xz"
)


def category_root(root: Path, category: str) -> Path:
    """``root/<category>``, or ``root`` itself when it already is a category folder."""
    for candidate in (root / category, root / "mvtec_anomaly_detection" / category, root):
        if (candidate / "train" / "good").is_dir():
            return candidate
    raise DataError(f"{root}: no '{category}/train/good' folder; not an MVTec AD layout")


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def read_mvtec(root: str | Path, category: str) -> pd.DataFrame:
    base = category_root(Path(root), category)
    kind = "texture" if category in TEXTURES else "object" if category in OBJECTS else "custom"
    rows = []
    for path in _images(base / "train" / "good"):
        rows.append(_row(path, "", 0, "good", category, "train", kind))
    test = base / "test"
    if not test.is_dir():
        raise DataError(f"{test}: missing; not an MVTec AD layout")
    for defect_dir in sorted(p for p in test.iterdir() if p.is_dir()):
        defect = defect_dir.name
        for path in _images(defect_dir):
            mask = ""
            if defect != "good":
                candidate = base / "ground_truth" / defect / f"{path.stem}_mask.png"
                if candidate.is_file():
                    mask = str(candidate)
                else:
                    log.warning("%s: defect image has no mask; pixel metrics will skip it", path)
            rows.append(_row(path, mask, int(defect != "good"), defect, category, "test", kind))
    frame = pd.DataFrame(rows)
    if not (frame["label"] == 0).any():
        raise DataError(f"{base}: no good images in train/good")
    return frame


def _row(
    path: Path, mask: str, label: int, defect: str, category: str, split: str, kind: str
) -> dict:
    return {
        "image_path": str(path),
        "mask_path": mask,
        "label": label,
        "defect_type": defect,
        "group": category,
        "source_split": split,
        "category_type": kind,
    }

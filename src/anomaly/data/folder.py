"""Read a user's own image folder into a manifest ("bring your own data").

Layout::

    good/*.png                     defect-free images (any of png, jpg, bmp, tif)
    defect/<type>/*.png            defective images, one folder per defect type
    masks/<type>/<stem>_mask.png   optional masks (white = defect); <stem>.png also accepted

A folder in MVTec AD layout (``train/good``, ``test/<type>``, ``ground_truth``) is
read as MVTec instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ..errors import DataError
from .mvtec import IMAGE_SUFFIXES, read_mvtec

log = logging.getLogger(__name__)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def read_folder(root: str | Path) -> pd.DataFrame:
    root = Path(root)
    if (root / "train" / "good").is_dir():
        return read_mvtec(root, root.name)
    good_dir, defect_dir = root / "good", root / "defect"
    if not good_dir.is_dir():
        raise DataError(
            f"{root}: expected a good/ folder (and defect/<type>/, masks/<type>/), "
            "or an MVTec-style train/good folder"
        )
    group = root.name
    rows = [_row(p, "", 0, "good", group) for p in _images(good_dir)]
    if not rows:
        raise DataError(f"{good_dir}: no images")
    if defect_dir.is_dir():
        for type_dir in sorted(p for p in defect_dir.iterdir() if p.is_dir()):
            for path in _images(type_dir):
                mask = ""
                for name in (f"{path.stem}_mask.png", f"{path.stem}.png"):
                    candidate = root / "masks" / type_dir.name / name
                    if candidate.is_file():
                        mask = str(candidate)
                        break
                rows.append(_row(path, mask, 1, type_dir.name, group))
    return pd.DataFrame(rows)


def _row(path: Path, mask: str, label: int, defect: str, group: str) -> dict:
    return {
        "image_path": str(path),
        "mask_path": mask,
        "label": label,
        "defect_type": defect,
        "group": group,
        "source_split": "",
    }

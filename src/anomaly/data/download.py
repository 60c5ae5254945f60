"""The download stage: produce ``data/raw/<dataset>/`` and its manifest.

One function per dataset family, chosen by ``dataset.name``. A local
``dataset.source`` folder is read where it is, never copied.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import DataError
from ..params import Params
from .aitex import read_aitex
from .manifest import MANIFEST_NAME, write_manifest
from .synthetic_fabric import generate


def _synthetic_fabric(params: Params, out: Path) -> pd.DataFrame:
    data_dir = out / "images"
    generate(params.dataset.synthetic, params.seed, data_dir)
    frame = read_aitex(data_dir, params.dataset.categories)
    frame["image_path"] = "images/" + frame["image_path"]
    frame["mask_path"] = frame["mask_path"].map(
        lambda p: ";".join(f"images/{m}" for m in p.split(";")) if p else ""
    )
    return frame


def _aitex(params: Params, out: Path) -> pd.DataFrame:
    source = params.dataset.source
    if not source:
        raise DataError(
            "dataset.source: set it to a folder in AITEX layout (NODefect_images/, "
            "Defect_images/, Mask_images/) for dataset.name=aitex"
        )
    root = Path(source).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"dataset.source: {root} is not a folder")
    frame = read_aitex(root, params.dataset.categories)
    for column in ("image_path", "mask_path"):
        frame[column] = frame[column].map(
            lambda p: ";".join(str(root / m) for m in p.split(";")) if p else ""
        )
    return frame


FAMILIES = {"synthetic_fabric": _synthetic_fabric, "aitex": _aitex}
# Colour channels each family is read with (AITEX and its synthetic twin are grayscale).
CHANNELS = {"synthetic_fabric": 1, "aitex": 1}


def download(params: Params, raw_root: str | Path = "data/raw") -> Path:
    """Materialise the dataset and write its manifest; returns the manifest path."""
    out = Path(raw_root) / params.dataset.name
    out.mkdir(parents=True, exist_ok=True)
    frame = FAMILIES[params.dataset.name](params, out)
    manifest = out / MANIFEST_NAME
    write_manifest(frame, manifest)
    return manifest

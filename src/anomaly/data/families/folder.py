"""Family ``folder``: the user's own images (good/, defect/<type>/, masks/<type>/)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import DataError
from ..folder import read_folder
from ..sources import cache_root, local_folder
from .registry import Family, register


def read(params, out: Path) -> tuple[pd.DataFrame, None, dict]:
    if not params.dataset.source:
        raise DataError(
            "dataset.source: set it to your image folder (good/, defect/<type>/, "
            "masks/<type>/) for dataset.name=folder"
        )
    root = local_folder(
        params.dataset.source, [], cache_root(params.dataset.cache_dir) / "folder", ""
    )
    # Channels: from the first image that reads, after the bad-file check (download()).
    return read_folder(root), None, {"variant": f"folder {root}"}


FAMILY = register(Family(name="folder", read=read))

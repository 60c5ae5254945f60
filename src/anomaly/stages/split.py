"""Stage split: tile tables + ``split.*`` -> ``data/splits/{train,val,test}.csv``."""

from __future__ import annotations

import numpy as np

from .. import paths
from ..data.splitting import SPLITS, make_splits
from ..data.tabular import fit_scaler
from ..io import atomic_dir, read_csv, read_json, write_csv, write_json
from ..params import Params


def run(params: Params) -> None:
    """Good-only training set, grouped by source image; the tabular scaler on train rows."""
    patches = read_csv(paths.PATCHES / "patches.csv", required=["patch_id", "image_id", "label"])
    images = read_csv(paths.PATCHES / "images.csv", required=["image_id", "label", "group"])
    images["group"] = images["group"].astype(str)
    parts, summary = make_splits(patches, images, params.split, params.seed)
    meta = read_json(paths.PATCHES / "meta.json")
    with atomic_dir(paths.SPLITS) as tmp:
        for name in SPLITS:
            write_csv(tmp / f"{name}.csv", parts[name])
        write_json(tmp / "summary.json", summary)
        if meta.get("kind") == "tabular":
            rows = np.load(paths.PATCHES / "patches.npy")[parts["train"]["patch_id"].to_numpy()]
            write_json(tmp / "scaler.json", fit_scaler(rows))

"""Stage patchify: manifest + ``patch.*`` -> ``data/patches/`` (tiles, masks, tables)."""

from __future__ import annotations

import logging

from .. import paths
from ..data.manifest import dataset_info, read_manifest
from ..data.patching import patchify, patchify_table
from ..params import Params

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    """Cut every image into tiles (or pass table rows through) into the tile store."""
    manifest = read_manifest(paths.manifest(params.dataset.name))
    raw = paths.RAW / params.dataset.name
    info = dataset_info(raw)
    # What the dataset family says about its anomalies travels on with the tiles.
    carried = {
        "score_defaults": info.get("score_defaults", {}),
        "anomaly_kind": info.get("anomaly_kind", "local"),
    }
    if info["kind"] == "tabular":
        meta = patchify_table(
            manifest,
            raw / "table.csv",
            paths.PATCHES,
            info["features"],
            carried,
        )
    else:
        meta = patchify(
            manifest,
            params.patch,
            paths.PATCHES,
            info["channels"],
            carried,
        )
    log.info("patchify: %d tiles from %d images", meta["n_patches"], meta["n_images"])

"""Stage score: model + val/test tiles -> ``scores/<model>/`` (tile and image scores, maps)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from .. import paths
from ..data.store import open_store
from ..errors import DataError
from ..io import atomic_dir, atomic_path, read_csv, write_csv, write_json
from ..models.registry import check_model_params, load_checkpoint
from ..params import Params
from ..scoring import aggregate_images, fit_normalisation, normalise, score_tiles, stitch
from ..training import resolve_device, seed_everything
from .common import split_tiles


def run(params: Params) -> None:
    """Score validation and test tiles, normalise per group, aggregate per image."""
    check_model_params(params, "active")
    seed_everything(params.seed)
    device = resolve_device(params.train.device)
    model, _ = load_checkpoint(paths.model_dir(params.model) / "model.pt", device)
    store = open_store(paths.PATCHES, paths.SPLITS)
    images = read_csv(
        paths.PATCHES / "images.csv", required=["image_id", "label", "height", "width"]
    )
    score_cfg = params.score
    if store.is_tabular:
        # Table rows have no spatial neighbourhood: per-feature squared error, averaged.
        score_cfg = replace(score_cfg, map="mse", smooth_sigma=0.0, patch_reduce="mean")
    with atomic_dir(paths.score_dir(params.model)) as tmp:
        norm = None
        for split in ("val", "test"):
            tiles = split_tiles(split)
            tiles["group"] = tiles["group"].astype(str)
            scores, maps, codes = score_tiles(
                model, store, tiles["patch_id"].to_numpy(), score_cfg, device, split == "test"
            )
            if not np.isfinite(scores).all():
                raise DataError(
                    f"{paths.model_dir(params.model)}: {int((~np.isfinite(scores)).sum())} "
                    f"{split} tile scores are NaN or infinite; the model diverged (retrain "
                    "with a lower lr, or check the input data)"
                )
            if codes is not None:
                with atomic_path(tmp / "test_latents.npy") as target, open(target, "wb") as fh:
                    np.save(fh, codes)
            tiles = tiles.assign(raw_score=scores)
            if norm is None:  # fitted on validation, the first split
                norm = fit_normalisation(params.score.normalize, tiles.assign(score=scores))
                write_json(tmp / "normalization.json", norm)
            tiles["score"], shift, scale = normalise(scores, tiles["group"], norm)
            write_csv(tmp / f"{split}_patches.csv", tiles)
            per_image = aggregate_images(tiles, params.score.aggregate, params.score.aggregate_k)
            per_image = per_image.merge(
                images[["image_id", "label", "defect_type", "group", "image_path"]],
                on="image_id",
                how="left",
            )
            write_csv(tmp / f"{split}_images.csv", per_image)
            if split == "test" and maps is not None and store.is_tabular:
                errors = pd.DataFrame(
                    maps.reshape(len(maps), -1).astype(np.float32), columns=store.meta["features"]
                )
                errors.insert(0, "label", tiles["label"].to_numpy())
                errors.insert(0, "image_id", tiles["image_id"].to_numpy())
                write_csv(tmp / "test_feature_errors.csv", errors)
            elif split == "test" and maps is not None:
                full = {}
                for image_id, group in tiles.groupby("image_id", sort=True):
                    rows = group.index.to_numpy()
                    tile_maps = (maps[rows].astype(np.float32) - shift[rows, None, None]) / scale[
                        rows, None, None
                    ]
                    info = images.loc[images["image_id"] == image_id].iloc[0]
                    full[f"img_{image_id}"] = stitch(
                        tile_maps, group, int(info["height"]), int(info["width"])
                    ).astype(np.float16)
                with atomic_path(tmp / "test_maps.npz") as target, open(target, "wb") as handle:
                    np.savez(handle, **full)

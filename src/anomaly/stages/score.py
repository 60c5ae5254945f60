"""Stage score: model + val/test tiles -> ``scores/<model>/`` (tile and image scores, maps)."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pandas as pd

from .. import paths
from ..config_schema import to_dict
from ..data.store import open_store
from ..errors import DataError
from ..io import atomic_dir, atomic_path, read_csv, write_csv, write_json
from ..models.registry import check_model_params, load_checkpoint
from ..params import Params
from ..scoring import (
    aggregate_images,
    fit_normalisation,
    normalise,
    resolve_score,
    score_tiles,
    stitch,
)
from ..training import resolve_device, seed_everything
from ..value_counts import float16_counts, merge_counts
from .common import split_tiles

log = logging.getLogger(__name__)


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
    score_cfg, origin = resolve_score(params.score, store.meta.get("score_defaults"))
    if store.is_tabular:
        # Table rows have no spatial neighbourhood: per-feature squared error, averaged.
        score_cfg = replace(score_cfg, map="mse", smooth_sigma=0.0, patch_reduce="mean")
        origin.update(map="tables", smooth_sigma="tables", patch_reduce="tables")
    with atomic_dir(paths.score_dir(params.model)) as tmp:
        # The settings that ran (auto resolved): export bundles them, evaluate reports them.
        write_json(tmp / "score_settings.json", {**to_dict(score_cfg), "origin": origin})
        log.info(
            "score %s: patch_reduce %s, smooth_sigma %s (%s)",
            params.model,
            score_cfg.patch_reduce,
            score_cfg.smooth_sigma,
            ", ".join(f"{k}: {v}" for k, v in origin.items()),
        )
        norm = None
        for split in ("val", "test"):
            tiles = split_tiles(split)
            tiles["group"] = tiles["group"].astype(str)
            ids = tiles["patch_id"].to_numpy()
            scores, maps, codes = score_tiles(
                model,
                store,
                ids,
                score_cfg,
                device,
                True,
                keep_codes=split == "test",
                desc=f"score {params.model} {split}",
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
                norm = fit_normalisation(
                    params.score.normalize,
                    tiles.assign(score=scores),
                    sorted(images["group"].astype(str).unique()),
                )
                write_json(tmp / "normalization.json", norm)
            tiles["score"], shift, scale = normalise(scores, tiles["group"], norm)
            write_csv(tmp / f"{split}_patches.csv", tiles)
            if split == "val":  # always written (empty without maps): a dep of threshold
                has_maps = maps is not None and not store.is_tabular
                _write_val_pixels(
                    tmp / "val_pixels.npz",
                    maps if has_maps else None,
                    shift,
                    scale,
                    store,
                    ids,
                    tiles,
                )
            per_image = aggregate_images(tiles, params.score.aggregate, params.score.aggregate_k)
            per_image = per_image.merge(
                images[["image_id", "label", "defect_type", "group", "image_path"]],
                on="image_id",
                how="left",
            )
            write_csv(tmp / f"{split}_images.csv", per_image)
            log.info(
                "score %s: %d %s tiles of %d images (%d good, %d defective)",
                params.model,
                len(tiles),
                split,
                len(per_image),
                int((per_image["label"] == 0).sum()),
                int((per_image["label"] == 1).sum()),
            )
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


def _write_val_pixels(
    target, maps: np.ndarray | None, shift: np.ndarray, scale: np.ndarray, store, ids, tiles
) -> None:
    """Counts of normalised validation map values, over good tiles' pixels and over the
    defect pixels of defect tiles (when validation has labelled defects): what the
    threshold stage sets the pixel threshold from, exactly and in bounded memory."""
    good, defect = [], []
    labels = tiles["label"].to_numpy()
    for start in range(0, 0 if maps is None else len(maps), 512):
        rows = slice(start, start + 512)
        normalised = (maps[rows].astype(np.float32) - shift[rows, None, None]) / scale[
            rows, None, None
        ]
        normalised = normalised.astype(np.float16)
        lab = labels[rows]
        if (lab == 0).any():
            good.append(float16_counts(normalised[lab == 0]))
        if (lab == 1).any():
            masks = np.asarray(store.masks[ids[rows][lab == 1]]).astype(bool)
            if masks.shape == normalised[lab == 1].shape and masks.any():
                defect.append(float16_counts(normalised[lab == 1][masks]))
    good_values, good_counts = merge_counts(good)
    defect_values, defect_counts = merge_counts(defect)
    with atomic_path(target) as path, open(path, "wb") as handle:
        np.savez(
            handle,
            good_values=good_values,
            good_counts=good_counts,
            defect_values=defect_values,
            defect_counts=defect_counts,
        )

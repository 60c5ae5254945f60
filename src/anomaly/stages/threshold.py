"""Stage threshold: validation scores + ``threshold.*`` -> ``metrics/threshold.json`` (image,
tile and pixel thresholds)."""

from __future__ import annotations

import logging

import numpy as np

from .. import paths
from ..errors import DataError
from ..evaluation.thresholds import candidate_thresholds, choose_threshold, pixel_threshold
from ..io import read_csv, write_json
from ..params import Params

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    """Image and tile thresholds from validation only, plus every method's candidate."""
    base = paths.score_dir(params.model)
    images = read_csv(base / "val_images.csv", required=["score", "label"])
    patches = read_csv(base / "val_patches.csv", required=["score", "label"])
    patches = patches[patches["label"] >= 0]
    cfg = params.threshold
    result = {
        "model": params.model,  # predict refuses a threshold set for another model
        "method": cfg.method,
        "image_threshold": choose_threshold(
            cfg, images["score"].to_numpy(), images["label"].to_numpy(), "image"
        ),
        "patch_threshold": choose_threshold(
            cfg, patches["score"].to_numpy(), patches["label"].to_numpy(), "tile"
        ),
        "val_good_images": int((images["label"] == 0).sum()),
        "val_defect_images": int((images["label"] == 1).sum()),
        "candidates": candidate_thresholds(
            cfg, images["score"].to_numpy(), images["label"].to_numpy()
        ),
    }
    pixels_file = base / "val_pixels.npz"
    if not pixels_file.is_file():
        raise DataError(f"{pixels_file}: not found; rerun the score stage (dvc repro)")
    with np.load(pixels_file) as stored:
        counts = dict(stored)
    if counts["good_counts"].size:  # empty for models and data without pixel maps
        result["pixel_threshold"], result["pixel_rule"] = pixel_threshold(cfg, counts)
    write_json(paths.THRESHOLD, result)
    log.info(
        "threshold %s (%s): image %.4g, pixel %s",
        params.model,
        cfg.method,
        result["image_threshold"],
        "n/a" if "pixel_threshold" not in result else f"{result['pixel_threshold']:.4g}",
    )

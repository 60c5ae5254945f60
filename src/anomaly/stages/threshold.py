"""Stage threshold: validation scores + ``threshold.*`` -> ``metrics/threshold.json``."""

from __future__ import annotations

from .. import paths
from ..io import read_csv, write_json
from ..params import Params
from ..thresholds import candidate_thresholds, choose_threshold


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
    write_json(paths.THRESHOLD, result)

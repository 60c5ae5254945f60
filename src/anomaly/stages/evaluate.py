"""Stage evaluate: test scores + threshold + masks -> ``metrics/eval.json``, ``plots/curves/``."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import pandas as pd

from .. import paths
from ..data.manifest import load_image_and_mask, read_manifest
from ..errors import DataError
from ..evaluation.label_free import label_free_metrics
from ..evaluation.metrics import (
    bootstrap_auroc_ci,
    check_evaluable,
    classification_metrics,
    confusion_rows,
    histogram_rows,
    per_defect_metrics,
    pr_points,
    roc_points,
    threshold_sweep,
)
from ..evaluation.pixel_metrics import MapPairs, pixel_metrics
from ..io import read_csv, read_json, write_json
from ..params import Params

log = logging.getLogger(__name__)


def _map_pairs(params: Params, images: pd.DataFrame) -> tuple[MapPairs, int]:
    """Full-resolution test maps with their masks, one image at a time (defects without a
    mask are left out; a function, since the pixel metrics read them twice), and how many
    images it yields, known from the archive's member names without decoding a map."""
    manifest = read_manifest(paths.manifest(params.dataset.name)).set_index("image_id", drop=False)
    maps_file = paths.score_dir(params.model) / "test_maps.npz"

    def selected(stored_keys: set[str]) -> Iterator[tuple[pd.Series, str]]:
        for image_id in images["image_id"]:
            row = manifest.loc[image_id]
            if row["label"] == 1 and not row["mask_path"]:
                continue  # a defect without a mask cannot be scored per pixel
            key = f"img_{image_id}"
            if key in stored_keys:
                yield row, key

    def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if not maps_file.is_file():
            return
        with np.load(maps_file) as stored:
            for row, key in selected(set(stored.files)):
                _, mask = load_image_and_mask(manifest, row)
                score_map = stored[key]
                if score_map.shape != mask.shape:
                    raise DataError(
                        f"{maps_file}: map of image {row['image_id']} is {score_map.shape}, "
                        f"mask is {mask.shape}; rerun the score stage"
                    )
                yield score_map, mask

    count = 0
    if maps_file.is_file():
        with np.load(maps_file) as stored:
            count = sum(1 for _ in selected(set(stored.files)))
    return pairs, count


def run(params: Params) -> None:
    """Image, tile, pixel and per-defect metrics; curve data for `dvc plots`."""
    base = paths.score_dir(params.model)
    threshold = read_json(paths.THRESHOLD)
    images = read_csv(
        base / "test_images.csv", required=["image_id", "score", "label", "defect_type"]
    )
    patches = read_csv(base / "test_patches.csv", required=["score", "label"])
    patches = patches[patches["label"] >= 0]
    y, s = images["label"].to_numpy(), images["score"].to_numpy()
    check_evaluable(base / "test_images.csv", y, s)
    cut = threshold["image_threshold"]
    flat: dict = {
        "model": params.model,
        "dataset": params.dataset.name,
        "threshold": float(cut),
        "threshold_method": threshold["method"],
    }
    settings_file = base / "score_settings.json"
    if settings_file.is_file():  # what `score.*: auto` resolved to, for `dvc exp show`
        settings = read_json(settings_file)
        # a model's own tile score when it has one: patch_reduce did not run then
        flat["score.patch_reduce"] = settings.get("tile_score") or settings["patch_reduce"]
        flat["score.smooth_sigma"] = settings["smooth_sigma"]
    for key, value in classification_metrics(y, s, cut).items():
        flat[f"image.{key}"] = value
        if key == "auroc":  # 95% bootstrap interval next to the value it qualifies
            ci = bootstrap_auroc_ci(y, s, params.seed)
            flat["image.auroc_ci_low"], flat["image.auroc_ci_high"] = ci or (None, None)
    for key, value in classification_metrics(
        patches["label"].to_numpy(), patches["score"].to_numpy(), threshold["patch_threshold"]
    ).items():
        flat[f"patch.{key}"] = value
    pairs, n_maps = _map_pairs(params, images)
    if n_maps:
        pixel_cut = threshold.get("pixel_threshold")
        pixel = pixel_metrics(pairs, params.seed, params.evaluate.aupro_max_fpr, pixel_cut)
        flat["pixel.auroc"] = pixel.auroc  # exact, every pixel
        flat["pixel.auroc_ci_low"], flat["pixel.auroc_ci_high"] = pixel.auroc_ci or (None, None)
        flat["pixel.aupro"] = pixel.aupro
        if pixel_cut is not None:
            flat["pixel.threshold"] = float(pixel_cut)
            for key, value in pixel.decisions.items():
                flat[f"pixel.{key}"] = value
    flat.update(per_defect_metrics(images, cut))
    flat.update(
        label_free_metrics(base / "val_synthetic.npz", params.seed, params.evaluate.aupro_max_fpr)
    )
    write_json(paths.EVAL, flat)
    both = len(set(y)) > 1
    write_json(paths.CURVES / "roc.json", {"roc": roc_points(y, s) if both else []})
    write_json(paths.CURVES / "pr.json", {"pr": pr_points(y, s) if both else []})
    write_json(paths.CURVES / "histogram.json", {"histogram": histogram_rows(y, s)})
    write_json(
        paths.CURVES / "threshold_study.json",
        {"threshold_study": threshold_sweep(y, s) if both else []},
    )
    write_json(paths.CURVES / "confusion.json", {"confusion": confusion_rows(y, s, cut)})
    write_json(
        paths.CURVES / "scores.json",
        {
            "scores": [
                {
                    "image_id": int(r.image_id),
                    "score": float(r.score),
                    "label": int(r.label),
                    "defect_type": str(r.defect_type),
                }
                for r in images.itertuples()
            ]
        },
    )
    log.info(
        "%s on %s: image AUROC %s [%s, %s], pixel AUROC %s, F1 %s at threshold %.4g, "
        "pixel F1 %s IoU %s; label-free (simulated defects on validation): image AUROC "
        "%s [%s, %s], pixel AUROC %s",
        params.model,
        params.dataset.name,
        _fmt(flat["image.auroc"]),
        _fmt(flat["image.auroc_ci_low"]),
        _fmt(flat["image.auroc_ci_high"]),
        _fmt(flat.get("pixel.auroc")),
        _fmt(flat["image.f1"]),
        cut,
        _fmt(flat.get("pixel.f1")),
        _fmt(flat.get("pixel.iou")),
        _fmt(flat["val_synthetic.image.auroc"]),
        _fmt(flat["val_synthetic.image.auroc_ci_low"]),
        _fmt(flat["val_synthetic.image.auroc_ci_high"]),
        _fmt(flat["val_synthetic.pixel.auroc"]),
    )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"

"""Stage plot: scores, metrics and training logs -> ``plots/figures/*.png``."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import paths
from ..data.manifest import read_manifest
from ..io import atomic_dir, read_csv, read_json
from ..params import Params
from ..reporting import plots, study_plots
from .common import split_tiles


def run(params: Params) -> None:
    """ROC, PR, histogram, confusion, threshold study, latent view, curves, gallery."""
    base = paths.score_dir(params.model)
    images = read_csv(base / "test_images.csv", required=["image_id", "score", "label"])
    threshold = read_json(paths.THRESHOLD)
    metrics = read_json(paths.EVAL)
    manifest = read_manifest(paths.manifest(params.dataset.name))
    maps_file = base / "test_maps.npz"
    dpi = params.plot.dpi
    with atomic_dir(paths.FIGURES) as tmp:
        plots.roc_figure(images, metrics, tmp / "roc.png", dpi)
        plots.pr_figure(images, metrics, tmp / "pr.png", dpi)
        plots.histogram_figure(
            images, threshold["image_threshold"], tmp / "score_histogram.png", dpi
        )
        plots.confusion_figure(metrics, tmp / "confusion_matrix.png", dpi)
        study_plots.threshold_study_figure(
            pd.DataFrame(read_json(paths.CURVES / "threshold_study.json")["threshold_study"]),
            images["score"].to_numpy(),
            threshold,
            tmp / "threshold_study.png",
            dpi,
        )
        latents_file = base / "test_latents.npy"
        if latents_file.is_file() and params.plot.latent != "none":
            study_plots.latent_space_figure(
                np.load(latents_file),
                split_tiles("test"),
                images,
                params.plot.latent,
                params.plot.latent_points,
                params.seed,
                tmp / "latent_space.png",
                dpi,
            )
        plots.training_figure(paths.TRAIN_LOG, tmp / "training_curves.png", dpi)
        errors_file = base / "test_feature_errors.csv"
        if errors_file.is_file():
            plots.feature_error_figure(read_csv(errors_file), tmp / "feature_errors.png", dpi)
        if maps_file.is_file():
            plots.gallery_figure(
                images,
                manifest,
                maps_file,
                threshold["image_threshold"],
                params.plot.gallery_per_group,
                tmp / "gallery.png",
                dpi,
                threshold.get("pixel_threshold"),
            )

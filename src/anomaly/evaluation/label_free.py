"""The label-free quality figure: ``val_synthetic.*`` metrics from ``val_synthetic.npz``.

The score stage writes the raw material (image scores of good validation images and of
their copies with a simulated defect, and the maps and masks of the painted tiles);
this module turns it into the same kinds of figures the test set gets, so that
``dvc exp show`` and ``anomaly select`` rank runs by it:

- ``val_synthetic.image.auroc`` with its 95% bootstrap interval (resampling images);
- ``val_synthetic.pixel.auroc`` (exact, every pixel of the painted tiles and of their
  clean originals) with its interval, and ``val_synthetic.pixel.aupro``;
- ``val_synthetic.by_kind.<kind>.auroc``: good images against one kind's copies;
- ``val_synthetic.n_good`` and ``val_synthetic.n_defect``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import DataError
from .metrics import _auc_from_samples, bootstrap_auroc_ci
from .pixel_metrics import pixel_metrics

PREFIX = "val_synthetic"
KEYS = (
    "image.auroc",
    "image.auroc_ci_low",
    "image.auroc_ci_high",
    "pixel.auroc",
    "pixel.auroc_ci_low",
    "pixel.auroc_ci_high",
    "pixel.aupro",
)


def label_free_metrics(path: str | Path, seed: int, aupro_max_fpr: float) -> dict:
    """Flat ``val_synthetic.*`` keys; None where a figure is undefined (no good
    validation image, no maps), never NaN."""
    flat: dict = {f"{PREFIX}.{key}": None for key in KEYS}
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: missing; rerun the score stage")
    with np.load(path) as stored:
        data = {name: stored[name] for name in stored.files}
    good, bad, kinds = data["good_scores"], data["defect_scores"], data["kinds"]
    flat[f"{PREFIX}.n_good"], flat[f"{PREFIX}.n_defect"] = len(good), len(bad)
    if not len(good) or not len(bad):
        return flat
    labels = np.r_[np.zeros(len(good), int), np.ones(len(bad), int)]
    scores = np.r_[good, bad]
    flat[f"{PREFIX}.image.auroc"] = _auc_from_samples(bad, good)
    ci = bootstrap_auroc_ci(labels, scores, seed)
    if ci is not None:
        flat[f"{PREFIX}.image.auroc_ci_low"], flat[f"{PREFIX}.image.auroc_ci_high"] = ci
    for kind in sorted(set(kinds.tolist())):
        flat[f"{PREFIX}.by_kind.{kind}.auroc"] = _auc_from_samples(bad[kinds == kind], good)
    if "defect_maps" in data:
        clean, painted, masks = data["clean_maps"], data["defect_maps"], data["masks"]

        def pairs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for i in range(len(masks)):
                yield clean[i], np.zeros_like(masks[i])
                yield painted[i], masks[i]

        pixel = pixel_metrics(pairs, seed, aupro_max_fpr, None)
        flat[f"{PREFIX}.pixel.auroc"] = pixel.auroc
        if pixel.auroc_ci is not None:
            low, high = pixel.auroc_ci
            flat[f"{PREFIX}.pixel.auroc_ci_low"], flat[f"{PREFIX}.pixel.auroc_ci_high"] = low, high
        flat[f"{PREFIX}.pixel.aupro"] = pixel.aupro
    return flat

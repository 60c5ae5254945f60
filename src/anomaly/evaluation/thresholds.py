"""Pick the score above which a sample is called defective.

All statistical methods look only at validation data (never at test), so the
test metrics stay honest: ``percentile`` and ``mean_std`` use good validation
scores only, ``f1_optimal`` needs labelled defects in validation
(``split.labeled_val_fraction`` > 0), ``manual`` takes a number.

The pixel threshold (predicted masks, pixel F1 / IoU) follows one documented rule:
the ``threshold.pixel_percentile`` percentile of the normalised anomaly-map values
of good validation tiles (a false-positive budget per good pixel), or, with
``method: f1_optimal`` and labelled defect masks in validation, the value that
maximises pixel F1 there. Both are exact: computed from counts of the float16 map
values (:func:`anomaly.evaluation.value_counts.float16_counts`), not from a subsample.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve

from ..errors import DataError, ParamsError
from ..params import ThresholdConfig


def f1_optimal(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximising F1; predictions are ``score >= threshold``."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
    best = int(np.argmax(f1[:-1])) if len(thresholds) else 0
    return float(thresholds[best]), float(f1[best])


def candidate_thresholds(
    cfg: ThresholdConfig, scores: np.ndarray, labels: np.ndarray
) -> dict[str, float | None]:
    """Every method's threshold on the same validation scores (None where it cannot apply).

    The one place each method's formula lives: :func:`choose_threshold` picks the
    configured one, and the threshold study plots all of them side by side, so a
    user sees what switching ``threshold.method`` would do before rerunning anything.
    """
    good = scores[labels == 0]
    return {
        "percentile": float(np.percentile(good, cfg.percentile)) if good.size else None,
        "mean_std": float(good.mean() + cfg.k * good.std()) if good.size else None,
        "f1_optimal": (
            f1_optimal(scores, labels)[0] if good.size and (labels == 1).any() else None
        ),
        "manual": float(cfg.value) if cfg.value is not None else None,
    }


def choose_threshold(
    cfg: ThresholdConfig, scores: np.ndarray, labels: np.ndarray, what: str = "image"
) -> float:
    """The threshold for one level (``what`` names it in errors)."""
    value = candidate_thresholds(cfg, scores, labels)[cfg.method]
    if value is not None:
        return value
    # manual never lands here: ThresholdConfig requires threshold.value with it.
    if cfg.method == "f1_optimal":
        raise ParamsError(
            "params.yaml: threshold.method=f1_optimal needs good and defect samples in "
            "validation; set split.labeled_val_fraction > 0"
        )
    raise DataError(f"threshold: no good validation {what} scores to set a threshold from")


def counts_percentile(values: np.ndarray, counts: np.ndarray, percentile: float) -> float:
    """The smallest value at or below which ``percentile`` % of the counted values lie."""
    cumulative = np.cumsum(counts)
    rank = np.searchsorted(cumulative, percentile / 100 * cumulative[-1], side="left")
    return float(values[min(int(rank), len(values) - 1)])


def counts_f1_optimal(
    good_values: np.ndarray, good_counts: np.ndarray, bad_values: np.ndarray, bad_counts: np.ndarray
) -> float:
    """The threshold maximising pixel F1 (prediction: value >= threshold) over every
    distinct value, from the good and defect pixel counts."""
    candidates = np.union1d(good_values, bad_values)
    # pixels at or above each candidate = total minus those strictly below it
    below_good = np.r_[0, np.cumsum(good_counts)][np.searchsorted(good_values, candidates)]
    below_bad = np.r_[0, np.cumsum(bad_counts)][np.searchsorted(bad_values, candidates)]
    tp = bad_counts.sum() - below_bad
    fp = good_counts.sum() - below_good
    fn = below_bad
    f1 = 2 * tp / np.clip(2 * tp + fp + fn, 1, None)
    return float(candidates[int(np.argmax(f1))])


def pixel_threshold(cfg: ThresholdConfig, counts: dict[str, np.ndarray]) -> tuple[float, str]:
    """(pixel threshold, the rule that set it) from ``val_pixels.npz``'s counts."""
    good_values, good_counts = counts["good_values"], counts["good_counts"]
    bad_values, bad_counts = counts["defect_values"], counts["defect_counts"]
    if good_counts.sum() == 0:
        raise DataError("threshold: no good validation pixels to set the pixel threshold from")
    if cfg.method == "f1_optimal" and bad_counts.sum() > 0:
        return (
            counts_f1_optimal(good_values, good_counts, bad_values, bad_counts),
            "pixel F1 maximised on labelled validation defects",
        )
    return (
        counts_percentile(good_values, good_counts, cfg.pixel_percentile),
        f"percentile {cfg.pixel_percentile:g} of good validation pixels",
    )

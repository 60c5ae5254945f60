"""Pick the score above which a sample is called defective.

All statistical methods look only at validation data (never at test), so the
test metrics stay honest: ``percentile`` and ``mean_std`` use good validation
scores only, ``f1_optimal`` needs labelled defects in validation
(``split.labeled_val_fraction`` > 0), ``manual`` takes a number.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import precision_recall_curve

from .errors import DataError, ParamsError
from .params import ThresholdConfig


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

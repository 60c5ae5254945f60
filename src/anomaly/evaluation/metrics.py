"""Image, tile, pixel and per-defect metrics.

Threshold-free: AUROC, AUPR (average precision), F1-max. At the chosen
threshold: F1, precision, recall, accuracy and confusion counts. Pixel-level
metrics, computed from maps streamed one image at a time, are in
:mod:`anomaly.evaluation.pixel_metrics`.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

log = logging.getLogger(__name__)


def _safe_auc(labels: np.ndarray, scores: np.ndarray, fn) -> float | None:
    if len(np.unique(labels)) < 2:
        return None
    return float(fn(labels, scores))


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float | None:
    if len(np.unique(labels)) < 2:
        return None
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.clip(precision + recall, 1e-12, None)
    return float(f1.max())


def classification_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Ranking metrics plus metrics of ``score >= threshold`` as the defect call."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    pred = (scores >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(labels, pred, labels=[0, 1]).ravel()
    # Undefined is null, never a 0.0 that reads like a measured failure: without defects
    # there is no recall (nor F1), and without a single defect call no precision.
    precision = float(tp / (tp + fp)) if tp + fp else None
    recall = float(tp / (tp + fn)) if tp + fn else None
    if recall is None:
        f1 = None
    elif precision is None or precision + recall == 0:
        f1 = 0.0
    else:
        f1 = float(2 * precision * recall / (precision + recall))
    return {
        "auroc": _safe_auc(labels, scores, roc_auc_score),
        "aupr": _safe_auc(labels, scores, average_precision_score),
        "f1_max": f1_max(labels, scores),
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "accuracy": float((tp + tn) / len(labels)) if len(labels) else 0.0,
        "tp": int(tp),
        "fp": int(fp),
        "tn": int(tn),
        "fn": int(fn),
        "n": int(len(labels)),
    }


def roc_points(labels: np.ndarray, scores: np.ndarray) -> list[dict]:
    fpr, tpr, thr = roc_curve(labels, scores)
    return [
        {"fpr": float(a), "tpr": float(b), "threshold": float(min(c, 1e300))}
        for a, b, c in zip(fpr, tpr, thr, strict=True)
    ]


def pr_points(labels: np.ndarray, scores: np.ndarray) -> list[dict]:
    precision, recall, _ = precision_recall_curve(labels, scores)
    return [
        {"recall": float(r), "precision": float(p)} for p, r in zip(precision, recall, strict=True)
    ]


def threshold_sweep(labels: np.ndarray, scores: np.ndarray, max_points: int = 200) -> list[dict]:
    """Precision, recall and F1 of ``score >= t`` for thresholds t across the score range.

    Every distinct score is a threshold where the counts change; more than
    ``max_points`` of them are thinned to evenly spaced quantiles.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    candidates = np.unique(scores)
    if candidates.size > max_points:
        candidates = np.unique(np.quantile(scores, np.linspace(0, 1, max_points)))
    rows = []
    positives = int(labels.sum())
    for t in candidates:
        pred = scores >= t
        tp = int((pred & (labels == 1)).sum())
        called = int(pred.sum())
        precision = tp / called if called else 1.0
        recall = tp / positives if positives else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {
                "threshold": float(t),
                "precision": float(precision),
                "recall": float(recall),
                "f1": float(f1),
            }
        )
    return rows


def histogram_rows(labels: np.ndarray, scores: np.ndarray, bins: int = 30) -> list[dict]:
    """Score histogram per class as rows ``{score: bin centre, good: n, defect: n}``, the
    shape ``dvc plots`` can overlay across revisions (it cannot bin raw scores itself)."""
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        return []
    edges = np.histogram_bin_edges(scores, bins=bins)
    good, _ = np.histogram(scores[labels == 0], bins=edges)
    defect, _ = np.histogram(scores[labels == 1], bins=edges)
    centres = (edges[:-1] + edges[1:]) / 2
    return [
        {"score": float(c), "good": int(g), "defect": int(d)}
        for c, g, d in zip(centres, good, defect, strict=True)
    ]


def check_evaluable(where: object, labels: np.ndarray, scores: np.ndarray) -> None:
    """Refuse or flag test sets whose metrics would look real without being so.

    Raises for no scores, non-finite scores and constant scores (AUROC 0.5 and a
    precision that mean nothing); logs a warning when one class is missing, in which
    case the metrics that need both classes are written as null.
    """
    from ..errors import DataError

    if len(scores) == 0:
        raise DataError(f"{where}: no test images to evaluate")
    if not np.isfinite(scores).all():
        raise DataError(f"{where}: {int((~np.isfinite(scores)).sum())} scores are NaN or infinite")
    if np.ptp(scores) == 0:
        raise DataError(
            f"{where}: every test image has the same score ({scores[0]:.6g}); the model does "
            "not rank anything, so no metric would mean anything (check its training)"
        )
    for label, name in ((1, "defect"), (0, "good")):
        if not (labels == label).any():
            log.warning(
                "%s: the test set has no %s images: AUROC, AUPR and F1-max are undefined "
                "and written as null%s",
                where,
                name,
                ", and so are recall and F1" if label == 1 else "",
            )


def per_defect_metrics(images: pd.DataFrame, threshold: float) -> dict:
    """AUROC and recall of each defect type against all good images, with its count."""
    flat = {}
    good = images[images["label"] == 0]
    for defect, part in images[images["label"] == 1].groupby("defect_type", sort=True):
        both = pd.concat([good, part])
        m = classification_metrics(both["label"].to_numpy(), both["score"].to_numpy(), threshold)
        flat[f"by_defect.{defect}.auroc"] = m["auroc"]
        flat[f"by_defect.{defect}.recall"] = m["recall"]
        flat[f"by_defect.{defect}.n"] = int(len(part))
    return flat


def confusion_rows(labels: np.ndarray, scores: np.ndarray, threshold: float) -> list[dict]:
    """One ``{actual, predicted}`` row per image, the shape of dvc's confusion template."""
    names = np.array(["good", "defect"])
    predicted = names[(np.asarray(scores) >= threshold).astype(int)]
    return [
        {"actual": str(a), "predicted": str(p)}
        for a, p in zip(names[np.asarray(labels).astype(int)], predicted, strict=True)
    ]


def bootstrap_auroc_ci(
    labels: np.ndarray, scores: np.ndarray, seed: int, resamples: int = 1000, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the image AUROC, resampling images (stratified,
    so every resample has both classes). None when one class is missing.

    Why: with a few dozen test images, two models 0.02 apart are often not different;
    the interval says so next to every AUROC.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, dtype=float)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if not len(pos) or not len(neg):
        return None
    rng = np.random.default_rng([seed, 17])
    values = np.empty(resamples)
    for r in range(resamples):
        p = scores[rng.choice(pos, len(pos))]
        n = scores[rng.choice(neg, len(neg))]
        values[r] = _auc_from_samples(p, n)
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _auc_from_samples(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + half the ties (Mann-Whitney)."""
    both = np.concatenate([pos, neg])
    ranks = _average_ranks(both)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    # ties share the mean of their ranks
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values)) + 1]
    ends = np.r_[starts[1:], len(values)]
    for s, e in zip(starts, ends, strict=True):
        ranks[order[s:e]] = (s + e + 1) / 2
    return ranks

"""Image, tile, pixel and per-defect metrics.

Threshold-free: AUROC, AUPR (average precision), F1-max. At the chosen
threshold: F1, precision, recall, accuracy and confusion counts. Pixel level:
AUROC and AUPRO (area under the per-region-overlap curve up to a false
positive rate, normalised to [0, 1], as in the MVTec AD benchmark).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from scipy import ndimage
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


def aupro(
    maps: list[np.ndarray], masks: list[np.ndarray], max_fpr: float = 0.3, steps: int = 400
) -> float | None:
    """Normalised area under the PRO curve for FPR in [0, max_fpr].

    PRO at a threshold is the mean, over connected defect regions, of the
    fraction of each region's pixels above it; FPR is the fraction of good
    pixels above it. Thresholds are taken at good-pixel quantiles so the FPR
    axis is sampled evenly, and every count is a binary search in sorted
    scores rather than a pass over the image per threshold.
    """
    good = np.sort(np.concatenate([m[~k].ravel() for m, k in zip(maps, masks, strict=True)]))
    regions: list[np.ndarray] = []
    for score_map, mask in zip(maps, masks, strict=True):
        if mask.any():
            labelled, count = ndimage.label(mask)
            regions += [np.sort(score_map[labelled == r]) for r in range(1, count + 1)]
    if not regions or good.size == 0:
        return None
    thresholds = np.quantile(good, 1 - np.linspace(0, max_fpr, steps + 1))
    fpr = 1 - np.searchsorted(good, thresholds, side="right") / good.size
    pro = np.mean(
        [1 - np.searchsorted(r, thresholds, side="right") / r.size for r in regions], axis=0
    )
    order = np.argsort(fpr, kind="stable")
    fpr, pro = fpr[order], pro[order]
    keep = fpr <= max_fpr
    x = np.concatenate([[0.0], fpr[keep], [max_fpr]])
    y = np.concatenate(
        [[pro[keep][0] if keep.any() else 0.0], pro[keep], [np.interp(max_fpr, fpr, pro)]]
    )
    return float(np.trapezoid(y, x) / max_fpr)


def pixel_auroc(
    maps: list[np.ndarray], masks: list[np.ndarray], max_samples: int, seed: int
) -> float | None:
    scores = np.concatenate([m.ravel() for m in maps])
    labels = np.concatenate([k.ravel() for k in masks])
    if len(np.unique(labels)) < 2:
        return None
    if scores.size > max_samples:
        idx = np.random.default_rng([seed, 3]).choice(scores.size, max_samples, replace=False)
        scores, labels = scores[idx], labels[idx]
    return float(roc_auc_score(labels, scores))


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
    from .errors import DataError

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

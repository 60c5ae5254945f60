"""Image, tile, pixel and per-defect metrics.

Threshold-free: AUROC, AUPR (average precision), F1-max. At the chosen
threshold: F1, precision, recall, accuracy and confusion counts. Pixel level:
AUROC and AUPRO (area under the per-region-overlap curve up to a false
positive rate, normalised to [0, 1], as in the MVTec AD benchmark).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)


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
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "auroc": _safe_auc(labels, scores, roc_auc_score),
        "aupr": _safe_auc(labels, scores, average_precision_score),
        "f1_max": f1_max(labels, scores),
        "f1": float(f1),
        "precision": float(precision),
        "recall": float(recall),
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

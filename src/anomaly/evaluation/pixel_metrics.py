"""Pixel-level metrics from maps streamed one image at a time, in bounded memory.

Pixel AUROC (exact, every pixel), its 95% bootstrap interval over images, AUPRO (area
under the per-region-overlap curve up to a false positive rate, normalised to [0, 1],
as in the MVTec AD benchmark) and the predicted masks' precision, recall, F1 and IoU.

Why streaming: holding every test map (and every good pixel, sorted) made evaluate's
peak memory grow with the test set (+67% for 4x the images). Maps are float16, so the
good and defect pixels of all images fit in two fixed 65,536-bin histograms (one bin
per float16 value: nothing is approximated); a second pass over the maps takes what
needs thresholds known only after the first (AUPRO's per-region overlaps at good-pixel
quantiles, per-image histograms for the bootstrap). Memory: one map, one mask, and a
few kilobytes per image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .value_counts import counts_table, float16_key_counts

# A callable that yields (map, boolean mask) per image, each time it is called: the
# metrics read the maps twice.
MapPairs = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]


@dataclass
class PixelMetrics:
    auroc: float | None
    auroc_ci: tuple[float, float] | None
    aupro: float | None
    decisions: dict[str, float | int | None]


def auroc_from_counts(
    good: tuple[np.ndarray, np.ndarray], bad: tuple[np.ndarray, np.ndarray]
) -> float | None:
    """P(defect pixel > good pixel) + half the ties, from value counts: the exact pixel
    AUROC over every pixel (what ``roc_auc_score`` gives on the full arrays)."""
    (g_values, g_counts), (b_values, b_counts) = good, bad
    if g_counts.sum() == 0 or b_counts.sum() == 0:
        return None
    cumulative = np.r_[0, np.cumsum(g_counts)]
    below = cumulative[np.searchsorted(g_values, b_values, side="left")]
    ties = cumulative[np.searchsorted(g_values, b_values, side="right")] - below
    wins = (b_counts * (below + ties / 2)).sum()
    return float(wins / (float(g_counts.sum()) * float(b_counts.sum())))


def quantiles_from_counts(values: np.ndarray, counts: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.quantile`` (linear interpolation) of the array these counts describe."""
    cumulative = np.cumsum(counts)
    position = np.asarray(q, dtype=np.float64) * (cumulative[-1] - 1)
    low = np.floor(position)
    at_low = values[np.searchsorted(cumulative, low, side="right")].astype(np.float64)
    high = np.minimum(low + 1, cumulative[-1] - 1)
    at_high = values[np.searchsorted(cumulative, high, side="right")].astype(np.float64)
    return at_low + (position - low) * (at_high - at_low)


def _decisions(tp: int, fp: int, fn: int) -> dict[str, float | int | None]:
    if tp + fn == 0:
        return {"f1": None, "iou": None, "precision": None, "recall": None}
    return {
        "f1": 2 * tp / (2 * tp + fp + fn),
        "iou": tp / (tp + fp + fn),
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn),
    }


def _bootstrap(
    good: np.ndarray, bad: np.ndarray, seed: int, resamples: int, level: float
) -> tuple[float, float] | None:
    """Interval of the binned AUROC over image resamples (pixels of one image are not
    independent): each resample sums the images' histograms."""
    if good.sum() == 0 or bad.sum() == 0:
        return None
    rng = np.random.default_rng([seed, 19])
    values = []
    for _ in range(resamples):
        pick = rng.integers(0, len(good), len(good))
        g, b = good[pick].sum(0).astype(float), bad[pick].sum(0).astype(float)
        if g.sum() == 0 or b.sum() == 0:
            continue
        below = np.cumsum(g) - g  # defect above good; the same bin counts half
        values.append(float(((below + g / 2) * b).sum() / (g.sum() * b.sum())))
    if not values:
        return None
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def _aupro(fpr: np.ndarray, pro: np.ndarray, max_fpr: float) -> float:
    order = np.argsort(fpr, kind="stable")
    fpr, pro = fpr[order], pro[order]
    keep = fpr <= max_fpr
    x = np.concatenate([[0.0], fpr[keep], [max_fpr]])
    y = np.concatenate(
        [[pro[keep][0] if keep.any() else 0.0], pro[keep], [np.interp(max_fpr, fpr, pro)]]
    )
    return float(np.trapezoid(y, x) / max_fpr)


def _count_pass(
    pairs: MapPairs, threshold: float | None
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """Pass 1: exact float16 value counts (by key) of good and of defect pixels, and the
    (TP, FP, FN) pixel counts of the predicted masks when a ``threshold`` is given."""
    good_keys = np.zeros(1 << 16, dtype=np.int64)
    bad_keys = np.zeros(1 << 16, dtype=np.int64)
    tp = fp = fn = 0
    for score_map, mask in pairs():
        good_keys += float16_key_counts(score_map[~mask])
        bad_keys += float16_key_counts(score_map[mask])
        if threshold is not None:
            predicted = score_map >= threshold
            tp += int((predicted & mask).sum())
            fp += int((predicted & ~mask).sum())
            fn += int((~predicted & mask).sum())
    return good_keys, bad_keys, (tp, fp, fn)


def pixel_metrics(
    pairs: MapPairs,
    seed: int = 0,
    max_fpr: float = 0.3,
    threshold: float | None = None,
    steps: int = 400,
    bins: int = 4096,
    resamples: int = 500,
    level: float = 0.95,
) -> PixelMetrics:
    """Every pixel metric of the maps ``pairs()`` yields, two passes over them.

    AUPRO: PRO at a threshold is the mean, over connected defect regions, of the
    fraction of each region's pixels above it; FPR is the fraction of good pixels above
    it. Thresholds are taken at good-pixel quantiles so the FPR axis is sampled evenly.
    The bootstrap bins pixels at shared quantiles (``bins``); binning moves the AUROC
    far less than the interval's width. ``threshold``: the predicted masks' cut.
    """
    good_keys, bad_keys, (tp, fp, fn) = _count_pass(pairs, threshold)
    good, bad = counts_table(good_keys), counts_table(bad_keys)
    decisions = _decisions(tp, fp, fn)
    if good[1].sum() == 0:
        return PixelMetrics(None, None, None, decisions)
    auroc = auroc_from_counts(good, bad)
    thresholds = quantiles_from_counts(*good, 1 - np.linspace(0, max_fpr, steps + 1))
    above = (
        good[1].sum()
        - np.r_[0, np.cumsum(good[1])][np.searchsorted(good[0], thresholds, side="right")]
    )
    fpr = above / good[1].sum()
    both = counts_table(good_keys + bad_keys)
    edges = np.unique(quantiles_from_counts(*both, np.linspace(0, 1, bins + 1)))

    pro_sum = np.zeros(len(thresholds))
    regions = 0
    good_hist, bad_hist = [], []
    for score_map, mask in pairs():
        values = score_map.astype(np.float64)
        good_hist.append(np.histogram(values[~mask], edges)[0].astype(np.int32))
        bad_hist.append(np.histogram(values[mask], edges)[0].astype(np.int32))
        if mask.any():
            labelled, count = ndimage.label(mask)
            for r, box in enumerate(ndimage.find_objects(labelled), start=1):
                inside = np.sort(values[box][labelled[box] == r])
                pro_sum += 1 - np.searchsorted(inside, thresholds, side="right") / inside.size
            regions += count
    aupro = _aupro(fpr, pro_sum / regions, max_fpr) if regions else None
    interval = None
    if len(edges) >= 2 and auroc is not None:
        interval = _bootstrap(np.stack(good_hist), np.stack(bad_hist), seed, resamples, level)
    return PixelMetrics(auroc, interval, aupro, decisions)


def _listed(maps: list[np.ndarray], masks: list[np.ndarray]) -> MapPairs:
    return lambda: zip(maps, masks, strict=True)


def aupro(maps: list[np.ndarray], masks: list[np.ndarray], max_fpr: float = 0.3) -> float | None:
    """AUPRO of maps held in memory (tests, notebooks); see :func:`pixel_metrics`."""
    return pixel_metrics(_listed(maps, masks), max_fpr=max_fpr).aupro


def pixel_auroc(maps: list[np.ndarray], masks: list[np.ndarray]) -> float | None:
    """Exact pixel AUROC over every pixel of every map."""
    return auroc_from_counts(*pixel_counts(maps, masks))


def pixel_auroc_ci(
    maps: list[np.ndarray], masks: list[np.ndarray], seed: int
) -> tuple[float, float] | None:
    """95% bootstrap interval of the pixel AUROC, resampling whole images."""
    return pixel_metrics(_listed(maps, masks), seed=seed).auroc_ci


def pixel_decisions(
    maps: list[np.ndarray], masks: list[np.ndarray], threshold: float
) -> dict[str, float | int | None]:
    """Pixel precision, recall, F1 and IoU of the predicted masks (map >= threshold),
    micro-averaged over every pixel; None where undefined (no defect pixels)."""
    return pixel_metrics(_listed(maps, masks), threshold=threshold).decisions


def pixel_counts(
    maps: list[np.ndarray], masks: list[np.ndarray]
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(values, counts) of good pixels and of defect pixels over every map, exact (the
    maps are float16, see :func:`anomaly.evaluation.value_counts.float16_counts`)."""
    good_keys, bad_keys, _ = _count_pass(_listed(maps, masks), None)
    return counts_table(good_keys), counts_table(bad_keys)

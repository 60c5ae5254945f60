"""Figures that help choose and explain: the threshold trade-off and the latent space.

Kept apart from ``plots.py`` (the standard evaluation figures) because these
two answer "why": where would another threshold method have put the line, and
does the model's code already separate defect tiles from good ones?
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .plots import _save, plt

METHOD_STYLES = {
    "percentile": ("tab:blue", "--"),
    "mean_std": ("tab:purple", "-."),
    "f1_optimal": ("tab:green", ":"),
    "manual": ("tab:brown", (0, (5, 1))),
}


def threshold_study_figure(
    rows: pd.DataFrame, scores: np.ndarray, threshold: dict, path: Path, dpi: int
) -> None:
    """Precision, recall and F1 on test images against the threshold (``rows``: the
    evaluate stage's ``threshold_study.json``, empty when test has one class), with every
    method's validation threshold marked (the active one bold) and the test-optimal F1
    shown as the ceiling no validation-only method can promise."""
    fig, ax = plt.subplots(figsize=(7, 4))
    if len(rows):
        ax.plot(rows["threshold"], rows["precision"], label="precision", c="tab:orange")
        ax.plot(rows["threshold"], rows["recall"], label="recall", c="tab:red")
        ax.plot(rows["threshold"], rows["f1"], label="F1", c="black", lw=2)
        best = rows.loc[rows["f1"].idxmax()]
        ax.plot(best["threshold"], best["f1"], "k*", ms=11, label=f"test F1-max {best['f1']:.3f}")
        # Defect scores are heavy-tailed: on a linear axis the thresholds, which sit at
        # the edge of the good scores, would be squeezed into a sliver at the left.
        marks = [abs(v) for v in (threshold.get("candidates") or {}).values() if v is not None]
        linthresh = max(marks) if marks and max(marks) > 0 else float(np.std(scores)) or 1.0
        if np.ptp(scores) > 10 * linthresh:
            ax.set_xscale("symlog", linthresh=linthresh)
    else:
        ax.text(0.5, 0.5, "test set has one class only", ha="center", transform=ax.transAxes)
    active = threshold.get("method")
    for method, value in (threshold.get("candidates") or {}).items():
        if value is None:
            continue
        colour, style = METHOD_STYLES.get(method, ("grey", "--"))
        chosen = method == active
        ax.axvline(
            value,
            c=colour,
            ls=style,
            lw=2.5 if chosen else 1.2,
            label=f"{method}{' (active)' if chosen else ''}: {value:.4g}",
        )
    ax.set(
        xlabel="image score threshold (symmetric log beyond the thresholds)"
        if ax.get_xscale() == "symlog"
        else "image score threshold",
        ylabel="test metric",
        ylim=(0, 1.05),
        title="Threshold study: thresholds are set on validation, measured on test",
    )
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, path, dpi)


def _tile_classes(tiles: pd.DataFrame, images: pd.DataFrame) -> np.ndarray:
    """'good' for good tiles, the image's defect type for defect tiles, '' for ambiguous."""
    defect_type = tiles["image_id"].map(images.set_index("image_id")["defect_type"]).astype(str)
    return np.where(
        tiles["label"].to_numpy() == 1,
        defect_type.to_numpy(),
        np.where(tiles["label"].to_numpy() == 0, "good", ""),
    )


def pick_points(classes: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """Row indices to draw: defect tiles first (they are rare), good tiles fill the rest."""
    rng = np.random.default_rng([seed, 11])
    defect = np.flatnonzero((classes != "good") & (classes != ""))
    good = np.flatnonzero(classes == "good")
    defect = rng.permutation(defect)[: limit // 2 if good.size > limit // 2 else limit]
    good = rng.permutation(good)[: max(limit - defect.size, 0)]
    return np.sort(np.concatenate([defect, good]))


def project(codes: np.ndarray, method: str, seed: int) -> np.ndarray:
    """2-D coordinates of latent codes by PCA or t-SNE (after PCA to 50 dimensions)."""
    from sklearn.decomposition import PCA

    codes = codes.astype(np.float64)
    codes = codes - codes.mean(axis=0)
    dims = min(codes.shape[0], codes.shape[1])
    if method == "pca":
        if dims < 2:
            return np.zeros((len(codes), 2))
        return PCA(n_components=2, random_state=seed).fit_transform(codes)
    from sklearn.manifold import TSNE

    if dims > 50:
        codes = PCA(n_components=50, random_state=seed).fit_transform(codes)
    perplexity = float(min(30, max(2, (len(codes) - 1) // 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        codes
    )


def latent_space_figure(
    codes: np.ndarray,
    tiles: pd.DataFrame,
    images: pd.DataFrame,
    method: str,
    limit: int,
    seed: int,
    path: Path,
    dpi: int,
) -> None:
    """Test tiles' latent codes in 2-D, good tiles grey and defect tiles by defect type."""
    classes = _tile_classes(tiles, images)
    rows = pick_points(classes, limit, seed)
    methods = ["pca", "tsne"] if method == "both" else [method]
    fig, axes = plt.subplots(1, len(methods), figsize=(5.5 * len(methods), 5), squeeze=False)
    if rows.size < 3:
        axes[0, 0].text(0.5, 0.5, "too few test tiles", ha="center")
        _save(fig, path, dpi)
        return
    kinds = sorted(set(classes[rows]) - {"good"})
    palette = plt.get_cmap("tab10")
    for ax, name in zip(axes[0], methods, strict=True):
        xy = project(codes[rows], name, seed)
        good = classes[rows] == "good"
        ax.scatter(*xy[good].T, s=6, c="lightgrey", label="good", rasterized=True)
        for i, kind in enumerate(kinds):
            sel = classes[rows] == kind
            ax.scatter(*xy[sel].T, s=10, color=palette(i % 10), label=kind, rasterized=True)
        ax.set(
            title=f"{'PCA' if name == 'pca' else 't-SNE'} of test tile codes ({rows.size} tiles)",
            xticks=[],
            yticks=[],
        )
    axes[0, -1].legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
    _save(fig, path, dpi)

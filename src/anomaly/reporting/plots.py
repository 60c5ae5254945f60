"""Matplotlib figures for the plot stage (PNG, headless)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import ndimage  # noqa: E402

from ..data.manifest import load_image_and_mask  # noqa: E402
from ..io import atomic_path  # noqa: E402


def _save(fig: plt.Figure, path: Path, dpi: int) -> None:
    png = _png_bytes(fig, dpi)
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)


def _png_bytes(fig: plt.Figure, dpi: int) -> bytes:
    """The figure as PNG bytes (what every figure here is saved as), then closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def _outline(ax: plt.Axes, mask: np.ndarray, outside: bool = False) -> None:
    """Draw the true defect's outline in red: inside its edge, or just around it so the
    defect itself stays visible."""
    if not mask.any():
        return
    grown = ndimage.binary_dilation(mask, iterations=3) if outside else mask
    shrunk = mask if outside else ndimage.binary_erosion(mask, iterations=2)
    overlay = np.zeros((*mask.shape, 4))
    overlay[grown & ~shrunk] = [1, 0, 0, 0.9]
    ax.imshow(overlay)


# Perceptual and readable on grey fabric; the outlines use colours the map never takes.
MAP_CMAP = "inferno"
TRUE_COLOUR = "#00ff66"  # true defect: green
PREDICTED_COLOUR = "#00c8ff"  # predicted mask: cyan, dashed


def map_panel(
    ax: plt.Axes,
    image: np.ndarray,
    score_map: np.ndarray | None,
    vmax: float,
    true_mask: np.ndarray | None = None,
    predicted_mask: np.ndarray | None = None,
):
    """An image with its anomaly map (transparent where normal), the true defect outlined
    in green and the predicted mask dashed in cyan; returns the colour mapping for a bar.

    Colours saturate at ``vmax`` (twice the image threshold in the gallery) and fade out
    below zero, the good-validation mean after normalisation, so weak hits stay visible
    next to strong ones and normal texture stays readable.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    norm = Normalize(0.0, max(float(vmax), 1e-6))
    # One uint8 RGB picture, the heat blended in here (alpha 0.75 x level) rather than a
    # float RGBA layer over the image: a fraction of the memory on large images.
    picture = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    if score_map is not None:
        blended = np.empty(picture.shape, dtype=np.uint8)
        cmap = plt.get_cmap(MAP_CMAP)
        for top in range(0, picture.shape[0], 256):  # row blocks: small float temporaries
            rows = slice(top, top + 256)
            level = np.clip(np.asarray(norm(score_map[rows].astype(np.float32)), np.float32), 0, 1)
            alpha = (0.75 * level)[..., None]
            heat = cmap(level, bytes=True)[..., :3]
            blended[rows] = np.round(heat * alpha + picture[rows] * (1 - alpha))
        picture = blended
    ax.imshow(picture)
    for mask, colour, style in (
        (true_mask, TRUE_COLOUR, "solid"),
        (predicted_mask, PREDICTED_COLOUR, "dashed"),
    ):
        if mask is not None and mask.any():
            ax.contour(
                mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.2, linestyles=style
            )
    ax.axis("off")
    return ScalarMappable(norm=norm, cmap=MAP_CMAP)


def _figure_width(image_width: int, dpi: int) -> float:
    """Inches so that the image is drawn at (about) its own pixel width, within reason."""
    return float(np.clip(image_width / dpi * 1.3, 6.0, 22.0))


# The overlay is at most 22 inches at 110 dpi (2420 px): a larger image is reduced
# before drawing, or a 36-megapixel frame's RGBA heat map alone would take 1.1 GB.
DISPLAY_SIDE = 1536


def display_size(
    image: np.ndarray, score_map: np.ndarray | None, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Image, map and mask reduced by one integer factor so the long side is at most
    ``DISPLAY_SIDE``: the image by striding, the map by block maximum and the mask by
    block "any", so a defect of a few pixels stays visible in the reduced overlay."""
    factor = -(-max(image.shape[:2]) // DISPLAY_SIDE)
    if factor <= 1:
        return image, score_map, mask

    def block(values: np.ndarray, reduce) -> np.ndarray:
        h, w = values.shape[0] // factor * factor, values.shape[1] // factor * factor
        tiles = values[:h, :w].reshape(h // factor, factor, w // factor, factor)
        return reduce(tiles, axis=(1, 3))

    shown = image[
        : image.shape[0] // factor * factor : factor, : image.shape[1] // factor * factor : factor
    ]
    return (
        shown,
        None if score_map is None else block(score_map, np.max),
        None if mask is None else block(mask, np.any),
    )


def overlay_figure(
    image: np.ndarray,
    result,
    name: str,
    path: Path,
    dpi: int = 110,
    mask_pixels: int | None = None,
) -> None:
    """predict's per-image figure (see :func:`overlay_png`), written atomically."""
    png = overlay_png(image, result, name, dpi, mask_pixels)
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)


def overlay_png(
    image: np.ndarray, result, name: str, dpi: int = 110, mask_pixels: int | None = None
) -> bytes:
    """The per-image figure of predict and serve as PNG bytes, drawn like the gallery: map,
    colour bar, predicted mask, score against the threshold in the title. ``mask_pixels``:
    the full-size mask's count when ``result`` was already reduced (:func:`display_size`)."""
    h, w = image.shape[:2]
    width = _figure_width(w, dpi)
    fig, ax = plt.subplots(
        figsize=(width, max(2.2, width * h / w * 0.87 + 0.6)), layout="constrained"
    )
    vmax = 2 * max(result.threshold, 1e-6)
    if mask_pixels is None and result.mask is not None:
        mask_pixels = int(result.mask.sum())
    shown, score_map, mask = display_size(image, result.anomaly_map, result.mask)
    mappable = map_panel(ax, shown, score_map, vmax, None, mask)
    verdict = "defect" if result.defect else "good"
    ax.set_title(
        f"{name}: {verdict}, score {result.score:.4g} vs threshold {result.threshold:.4g}"
        + ("" if mask is None else f"; predicted mask (cyan) {mask_pixels} px"),
        fontsize=10,
    )
    fig.colorbar(mappable, ax=ax, fraction=0.03, pad=0.01, label="anomaly score")
    return _png_bytes(fig, dpi)


def _title(metrics: dict) -> str:
    return f"{metrics.get('model')} on {metrics.get('dataset')}"


def roc_figure(images: pd.DataFrame, metrics: dict, path: Path, dpi: int) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if images["label"].nunique() == 2:
        from sklearn.metrics import roc_curve  # here: predict and serve draw no curves

        fpr, tpr, _ = roc_curve(images["label"], images["score"])
        ax.plot(fpr, tpr, lw=2, label=f"image AUROC {metrics.get('image.auroc', 0):.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(
        xlabel="false positive rate", ylabel="true positive rate", title=f"ROC: {_title(metrics)}"
    )
    ax.legend(loc="lower right")
    _save(fig, path, dpi)


def pr_figure(images: pd.DataFrame, metrics: dict, path: Path, dpi: int) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    if images["label"].nunique() == 2:
        from sklearn.metrics import precision_recall_curve

        precision, recall, _ = precision_recall_curve(images["label"], images["score"])
        ax.plot(recall, precision, lw=2, label=f"AUPR {metrics.get('image.aupr', 0):.3f}")
        ax.axhline(images["label"].mean(), ls="--", c="grey", lw=1, label="chance")
    ax.set(xlabel="recall", ylabel="precision", title=f"PR: {_title(metrics)}", ylim=(0, 1.02))
    ax.legend(loc="lower left")
    _save(fig, path, dpi)


def low_magnitude(scores: np.ndarray) -> float:
    """The size of an unremarkable score: the lower quartile of |score| (good images
    dominate it), floored so that scores near zero do not make it vanish."""
    magnitude = np.abs(np.asarray(scores, dtype=float))
    return max(float(np.percentile(magnitude, 25)), 1e-3 * float(magnitude.max()), 1e-12)


def spans_decades(scores: np.ndarray, decades: float = 1.5) -> bool:
    """Whether the largest scores are more than ``decades`` orders of magnitude above an
    unremarkable one: then a linear axis squeezes every good image, and the threshold,
    into the first bin (the default data: good rolls near 3, defects up to 500)."""
    magnitude = np.abs(np.asarray(scores, dtype=float))
    return float(magnitude.max()) / low_magnitude(scores) > 10**decades


def histogram_figure(images: pd.DataFrame, threshold: float, path: Path, dpi: int) -> None:
    scores = images["score"].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    log_axis = spans_decades(scores)
    if log_axis:
        # symmetric log: normalised scores can be negative; linear within one typical size
        linthresh = low_magnitude(scores)
        ax.set_xscale("symlog", linthresh=linthresh)
        transform = lambda v: np.sign(v) * np.log1p(np.abs(v) / linthresh)  # noqa: E731
        back = lambda t: np.sign(t) * linthresh * np.expm1(np.abs(t))  # noqa: E731
        bins = back(np.linspace(transform(scores.min()), transform(scores.max()), 31))
    else:
        bins = np.histogram_bin_edges(scores, bins=30)
    ax.hist(images.loc[images["label"] == 0, "score"], bins=bins, alpha=0.6, label="good")
    ax.hist(images.loc[images["label"] == 1, "score"], bins=bins, alpha=0.6, label="defect")
    ax.axvline(threshold, c="k", ls="--", label=f"threshold {threshold:.4g}")
    ax.set(
        xlabel="image anomaly score" + (" (symmetric log axis)" if log_axis else ""),
        ylabel="test images",
        title="Score distribution",
    )
    ax.legend()
    _save(fig, path, dpi)


def confusion_figure(metrics: dict, path: Path, dpi: int) -> None:
    counts = np.array(
        [[metrics["image.tn"], metrics["image.fp"]], [metrics["image.fn"], metrics["image.tp"]]]
    )
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(counts, cmap="Blues")
    for (i, j), value in np.ndenumerate(counts):
        ax.text(
            j,
            i,
            str(value),
            ha="center",
            va="center",
            color="white" if value > counts.max() / 2 else "black",
            fontsize=14,
        )
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["good", "defect"],
        yticklabels=["good", "defect"],
        xlabel="predicted",
        ylabel="actual",
        title="Confusion matrix (images)",
    )
    _save(fig, path, dpi)


def _read_tsv(path: Path) -> tuple[list[float], list[float]]:
    steps, values = [], []
    with path.open() as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        for row in reader:
            value_key = [k for k in row if k not in ("step", "timestamp")][0]
            steps.append(float(row["step"]))
            values.append(float(row[value_key]))
    return steps, values


def training_figure(log_dir: Path, path: Path, dpi: int) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    # absolute values here; the *_relative curves are for comparing models in `dvc plots`
    found = sorted(
        t
        for t in (Path(log_dir) / "plots" / "metrics").rglob("*.tsv")
        if not t.stem.endswith("_relative")
    )
    for tsv in found:
        steps, values = _read_tsv(tsv)
        ax.plot(
            np.array(steps) + 1,
            values,
            marker="o",
            ms=3,
            label=str(tsv.relative_to(Path(log_dir) / "plots" / "metrics").with_suffix("")),
        )
    if any("loss" in str(t) for t in found):
        ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="loss", title="Training curves")
    if found:
        ax.legend()
    _save(fig, path, dpi)


def _pick_gallery(
    images: pd.DataFrame, threshold: float, per_group: int
) -> list[tuple[str, pd.Series]]:
    defects = images[images["label"] == 1].sort_values("score")
    goods = images[images["label"] == 0].sort_values("score", ascending=False)
    picks = [
        ("missed defect" if r.score < threshold else "weakest hit", r)
        for _, r in defects.head(per_group).iterrows()
    ]
    picks += [("best hit", r) for _, r in defects.tail(per_group)[::-1].iterrows()]
    picks += [
        ("false alarm" if r.score >= threshold else "highest good", r)
        for _, r in goods.head(per_group).iterrows()
    ]
    return picks


def gallery_figure(
    images: pd.DataFrame,
    manifest: pd.DataFrame,
    maps_file: Path,
    threshold: float,
    per_group: int,
    path: Path,
    dpi: int,
    pixel_threshold: float | None = None,
) -> None:
    """Test images with their anomaly map, the true defect outlined in green, the
    predicted mask (map >= the pixel threshold) dashed in cyan, score and threshold in
    each title, one colour bar; drawn at about the images' own width."""
    picks = _pick_gallery(images, threshold, per_group)
    if not picks:
        return
    vmax = max(2 * float(threshold), 1e-6)
    with np.load(maps_file) as stored:
        first = manifest.loc[manifest["image_id"] == picks[0][1]["image_id"]].iloc[0]
        image, _ = load_image_and_mask(manifest, first)
        h, w = image.shape[:2]
        width = _figure_width(w, dpi)
        panel = max(1.6, width * h / w * 0.9) + 0.45
        fig, axes = plt.subplots(
            len(picks),
            1,
            figsize=(width, panel * len(picks)),
            squeeze=False,
            layout="constrained",
        )
        mappable = None
        for ax, (kind, row) in zip(axes[:, 0], picks, strict=True):
            info = manifest.loc[manifest["image_id"] == row["image_id"]].iloc[0]
            image, mask = load_image_and_mask(manifest, info)
            key = f"img_{int(row['image_id'])}"
            score_map = stored[key].astype(np.float32) if key in stored else None
            predicted = (
                score_map >= pixel_threshold
                if score_map is not None and pixel_threshold is not None
                else None
            )
            mappable = map_panel(ax, image, score_map, vmax, mask, predicted)
            ax.set_title(
                f"{kind}: {Path(str(info['image_path'])).name} ({row['defect_type']}), "
                f"score {row['score']:.4g} vs threshold {threshold:.4g}",
                fontsize=10,
            )
        legend = "true defect: green; predicted mask: dashed cyan" + (
            f" (pixel threshold {pixel_threshold:.3g})" if pixel_threshold is not None else ""
        )
        fig.suptitle(legend, fontsize=10)
        fig.colorbar(
            mappable,
            ax=axes[:, 0].tolist(),
            shrink=min(1.0, 3.0 / len(picks)),
            aspect=30,
            label="anomaly score (normalised)",
        )
    _save(fig, path, dpi)


def dataset_examples_figure(
    manifest: pd.DataFrame, path: Path, per_type: int = 1, dpi: int = 110
) -> None:
    """Good rolls and one roll per defect type, mask outlined; for the README."""
    rows = [r for _, r in manifest[manifest["label"] == 0].groupby("group").head(1).iterrows()]
    rows += [
        r
        for _, r in manifest[manifest["label"] == 1]
        .groupby("defect_type")
        .head(per_type)
        .iterrows()
    ]
    first, _ = load_image_and_mask(manifest, rows[0])
    h, w = first.shape[:2]
    width = _figure_width(w, dpi)
    panel = max(1.6, width * h / w) + 0.4
    fig, axes = plt.subplots(len(rows), 1, figsize=(width, panel * len(rows)), squeeze=False)
    for ax, row in zip(axes[:, 0], rows, strict=True):
        image, mask = load_image_and_mask(manifest, row)
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        _outline(ax, mask, outside=True)
        ax.set_title(
            f"{Path(str(row['image_path'])).name}: {row['defect_type']} (group {row['group']})",
            fontsize=11,
        )
        ax.axis("off")
    _save(fig, path, dpi)


def feature_error_figure(errors: pd.DataFrame, path: Path, dpi: int) -> None:
    """Mean squared reconstruction error per feature, normal vs anomalous test rows."""
    features = [c for c in errors.columns if c not in ("image_id", "label")]
    good = errors.loc[errors["label"] == 0, features].mean()
    bad = errors.loc[errors["label"] == 1, features].mean()
    x = np.arange(len(features))
    fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(features)), 3.5))
    ax.bar(x - 0.2, good, width=0.4, label="normal")
    ax.bar(x + 0.2, bad, width=0.4, label="anomalous")
    ax.set_xticks(x, features, rotation=45 if len(features) > 8 else 0, ha="right")
    ax.set(ylabel="mean squared error (standardised)", title="Reconstruction error per feature")
    ax.legend()
    _save(fig, path, dpi)

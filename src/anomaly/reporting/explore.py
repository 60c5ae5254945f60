"""The dataset overview drawn before any training (the ``explore`` stage).

What a practitioner checks first: what good and defective samples look like
(with their masks), how large defects are (a 30-pixel nep and a whole-width
crease are different problems), whether defect pixels differ in plain
intensity from good ones (if so, a threshold on brightness would already
work), and how many samples of each class every split holds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..data.manifest import load_image_and_mask
from ..params import ExploreConfig
from .plots import _outline, _save, plt


def _sample_rows(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return frame.sample(n=min(n, len(frame)), random_state=seed) if len(frame) else frame


def examples_figure(
    manifest: pd.DataFrame, cfg: ExploreConfig, mode: str, seed: int, path: Path, dpi: int
) -> None:
    """A grid of examples per class (good, then each defect type), masks outlined in red.

    Wide images (fabric rolls) get one row per class; square ones (MVTec, digits)
    one column per class, so ten classes do not make a page-long strip.
    """
    classes = ["good", *sorted(manifest.loc[manifest["label"] == 1, "defect_type"].unique())]
    per = cfg.examples_per_type
    picked = []
    for name in classes:
        part = manifest[(manifest["label"] == 0)] if name == "good" else manifest
        if name != "good":
            part = part[(part["label"] == 1) & (part["defect_type"] == name)]
        picked.append((name, _sample_rows(part, per, seed)))
    first, _ = load_image_and_mask(manifest, manifest.iloc[0], mode)
    aspect = first.shape[1] / first.shape[0]
    by_row = aspect > 1.5
    width = min(2.0 * aspect, 7.0) if by_row else 1.8
    cell_height = width / aspect + (0.4 if by_row else 0.7)  # image plus its title
    n_rows, n_cols = (len(classes), per) if by_row else (per, len(classes))
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(width * n_cols, cell_height * n_rows), squeeze=False
    )
    for k, (name, rows) in enumerate(picked):
        for c in range(per):
            ax = axes[k, c] if by_row else axes[c, k]
            ax.axis("off")
            if c >= len(rows):
                continue
            row = rows.iloc[c]
            image, mask = load_image_and_mask(manifest, row, mode)
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
            _outline(ax, mask, outside=True)
            title = f"{name} ({row['group']}): {Path(str(row['image_path'])).name}"
            ax.set_title(
                title if by_row else f"{name}\n{Path(str(row['image_path'])).name}", fontsize=7
            )
    fig.suptitle("Examples per class (true defect outlined in red)", y=1.0)
    fig.tight_layout()
    _save(fig, path, dpi)


def defect_statistics(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per defect image with a mask: its defect type, group, defect pixels,
    share of the image, and number of separate defect regions."""
    from scipy import ndimage

    rows = []
    for _, row in manifest[(manifest["label"] == 1) & (manifest["mask_path"] != "")].iterrows():
        _, mask = load_image_and_mask(manifest, row)
        regions = int(ndimage.label(mask)[1])
        rows.append(
            {
                "image_id": int(row["image_id"]),
                "defect_type": str(row["defect_type"]),
                "group": str(row["group"]),
                "defect_pixels": int(mask.sum()),
                "defect_fraction": float(mask.mean()),
                "regions": regions,
            }
        )
    return pd.DataFrame(
        rows,
        columns=["image_id", "defect_type", "group", "defect_pixels", "defect_fraction", "regions"],
    )


def defect_size_figure(stats: pd.DataFrame, path: Path, dpi: int) -> None:
    """Defect area per type on a log axis, one dot per image, plus the median."""
    fig, ax = plt.subplots(figsize=(7, 3.8))
    if stats.empty:
        ax.text(0.5, 0.5, "no defect masks in this dataset", ha="center", transform=ax.transAxes)
        ax.axis("off")
        _save(fig, path, dpi)
        return
    kinds = sorted(stats["defect_type"].unique())
    rng = np.random.default_rng(0)
    for i, kind in enumerate(kinds):
        sizes = stats.loc[stats["defect_type"] == kind, "defect_pixels"].clip(lower=1)
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(sizes)), sizes, s=14, alpha=0.7)
        ax.hlines(sizes.median(), i - 0.3, i + 0.3, colors="black")
    ax.set_yscale("log")
    ax.set_xticks(range(len(kinds)), kinds, rotation=30, ha="right")
    ax.set(ylabel="defect pixels per image (log)", title="Defect size by type (bar: median)")
    _save(fig, path, dpi)


def intensity_samples(
    manifest: pd.DataFrame, n: int, seed: int, max_images: int = 200
) -> dict[str, np.ndarray]:
    """Grey levels sampled from good images, from defect pixels (inside masks) and from
    the rest of defect images, ``n`` per class at most."""
    rng = np.random.default_rng([seed, 17])
    pools: dict[str, list[np.ndarray]] = {
        "good": [],
        "defect pixels": [],
        "defect images, outside mask": [],
    }
    for label in (0, 1):
        part = _sample_rows(manifest[manifest["label"] == label], max_images, seed)
        for _, row in part.iterrows():
            image, mask = load_image_and_mask(manifest, row)
            if label == 0:
                pools["good"].append(image.ravel())
            elif mask.any():
                pools["defect pixels"].append(image[mask])
                pools["defect images, outside mask"].append(image[~mask])
            else:  # no mask (e.g. one-class MNIST): the whole image is the anomaly
                pools["defect pixels"].append(image.ravel())
    out = {}
    for name, parts in pools.items():
        if parts:
            values = np.concatenate(parts)
            out[name] = rng.choice(values, min(n, values.size), replace=False)
    return out


def intensity_figure(samples: dict[str, np.ndarray], path: Path, dpi: int) -> None:
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bins = np.arange(0, 257, 4)
    for name, values in samples.items():
        ax.hist(values, bins=bins, density=True, histtype="step", lw=1.8, label=name)
    ax.set(xlabel="grey level", ylabel="density", title="Pixel intensity: good vs defect")
    ax.legend(fontsize=8)
    _save(fig, path, dpi)


def class_balance(splits: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Images and tiles per split and class (ambiguous tiles counted apart)."""
    rows = []
    for name, tiles in splits.items():
        images = tiles.groupby("image_id")["image_label"].first()
        rows.append(
            {
                "split": name,
                "good_images": int((images == 0).sum()),
                "defect_images": int((images == 1).sum()),
                "good_tiles": int((tiles["label"] == 0).sum()),
                "defect_tiles": int((tiles["label"] == 1).sum()),
                "ambiguous_tiles": int((tiles["label"] == -1).sum()),
            }
        )
    return pd.DataFrame(rows)


def class_balance_figure(balance: pd.DataFrame, path: Path, dpi: int) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    x = np.arange(len(balance))
    for ax, unit in zip(axes, ("images", "tiles"), strict=True):
        good = balance[f"good_{unit}"].to_numpy()
        defect = balance[f"defect_{unit}"].to_numpy()
        ax.bar(x, good, label="good", color="tab:blue")
        ax.bar(x, defect, bottom=good, label="defect", color="tab:red")
        for i, (g, d) in enumerate(zip(good, defect, strict=True)):
            ax.text(i, g + d, f"{g}/{d}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, balance["split"])
        ax.set(ylabel=unit, title=f"{unit.capitalize()} per split (good/defect)")
    axes[0].legend()
    fig.tight_layout()
    _save(fig, path, dpi)


def feature_histogram_figure(
    table: pd.DataFrame, features: list[str], path: Path, dpi: int
) -> None:
    """Tabular data: each feature's distribution, normal vs anomalous rows."""
    shown = features[:12]
    cols = min(4, len(shown))
    nrows = int(np.ceil(len(shown) / cols))
    fig, axes = plt.subplots(nrows, cols, figsize=(3 * cols, 2.4 * nrows), squeeze=False)
    for ax, name in zip(axes.ravel(), shown, strict=False):
        values = table[name].to_numpy(dtype=float)
        bins = np.histogram_bin_edges(values[np.isfinite(values)], bins=30)
        for label, text in ((0, "normal"), (1, "anomalous")):
            ax.hist(
                values[table["label"].to_numpy() == label],
                bins=bins,
                density=True,
                histtype="step",
                label=text,
            )
        ax.set_title(name, fontsize=8)
    for ax in axes.ravel()[len(shown) :]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Feature distributions, normal vs anomalous rows")
    _save(fig, path, dpi)


def dataset_summary(dataset: str, manifest: pd.DataFrame, balance: pd.DataFrame) -> dict:
    """The numbers behind the explore figures: image counts, defect types, class balance."""
    defects = manifest.loc[manifest["label"] == 1, "defect_type"].value_counts().sort_index()
    return {
        "dataset": dataset,
        "images": int(len(manifest)),
        "good_images": int((manifest["label"] == 0).sum()),
        "defect_images": int((manifest["label"] == 1).sum()),
        "defect_images_by_type": {str(k): int(v) for k, v in defects.items()},
        "class_balance": balance.to_dict(orient="records"),
    }


def defect_pixel_summary(stats: pd.DataFrame) -> dict:
    """Median, min and max defect area per defect type."""
    return {
        str(kind): {
            "median": float(part["defect_pixels"].median()),
            "min": int(part["defect_pixels"].min()),
            "max": int(part["defect_pixels"].max()),
        }
        for kind, part in stats.groupby("defect_type", sort=True)
    }

"""Good-only training split, grouped by source image.

Whole images go to one split, never tiles of one image to two, because
neighbouring tiles of a roll are near-duplicates and would leak. Good images
are shuffled (seeded) into train / val / test by the configured fractions;
defect images go to test, except a ``labeled_val_fraction`` share kept in
validation for threshold tuning (``threshold.method: f1_optimal``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DataError
from ..params import SplitConfig

SPLITS = ("train", "val", "test")


def assign_images(images: pd.DataFrame, cfg: SplitConfig, seed: int) -> pd.Series:
    """The split of each image (index aligned with ``images``)."""
    rng = np.random.default_rng([seed, 7])
    split = pd.Series("test", index=images.index, dtype=object)
    official = images.get("source_split", pd.Series("", index=images.index)).fillna("")
    if official.eq("test").any():
        # An official split (MVTec, MNIST): its test images stay in test; validation comes
        # out of the official training images.
        cfg = SplitConfig(cfg.val_fraction, 0.0, cfg.labeled_val_fraction)
        images = images[official.ne("test") | images["label"].eq(1)]
    good = images.index[images["label"] == 0].to_numpy()
    if len(good) == 0:
        raise DataError(
            "split: the dataset has no good images, so the good-only training set would be empty"
        )
    # Stratify by group (fabric / category) so every group is seen in training.
    for _, members in images.loc[good].groupby("group", sort=True):
        ids = rng.permutation(members.index.to_numpy())
        n = len(ids)
        n_val = int(round(n * cfg.val_fraction))
        n_test = int(round(n * cfg.test_good_fraction))
        if n >= 3:
            n_val = max(n_val, 1)
            n_test = max(n_test, 1) if cfg.test_good_fraction > 0 else 0
        while n - n_val - n_test < 1 and (n_test or n_val):
            if n_test:
                n_test -= 1
            else:
                n_val -= 1
        n_train = n - n_val - n_test
        split[ids[:n_train]] = "train"
        split[ids[n_train : n_train + n_val]] = "val"
        split[ids[n_train + n_val :]] = "test"
    defect = images.index[images["label"] == 1].to_numpy()
    if cfg.labeled_val_fraction > 0 and len(defect):
        ids = rng.permutation(defect)
        n_val = max(1, int(round(len(ids) * cfg.labeled_val_fraction)))
        split[ids[:n_val]] = "val"
    return split


def make_splits(
    patches: pd.DataFrame, images: pd.DataFrame, cfg: SplitConfig, seed: int
) -> tuple[dict[str, pd.DataFrame], dict]:
    """Tile tables per split plus a summary of counts per split and defect type."""
    image_split = assign_images(images, cfg, seed)
    split_of = dict(zip(images["image_id"], image_split, strict=True))
    if "blank" in patches:
        patches = patches[patches["blank"] == 0]  # flat padding: neither trained on nor scored
    tiles = patches.assign(split=patches["image_id"].map(split_of))
    out: dict[str, pd.DataFrame] = {}
    for name in SPLITS:
        part = tiles[tiles["split"] == name].drop(columns="split")
        if name in ("train",):
            part = part[part["label"] == 0]
        out[name] = part.reset_index(drop=True)
    if out["train"].empty:
        raise DataError(
            "split: the good-only training set is empty (no defect-free tiles in the "
            "training images); add good images or lower split.val_fraction"
        )
    if (out["val"]["label"] == 0).sum() == 0:
        raise DataError(
            "split: the validation set has no good tiles; add good images or raise "
            "split.val_fraction"
        )
    summary: dict = {"seed": seed}
    for name, part in out.items():
        ids = part["image_id"].unique()
        imgs = images[images["image_id"].isin(ids)]
        summary[name] = {
            "images": int(len(imgs)),
            "good_images": int((imgs["label"] == 0).sum()),
            "defect_images": int((imgs["label"] == 1).sum()),
            "tiles": int(len(part)),
            "good_tiles": int((part["label"] == 0).sum()),
            "defect_tiles": int((part["label"] == 1).sum()),
            "ambiguous_tiles": int((part["label"] == -1).sum()),
            "defect_images_by_type": {
                str(k): int(v)
                for k, v in imgs[imgs["label"] == 1]["defect_type"]
                .value_counts()
                .sort_index()
                .items()
            },
        }
    return out, summary

"""Stage score: model + val/test tiles -> ``scores/<model>/`` (tile and image scores, maps)."""

from __future__ import annotations

import logging
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths
from ..config_schema import to_dict
from ..data.store import open_store
from ..errors import DataError
from ..evaluation.synthetic import defect_geometry, kinds_for, make_variants, plan_variants
from ..evaluation.value_counts import float16_counts, merge_counts
from ..io import atomic_dir, atomic_path, read_csv, write_csv, write_json
from ..models.registry import check_model_params, load_checkpoint
from ..models.training import resolve_device, seed_everything
from ..params import Params
from ..scoring import (
    aggregate_images,
    fit_normalisation,
    normalise,
    resolve_score,
    score_tiles,
    stitch,
    to_float16,
)
from .common import split_tiles

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    """Score validation and test tiles, normalise per group, aggregate per image."""
    check_model_params(params, "active")
    seed_everything(params.seed)
    device = resolve_device(params.train.device)
    model, payload = load_checkpoint(paths.model_dir(params.model) / "model.pt", device)
    stale = model.stale_member_code(payload.get("member_code"))
    if stale:
        raise DataError(
            f"{paths.model_dir(params.model) / 'model.pt'}: the code of member "
            f"{', '.join(stale)} changed since it was trained, and DVC does not track a "
            "member's module; retrain it: dvc repro -f -s train"
        )
    store = open_store(paths.PATCHES, paths.SPLITS)
    images = read_csv(
        paths.PATCHES / "images.csv", required=["image_id", "label", "height", "width"]
    )
    score_cfg, origin = resolve_score(params.score, store.meta.get("score_defaults"))
    if store.is_tabular:
        # Table rows have no spatial neighbourhood: per-feature squared error, averaged.
        score_cfg = replace(score_cfg, map="mse", smooth_sigma=0.0, patch_reduce="mean")
        origin.update(map="tables", smooth_sigma="tables", patch_reduce="tables")
    own = model.own_tile_score()
    if own and origin.get("patch_reduce") == "params":
        log.warning(
            "score.patch_reduce=%s does not apply to %s: its tile score is its own (%s)",
            score_cfg.patch_reduce,
            params.model,
            own,
        )
    with atomic_dir(paths.score_dir(params.model)) as tmp:
        # The settings that ran (auto resolved): export bundles them, evaluate reports them.
        settings = {**to_dict(score_cfg), "origin": origin, "tile_score": own}
        write_json(tmp / "score_settings.json", settings)
        log.info(
            "score %s: patch_reduce %s, smooth_sigma %s (%s)",
            params.model,
            score_cfg.patch_reduce,
            score_cfg.smooth_sigma,
            ", ".join(f"{k}: {v}" for k, v in origin.items()),
        )
        norm = None
        for split in ("val", "test"):
            tiles = split_tiles(split)
            tiles["group"] = tiles["group"].astype(str)
            ids = tiles["patch_id"].to_numpy()
            stitcher = None
            if split == "test" and not store.is_tabular:
                # Normalisation was fitted on validation: test maps are normalised,
                # stitched and written image by image while the tiles are scored.
                _, shift, scale = normalise(np.zeros(len(tiles)), tiles["group"], norm)
                stitcher = MapStitcher(tmp / "test_maps.npz", tiles, images, shift, scale)
            scores, maps, codes = score_tiles(
                model,
                store,
                ids,
                score_cfg,
                device,
                True,
                keep_codes=split == "test",
                desc=f"score {params.model} {split}",
                map_sink=stitcher.add if stitcher else None,
            )
            if stitcher is not None:
                stitcher.close()
            if not np.isfinite(scores).all():
                raise DataError(
                    f"{paths.model_dir(params.model)}: {int((~np.isfinite(scores)).sum())} "
                    f"{split} tile scores are NaN or infinite; the model diverged (retrain "
                    "with a lower lr, or check the input data)"
                )
            if codes is not None:
                with atomic_path(tmp / "test_latents.npy") as target, open(target, "wb") as fh:
                    np.save(fh, codes)
            tiles = tiles.assign(raw_score=scores)
            if norm is None:  # fitted on validation, the first split
                norm = fit_normalisation(
                    params.score.normalize,
                    tiles.assign(score=scores),
                    sorted(images["group"].astype(str).unique()),
                )
                write_json(tmp / "normalization.json", norm)
            tiles["score"], shift, scale = normalise(scores, tiles["group"], norm)
            write_csv(tmp / f"{split}_patches.csv", tiles)
            if split == "val":  # always written (empty without maps): a dep of threshold
                has_maps = maps is not None and not store.is_tabular
                _write_val_pixels(
                    tmp / "val_pixels.npz",
                    maps if has_maps else None,
                    shift,
                    scale,
                    store,
                    ids,
                    tiles,
                )
            per_image = aggregate_images(tiles, params.score.aggregate, params.score.aggregate_k)
            per_image = per_image.merge(
                images[["image_id", "label", "defect_type", "group", "image_path"]],
                on="image_id",
                how="left",
            )
            write_csv(tmp / f"{split}_images.csv", per_image)
            if split == "val":
                _write_synthetic(
                    tmp / "val_synthetic.npz",
                    model,
                    store,
                    tiles,
                    images,
                    per_image,
                    maps,
                    (shift, scale),
                    score_cfg,
                    params,
                    device,
                )
            log.info(
                "score %s: %d %s tiles of %d images (%d good, %d defective)",
                params.model,
                len(tiles),
                split,
                len(per_image),
                int((per_image["label"] == 0).sum()),
                int((per_image["label"] == 1).sum()),
            )
            if split == "test" and maps is not None and store.is_tabular:
                errors = pd.DataFrame(
                    maps.reshape(len(maps), -1).astype(np.float32), columns=store.meta["features"]
                )
                errors.insert(0, "label", tiles["label"].to_numpy())
                errors.insert(0, "image_id", tiles["image_id"].to_numpy())
                write_csv(tmp / "test_feature_errors.csv", errors)


class MapStitcher:
    """Receives the test tiles' maps batch by batch (in the tiles' order), and writes each
    image's normalised, stitched full-resolution map to ``test_maps.npz`` once its last
    tile arrived, in ascending image order: the same file ``np.savez`` wrote, without
    holding every map (memory stays flat as the test set grows)."""

    def __init__(
        self,
        target: Path,
        tiles: pd.DataFrame,
        images: pd.DataFrame,
        shift: np.ndarray,
        scale: np.ndarray,
    ) -> None:
        self.tiles = tiles.reset_index(drop=True)
        self.images = images.set_index("image_id", drop=False)
        self.shift, self.scale = shift, scale
        self.remaining = self.tiles.groupby("image_id").size().to_dict()
        self.order = sorted(self.remaining)  # npz members in ascending image id
        self.next_index = 0
        self.done: dict[int, np.ndarray] = {}
        self.pending: dict[int, list[int]] = {}
        self.buffer: dict[int, np.ndarray] = {}
        self.seen = 0
        # Inside the stage's atomic output folder: a failed run leaves nothing behind.
        self.zip = zipfile.ZipFile(
            target, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True
        )

    def add(self, maps: np.ndarray) -> None:
        for offset, tile_map in enumerate(maps):
            row = self.seen + offset
            image_id = int(self.tiles.at[row, "image_id"])
            self.buffer[row] = tile_map
            self.pending.setdefault(image_id, []).append(row)
            self.remaining[image_id] -= 1
            if self.remaining[image_id] == 0:
                self.done[image_id] = self._stitch(image_id, self.pending.pop(image_id))
        self.seen += len(maps)
        while self.next_index < len(self.order) and self.order[self.next_index] in self.done:
            image_id = self.order[self.next_index]
            self._write(image_id, self.done.pop(image_id))
            self.next_index += 1

    def _stitch(self, image_id: int, rows: list[int]) -> np.ndarray:
        tile_maps = np.stack([self.buffer.pop(r) for r in rows]).astype(np.float32)
        tile_maps = (tile_maps - self.shift[rows, None, None]) / self.scale[rows, None, None]
        info = self.images.loc[image_id]
        stitched = stitch(tile_maps, self.tiles.loc[rows], int(info["height"]), int(info["width"]))
        return to_float16(stitched)

    def _write(self, image_id: int, full_map: np.ndarray) -> None:
        # What np.savez does per member (a fixed 1980 timestamp: byte-stable output).
        with self.zip.open(f"img_{image_id}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array(member, full_map, allow_pickle=False)

    def close(self) -> None:
        if self.next_index != len(self.order):
            raise DataError(
                f"score: maps of {len(self.order) - self.next_index} test images never "
                "completed (tiles missing from the scores)"
            )
        self.zip.close()


def _write_val_pixels(
    target, maps: np.ndarray | None, shift: np.ndarray, scale: np.ndarray, store, ids, tiles
) -> None:
    """Counts of normalised validation map values, over good tiles' pixels and over the
    defect pixels of defect tiles (when validation has labelled defects): what the
    threshold stage sets the pixel threshold from, exactly and in bounded memory."""
    good, defect = [], []
    labels = tiles["label"].to_numpy()
    for start in range(0, 0 if maps is None else len(maps), 512):
        rows = slice(start, start + 512)
        normalised = (maps[rows].astype(np.float32) - shift[rows, None, None]) / scale[
            rows, None, None
        ]
        normalised = to_float16(normalised)
        lab = labels[rows]
        if (lab == 0).any():
            good.append(float16_counts(normalised[lab == 0]))
        if (lab == 1).any():
            masks = np.asarray(store.masks[ids[rows][lab == 1]]).astype(bool)
            if masks.shape == normalised[lab == 1].shape and masks.any():
                defect.append(float16_counts(normalised[lab == 1][masks]))
    good_values, good_counts = merge_counts(good)
    defect_values, defect_counts = merge_counts(defect)
    with atomic_path(target) as path, open(path, "wb") as handle:
        np.savez(
            handle,
            good_values=good_values,
            good_counts=good_counts,
            defect_values=defect_values,
            defect_counts=defect_counts,
        )


def _write_synthetic(
    target: Path,
    model,
    store,
    tiles: pd.DataFrame,
    images: pd.DataFrame,
    per_image: pd.DataFrame,
    maps: np.ndarray | None,
    affine: tuple[np.ndarray, np.ndarray],
    score_cfg,
    params: Params,
    device,
) -> None:
    """``val_synthetic.npz``: the label-free quality figure's raw material (see
    ``evaluation/synthetic.py``). Good validation images keep their image scores
    (``per_image``, the split's aggregated scores); each
    gets ``score.synthetic_per_image`` copies with one tile defective, scored by the
    model and aggregated with the image's other tiles exactly as a test image would be.
    Maps and masks of the defective tiles and of their clean originals feed the pixel
    figure. ``images`` (``images.csv``) gives each image's size, from which the defects
    are sized in image pixels. Written even when empty, so the file is always a valid
    dep."""
    shift, scale = affine
    labelled = set(tiles.loc[tiles["label"] != 0, "image_id"])  # labelled validation defects
    rows = tiles.reset_index(drop=True)
    usable = rows[~rows["image_id"].isin(labelled)]
    kinds = kinds_for(store.channels, store.is_tabular)
    plan = plan_variants(usable, params.score.synthetic_per_image, kinds, params.seed)
    if plan.empty:
        log.warning(
            "score: no good validation images, so no label-free figure (val_synthetic.*); "
            "raise split.val_fraction"
        )
    position = {int(pid): i for i, pid in enumerate(rows["patch_id"])}
    at = plan["patch_id"].map(position).to_numpy(dtype=np.int64)
    clean = store.read(plan["patch_id"].to_numpy()).numpy() if len(plan) else None
    donors = store.read(plan["donor_patch_id"].to_numpy()).numpy() if len(plan) else None
    defect_scores, defect_maps = [], []
    masks = None
    if len(plan):
        geometry = None
        if not store.is_tabular:
            # defects sized and drawn in image pixels, not tile pixels (evaluation/synthetic.py)
            boxes = rows.iloc[at]
            sizes = images.set_index("image_id").loc[boxes["image_id"], ["height", "width"]]
            geometry = defect_geometry(
                boxes[["w", "h"]].to_numpy(),
                sizes.to_numpy(),
                store.meta["patch"].get("image_size"),
                store.tile_size,
                params.score.synthetic_resolution,
            )
        painted, masks = make_variants(plan, clean, donors, params.seed, store.is_tabular, geometry)
        import torch

        with torch.no_grad():
            for start in range(0, len(painted), score_cfg.batch_size):
                batch = torch.from_numpy(painted[start : start + score_cfg.batch_size])
                s, m = model.score(batch.to(device), score_cfg)
                defect_scores.append(s.float().cpu().numpy())
                if m is not None and masks is not None:
                    defect_maps.append(m.float().cpu().numpy())
    raw = np.concatenate(defect_scores) if defect_scores else np.zeros(0)
    if not np.isfinite(raw).all():
        raise DataError(
            f"{paths.model_dir(params.model)}: scores of simulated defects are NaN or "
            "infinite; the model diverged (retrain with a lower lr, or check the input data)"
        )
    normalised = (raw - shift[at]) / scale[at]
    # Each variant's image: its other tiles as scored, the painted tile replaced.
    variant_tiles = []
    for v, row in enumerate(plan.itertuples()):
        own = rows[rows["image_id"] == row.image_id][["patch_id", "score"]].copy()
        own.loc[own["patch_id"] == row.patch_id, "score"] = normalised[v]
        variant_tiles.append(own.assign(image_id=v))
    defect_images = (
        aggregate_images(
            pd.concat(variant_tiles), params.score.aggregate, params.score.aggregate_k
        )["score"].to_numpy()
        if variant_tiles
        else np.zeros(0)
    )
    # the good images' own scores, as the val split aggregated them (sorted by image id)
    good_images_scores = per_image.loc[~per_image["image_id"].isin(labelled), "score"].to_numpy()
    arrays = {
        "good_scores": good_images_scores.astype(np.float64),
        "defect_scores": defect_images.astype(np.float64),
        "kinds": plan["kind"].to_numpy(dtype=str) if len(plan) else np.zeros(0, dtype="<U1"),
    }
    if defect_maps and maps is not None:
        side = maps.shape[-1]
        norm_shift, norm_scale = shift[at, None, None], scale[at, None, None]
        arrays["clean_maps"] = to_float16((maps[at].astype(np.float32) - norm_shift) / norm_scale)
        arrays["defect_maps"] = to_float16(
            (np.concatenate(defect_maps).reshape(-1, side, side) - norm_shift) / norm_scale
        )
        arrays["masks"] = masks
    with atomic_path(target) as path, open(path, "wb") as handle:
        np.savez(handle, **arrays)
    log.info(
        "score %s: label-free figure from %d good validation images and %d simulated defects (%s)",
        params.model,
        len(good_images_scores),
        len(defect_images),
        ", ".join(kinds),
    )

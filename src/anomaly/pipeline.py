"""The body of each DVC stage: read params and inputs, call the package, write outputs.

The scripts in ``stages/`` only call these functions, so every stage can also
be run (and tested) without DVC.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

import numpy as np
import pandas as pd

from . import paths
from .config_schema import to_dict
from .data.download import dataset_info, download
from .data.manifest import load_image_and_mask, read_manifest
from .data.patching import patchify, patchify_table
from .data.splitting import SPLITS, make_splits
from .data.store import BatchSource, PatchStore
from .errors import DataError
from .io import atomic_dir, atomic_path, read_csv, read_json, write_csv, write_json
from .params import Params

log = logging.getLogger(__name__)


def stage_download(params: Params) -> None:
    manifest = download(params, paths.RAW)
    log.info("wrote %s", manifest)


def stage_patchify(params: Params) -> None:
    manifest = read_manifest(paths.manifest(params.dataset.name))
    raw = paths.RAW / params.dataset.name
    info = dataset_info(raw)
    if info["kind"] == "tabular":
        meta = patchify_table(manifest, raw / "table.csv", paths.PATCHES, info["features"])
    else:
        meta = patchify(manifest, params.patch, paths.PATCHES, info["channels"])
    log.info("patchify: %d tiles from %d images", meta["n_patches"], meta["n_images"])


def stage_split(params: Params) -> None:
    patches = read_csv(paths.PATCHES / "patches.csv", required=["patch_id", "image_id", "label"])
    images = read_csv(paths.PATCHES / "images.csv", required=["image_id", "label", "group"])
    images["group"] = images["group"].astype(str)
    parts, summary = make_splits(patches, images, params.split, params.seed)
    meta = read_json(paths.PATCHES / "meta.json")
    with atomic_dir(paths.SPLITS) as tmp:
        for name in SPLITS:
            write_csv(tmp / f"{name}.csv", parts[name])
        write_json(tmp / "summary.json", summary)
        if meta.get("kind") == "tabular":
            # Standardise features with statistics of the good-only training rows only.
            rows = np.load(paths.PATCHES / "patches.npy")[parts["train"]["patch_id"].to_numpy()]
            rows = rows.reshape(len(rows), -1).astype(np.float64)
            std = rows.std(axis=0)
            write_json(
                tmp / "scaler.json",
                {
                    "mean": rows.mean(axis=0).tolist(),
                    "std": np.where(std > 1e-12, std, 1.0).tolist(),
                },
            )


def open_store() -> PatchStore:
    """The patch store, with the training split's feature scaler when there is one."""
    scaler_file = paths.SPLITS / "scaler.json"
    return PatchStore(paths.PATCHES, read_json(scaler_file) if scaler_file.is_file() else None)


def stage_explore(params: Params) -> None:
    from . import explore

    raw = paths.RAW / params.dataset.name
    manifest = read_manifest(paths.manifest(params.dataset.name))
    info = dataset_info(raw)
    images = read_csv(paths.PATCHES / "images.csv", required=["image_id", "label"])
    image_label = images.set_index("image_id")["label"]
    splits = {}
    for name in SPLITS:
        tiles = _split_ids(name)
        splits[name] = tiles.assign(image_label=tiles["image_id"].map(image_label))
    balance = explore.class_balance(splits)
    dpi, cfg = params.plot.dpi, params.explore
    summary: dict = {
        "dataset": params.dataset.name,
        "images": int(len(manifest)),
        "good_images": int((manifest["label"] == 0).sum()),
        "defect_images": int((manifest["label"] == 1).sum()),
        "defect_images_by_type": {
            str(k): int(v)
            for k, v in manifest.loc[manifest["label"] == 1, "defect_type"]
            .value_counts()
            .sort_index()
            .items()
        },
        "class_balance": balance.to_dict(orient="records"),
    }
    with atomic_dir(paths.EXPLORE) as tmp:
        explore.class_balance_figure(balance, tmp / "class_balance.png", dpi)
        stats = None
        if info["kind"] == "tabular":
            table = read_csv(raw / "table.csv", required=["label"])
            explore.feature_histogram_figure(table, info["features"], tmp / "features.png", dpi)
        else:
            mode = "RGB" if info["channels"] == 3 else "L"
            explore.examples_figure(manifest, cfg, mode, params.seed, tmp / "examples.png", dpi)
            stats = explore.defect_statistics(manifest)
            explore.defect_size_figure(stats, tmp / "defect_sizes.png", dpi)
            samples = explore.intensity_samples(manifest, cfg.intensity_samples, params.seed)
            explore.intensity_figure(samples, tmp / "intensity.png", dpi)
            summary["defect_pixels_by_type"] = {
                str(kind): {
                    "median": float(part["defect_pixels"].median()),
                    "min": int(part["defect_pixels"].min()),
                    "max": int(part["defect_pixels"].max()),
                }
                for kind, part in stats.groupby("defect_type", sort=True)
            }
            summary["mean_intensity"] = {k: float(v.mean()) for k, v in samples.items()}
    # Tables apart from the figures: `dvc plots` would try to chart any JSON/CSV it finds.
    with atomic_dir(paths.EXPLORE_DATA) as tmp:
        write_json(tmp / "summary.json", summary)
        if stats is not None:
            write_csv(tmp / "defects.csv", stats)


def _split_ids(name: str, good_only: bool = False) -> pd.DataFrame:
    frame = read_csv(paths.SPLITS / f"{name}.csv", required=["patch_id", "image_id", "label"])
    return frame[frame["label"] == 0] if good_only else frame


TIMING_KEYS = ("seconds", "seconds_per_epoch")


def stage_train(params: Params) -> None:
    import torch

    from .logging_utils import make_logger
    from .models.registry import build_model, save_checkpoint
    from .training import effective_train_config, fit, resolve_device, seed_everything

    seed_everything(params.seed)
    config = params.model_block()
    train_cfg = effective_train_config(params.train, config)
    device = resolve_device(train_cfg.device)
    store = open_store()
    train_ids = _split_ids("train", good_only=True)["patch_id"].to_numpy()
    if train_cfg.max_train_patches and len(train_ids) > train_cfg.max_train_patches:
        rng = np.random.default_rng([params.seed, 5])
        train_ids = np.sort(rng.choice(train_ids, train_cfg.max_train_patches, replace=False))
    val_ids = _split_ids("val", good_only=True)["patch_id"].to_numpy()
    if len(train_ids) == 0:
        raise DataError(f"{paths.SPLITS / 'train.csv'}: the good-only training set is empty")
    model = build_model(params.model, config, store.channels, store.tile_size, store.tile_shape)
    train_batches = BatchSource(store, train_ids, train_cfg.batch_size, True, params.seed)
    val_batches = BatchSource(store, val_ids, train_cfg.batch_size, False, params.seed)
    # The epoch logs are written into a temp folder that replaces metrics/train only when
    # training succeeds: a crash keeps the previous run's logs (not an empty `{}`).
    with atomic_dir(paths.TRAIN_LOG) as log_dir:
        logger = make_logger(log_dir)
        try:
            if model.trainable:
                result = to_dict(fit(model, train_batches, val_batches, train_cfg, logger, device))
                model.calibrate(x.to(device) for x in val_batches)
            else:  # memory-based models (PatchCore): one pass over the good tiles, no epochs
                start = time.perf_counter()
                result = model.fit_memory(train_batches, device, len(train_ids), params.seed)
                result["seconds"] = time.perf_counter() - start
                logger.log({"memory_bank": float(result["memory_bank"])})  # one step
        finally:
            logger.close()
    out = paths.model_dir(params.model)
    out.mkdir(parents=True, exist_ok=True)
    model.cpu()
    save_checkpoint(
        model,
        out / "model.pt",
        {
            "train": to_dict(train_cfg),
            "seed": params.seed,
            "preprocessing": {
                "channels": store.channels,
                "tile_size": store.tile_size,
                "patch": store.meta["patch"],
                "scale": "uint8 / 255",
            },
        },
    )
    # Run time as a metric, apart from eval.json so that file stays byte-identical
    # across reruns; the report reads it for its run-time column.
    write_json(
        paths.TRAIN_TIME,
        {
            "seconds": round(float(result.get("seconds", 0.0)), 2),
            "seconds_per_epoch": round(float(result.get("seconds_per_epoch", 0.0)), 3),
            "epochs_run": int(result.get("epochs_run", 0)),
        },
    )
    # No wall-clock value in the model folder: its hash must not change between identical
    # runs (timings live in metrics/train_time.json, declared as a changing metric).
    write_json(
        out / "train_summary.json",
        {
            "model": params.model,
            "device": str(device),
            "train_patches": int(len(train_ids)),
            "val_patches": int(len(val_ids)),
            "parameters": int(sum(p.numel() for p in model.parameters())),
            **{k: v for k, v in to_dict(result).items() if k not in TIMING_KEYS},
        },
    )
    torch.set_grad_enabled(True)


def score_split(
    model, store: PatchStore, tiles: pd.DataFrame, score_cfg, device, keep_maps: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Tile scores (N,) and, when asked, tile maps (N, S, S) and latent codes (N, D),
    both as float16 (the maps feed the pixel metrics, the codes the latent-space plot)."""
    import torch

    ids = tiles["patch_id"].to_numpy()
    scores, maps, codes = [], [], []
    with torch.no_grad():
        for x in store.batches(ids, score_cfg.batch_size):
            x = x.to(device)
            s, m = model.score(x, score_cfg)
            scores.append(s.float().cpu().numpy())
            if keep_maps and m is not None:
                maps.append(m.float().cpu().numpy().astype(np.float16))
            code = model.latent_codes(x) if keep_maps else None
            if code is not None:
                finite16 = np.finfo(np.float16).max  # a huge code must not become inf
                codes.append(
                    np.clip(code.float().cpu().numpy(), -finite16, finite16).astype(np.float16)
                )
    score_arr = np.concatenate(scores) if scores else np.zeros(0)
    map_arr = np.concatenate(maps) if maps else None
    code_arr = np.concatenate(codes) if codes else None
    return score_arr, map_arr, code_arr


def stage_score(params: Params) -> None:
    from .models.registry import load_checkpoint
    from .scoring import aggregate_images, fit_group_normalizer, group_affine, stitch
    from .training import resolve_device, seed_everything

    seed_everything(params.seed)
    device = resolve_device(params.train.device)
    model, _ = load_checkpoint(paths.model_dir(params.model) / "model.pt", device)
    store = open_store()
    images = read_csv(
        paths.PATCHES / "images.csv", required=["image_id", "label", "height", "width"]
    )
    score_cfg = params.score
    if store.is_tabular:
        # Table rows have no spatial neighbourhood: per-feature squared error, averaged.
        score_cfg = replace(score_cfg, map="mse", smooth_sigma=0.0, patch_reduce="mean")
    out_dir = paths.score_dir(params.model)
    with atomic_dir(out_dir) as tmp:
        normalizer = None
        for split in ("val", "test"):
            tiles = _split_ids(split)
            tiles["group"] = tiles["group"].astype(str)
            scores, maps, codes = score_split(
                model, store, tiles, score_cfg, device, keep_maps=split == "test"
            )
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
            if normalizer is None:
                normalizer = (
                    fit_group_normalizer(tiles.rename(columns={"raw_score": "score"}))
                    if params.score.normalize == "group"
                    else None
                )
                write_json(
                    tmp / "normalization.json",
                    {"method": params.score.normalize, **(normalizer or {})},
                )
            shift, scale = (
                group_affine(tiles["group"], normalizer)
                if normalizer
                else (np.zeros(len(tiles)), np.ones(len(tiles)))
            )
            tiles["score"] = (scores - shift) / scale
            write_csv(tmp / f"{split}_patches.csv", tiles)
            per_image = aggregate_images(tiles, params.score.aggregate, params.score.aggregate_k)
            per_image = per_image.merge(
                images[["image_id", "label", "defect_type", "group", "image_path"]],
                on="image_id",
                how="left",
            )
            write_csv(tmp / f"{split}_images.csv", per_image)
            if split == "test" and maps is not None and store.is_tabular:
                errors = pd.DataFrame(
                    maps.reshape(len(maps), -1).astype(np.float32), columns=store.meta["features"]
                )
                errors.insert(0, "label", tiles["label"].to_numpy())
                errors.insert(0, "image_id", tiles["image_id"].to_numpy())
                write_csv(tmp / "test_feature_errors.csv", errors)
            elif split == "test" and maps is not None:
                full = {}
                for image_id, group in tiles.groupby("image_id", sort=True):
                    rows = group.index.to_numpy()
                    tile_maps = (maps[rows].astype(np.float32) - shift[rows, None, None]) / scale[
                        rows, None, None
                    ]
                    info = images.loc[images["image_id"] == image_id].iloc[0]
                    full[f"img_{image_id}"] = stitch(
                        tile_maps, group, int(info["height"]), int(info["width"])
                    ).astype(np.float16)
                with atomic_path(tmp / "test_maps.npz") as target, open(target, "wb") as handle:
                    np.savez(handle, **full)


def stage_threshold(params: Params) -> None:
    from .thresholds import candidate_thresholds, choose_threshold

    base = paths.score_dir(params.model)
    images = read_csv(base / "val_images.csv", required=["score", "label"])
    patches = read_csv(base / "val_patches.csv", required=["score", "label"])
    patches = patches[patches["label"] >= 0]
    cfg = params.threshold
    result = {
        "model": params.model,  # predict refuses a threshold set for another model
        "method": cfg.method,
        "image_threshold": choose_threshold(
            cfg, images["score"].to_numpy(), images["label"].to_numpy(), "image"
        ),
        "patch_threshold": choose_threshold(
            cfg, patches["score"].to_numpy(), patches["label"].to_numpy(), "tile"
        ),
        "val_good_images": int((images["label"] == 0).sum()),
        "val_defect_images": int((images["label"] == 1).sum()),
        "candidates": candidate_thresholds(
            cfg, images["score"].to_numpy(), images["label"].to_numpy()
        ),
    }
    write_json(paths.THRESHOLD, result)


def _load_maps_and_masks(
    params: Params, images: pd.DataFrame
) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    manifest = read_manifest(paths.manifest(params.dataset.name))
    maps_file = paths.score_dir(params.model) / "test_maps.npz"
    if not maps_file.is_file():
        return [], [], []
    maps, masks, ids = [], [], []
    with np.load(maps_file) as stored:
        for image_id in images["image_id"]:
            row = manifest.loc[manifest["image_id"] == image_id].iloc[0]
            if row["label"] == 1 and not row["mask_path"]:
                continue  # a defect without a mask cannot be scored per pixel
            key = f"img_{image_id}"
            if key not in stored:
                continue
            _, mask = load_image_and_mask(manifest, row)
            score_map = stored[key].astype(np.float32)
            if score_map.shape != mask.shape:
                raise DataError(
                    f"{maps_file}: map of image {image_id} is {score_map.shape}, "
                    f"mask is {mask.shape}; rerun the score stage"
                )
            maps.append(score_map)
            masks.append(mask)
            ids.append(int(image_id))
    return maps, masks, ids


def check_evaluable(where, labels: np.ndarray, scores: np.ndarray) -> None:
    """Refuse or flag test sets whose metrics would look real without being so."""
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


def stage_evaluate(params: Params) -> None:
    from .metrics import (
        aupro,
        classification_metrics,
        histogram_rows,
        pixel_auroc,
        pr_points,
        roc_points,
        threshold_sweep,
    )

    base = paths.score_dir(params.model)
    threshold = read_json(paths.THRESHOLD)
    images = read_csv(
        base / "test_images.csv", required=["image_id", "score", "label", "defect_type"]
    )
    patches = read_csv(base / "test_patches.csv", required=["score", "label"])
    patches = patches[patches["label"] >= 0]
    y, s = images["label"].to_numpy(), images["score"].to_numpy()
    check_evaluable(base / "test_images.csv", y, s)
    flat: dict = {
        "model": params.model,
        "dataset": params.dataset.name,
        "threshold": float(threshold["image_threshold"]),
        "threshold_method": threshold["method"],
    }
    for key, value in classification_metrics(y, s, threshold["image_threshold"]).items():
        flat[f"image.{key}"] = value
    for key, value in classification_metrics(
        patches["label"].to_numpy(), patches["score"].to_numpy(), threshold["patch_threshold"]
    ).items():
        flat[f"patch.{key}"] = value
    maps, masks, _ = _load_maps_and_masks(params, images)
    if maps:
        flat["pixel.auroc"] = pixel_auroc(
            maps, masks, params.evaluate.pixel_max_samples, params.seed
        )
        flat["pixel.aupro"] = aupro(maps, masks, params.evaluate.aupro_max_fpr)
    good = images[images["label"] == 0]
    for defect, part in images[images["label"] == 1].groupby("defect_type", sort=True):
        both = pd.concat([good, part])
        m = classification_metrics(
            both["label"].to_numpy(), both["score"].to_numpy(), threshold["image_threshold"]
        )
        flat[f"by_defect.{defect}.auroc"] = m["auroc"]
        flat[f"by_defect.{defect}.recall"] = m["recall"]
        flat[f"by_defect.{defect}.n"] = int(len(part))
    write_json(paths.EVAL, flat)
    write_json(paths.CURVES / "roc.json", {"roc": roc_points(y, s) if len(set(y)) > 1 else []})
    write_json(paths.CURVES / "pr.json", {"pr": pr_points(y, s) if len(set(y)) > 1 else []})
    write_json(paths.CURVES / "histogram.json", {"histogram": histogram_rows(y, s)})
    write_json(
        paths.CURVES / "threshold_study.json",
        {"threshold_study": threshold_sweep(y, s) if len(set(y)) > 1 else []},
    )
    names = np.array(["good", "defect"])
    write_json(
        paths.CURVES / "confusion.json",
        {
            "confusion": [
                {"actual": str(a), "predicted": str(p)}
                for a, p in zip(
                    names[y], names[(s >= threshold["image_threshold"]).astype(int)], strict=True
                )
            ]
        },
    )
    write_json(
        paths.CURVES / "scores.json",
        {
            "scores": [
                {
                    "image_id": int(r.image_id),
                    "score": float(r.score),
                    "label": int(r.label),
                    "defect_type": str(r.defect_type),
                }
                for r in images.itertuples()
            ]
        },
    )


def stage_plot(params: Params) -> None:
    from . import plots, study_plots

    base = paths.score_dir(params.model)
    images = read_csv(base / "test_images.csv", required=["image_id", "score", "label"])
    threshold = read_json(paths.THRESHOLD)
    metrics = read_json(paths.EVAL)
    out = paths.FIGURES
    manifest = read_manifest(paths.manifest(params.dataset.name))
    maps_file = base / "test_maps.npz"
    with atomic_dir(out) as tmp:
        plots.roc_figure(images, metrics, tmp / "roc.png", params.plot.dpi)
        plots.pr_figure(images, metrics, tmp / "pr.png", params.plot.dpi)
        plots.histogram_figure(
            images, threshold["image_threshold"], tmp / "score_histogram.png", params.plot.dpi
        )
        plots.confusion_figure(metrics, tmp / "confusion_matrix.png", params.plot.dpi)
        study_plots.threshold_study_figure(
            pd.DataFrame(read_json(paths.CURVES / "threshold_study.json")["threshold_study"]),
            images["score"].to_numpy(),
            threshold,
            tmp / "threshold_study.png",
            params.plot.dpi,
        )
        latents_file = base / "test_latents.npy"
        if latents_file.is_file() and params.plot.latent != "none":
            study_plots.latent_space_figure(
                np.load(latents_file),
                _split_ids("test"),
                images,
                params.plot.latent,
                params.plot.latent_points,
                params.seed,
                tmp / "latent_space.png",
                params.plot.dpi,
            )
        plots.training_figure(paths.TRAIN_LOG, tmp / "training_curves.png", params.plot.dpi)
        errors_file = base / "test_feature_errors.csv"
        if errors_file.is_file():
            plots.feature_error_figure(
                read_csv(errors_file), tmp / "feature_errors.png", params.plot.dpi
            )
        if maps_file.is_file():
            plots.gallery_figure(
                images,
                manifest,
                maps_file,
                threshold["image_threshold"],
                params.plot.gallery_per_group,
                tmp / "gallery.png",
                params.plot.dpi,
            )


STAGES = {
    "download": stage_download,
    "patchify": stage_patchify,
    "split": stage_split,
    "explore": stage_explore,
    "train": stage_train,
    "score": stage_score,
    "threshold": stage_threshold,
    "evaluate": stage_evaluate,
    "plot": stage_plot,
}

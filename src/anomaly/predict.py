"""Score a folder of new images with a trained model, outside the pipeline.

``anomaly predict IMAGES --out DIR`` uses the active model's checkpoint
(``models/<model>/model.pt``), its score normalisation
(``scores/<model>/normalization.json``) and the chosen threshold
(``metrics/threshold.json``), tiles each image exactly as the patchify stage
did (the checkpoint records the patch settings), and writes
``predictions.csv`` (image, score, defect call), one ``<name>_map.npy``
full-resolution anomaly map and one ``<name>_overlay.png`` per image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from . import paths
from .data.mvtec import IMAGE_SUFFIXES
from .data.patching import IMAGE_MODES, _plan, _resize, _to_working, tile_windows
from .errors import DataError
from .io import read_image, read_json, save_png, write_csv
from .params import Params, PatchConfig
from .scoring import aggregate_images, normalise, stitch


def _tiles(image: np.ndarray, patch: PatchConfig, out: int) -> tuple[np.ndarray, pd.DataFrame]:
    h, w = image.shape[:2]
    work, plan = _plan(h, w, patch)
    work_image = _to_working(image, work, Image.BILINEAR)
    crops, boxes = [], []
    for window, box in tile_windows(h, w, work, plan):
        resized = _resize(work_image[window], out, Image.BILINEAR)
        crops.append(resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1))
        boxes.append(dict(zip(("x", "y", "w", "h"), box, strict=True)))
    return np.stack(crops), pd.DataFrame(boxes)


def _overlay(image: np.ndarray, score_map: np.ndarray, threshold: float) -> np.ndarray:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import colormaps

    rgb = image if image.ndim == 3 else np.stack([image] * 3, -1)
    level = np.clip(score_map / max(2 * threshold, 1e-6), 0, 1)
    heat = colormaps["jet"](level)[..., :3] * 255
    alpha = (0.65 * level)[..., None]
    return (rgb * (1 - alpha) + heat * alpha).astype(np.uint8)


def _normalisation(norm_file: Path, group: str | None) -> tuple[dict, str | None]:
    """The score stage's normalisation and the group to apply it for, checked.

    Never a silent fallback: scores compared with a threshold set on normalised scores
    must be normalised the same way, so a missing file, a missing ``--group`` where
    groups differ, or an unknown group are errors.
    """
    if not norm_file.is_file():
        raise DataError(f"{norm_file}: not found; run the score stage first (dvc repro)")
    norm = read_json(norm_file)
    if norm.get("method") != "group":
        return norm, group
    groups = {str(k): v for k, v in norm["groups"].items()}
    if group is None:
        if len(groups) != 1:
            raise DataError(
                f"{norm_file}: scores are normalised per group; pass --group "
                f"(one of: {', '.join(sorted(groups))})"
            )
        group = next(iter(groups))
    if str(group) not in groups:
        raise DataError(
            f"--group {group}: not a group the model was scored on "
            f"(known: {', '.join(sorted(groups))})"
        )
    return norm, str(group)


def _image_threshold(threshold_file: Path, model: str) -> float:
    threshold = read_json(threshold_file)
    if threshold.get("model") != model:
        raise DataError(
            f"{threshold_file}: the threshold belongs to model "
            f"{threshold.get('model', 'unknown (written before thresholds named their model)')}, "
            f"not to {model}; run the pipeline for {model} first (dvc repro)"
        )
    return float(threshold["image_threshold"])


def predict_folder(
    params: Params,
    images_dir: str | Path,
    out_dir: str | Path,
    checkpoint: str | Path | None = None,
    group: str | None = None,
) -> pd.DataFrame:
    """Score every image under ``images_dir``; ``group`` (fabric code, category) picks that
    group's score normalisation, otherwise the statistics over all groups are used."""
    from .models.registry import load_checkpoint
    from .training import resolve_device

    device = resolve_device(params.train.device)
    checkpoint = Path(checkpoint or paths.model_dir(params.model) / "model.pt")
    model, payload = load_checkpoint(checkpoint, device)
    prep = payload.get("preprocessing", {})
    if prep.get("scale") != "uint8 / 255":
        raise DataError(f"{checkpoint}: predict scores images; this model was trained on tables")
    stored = dict(prep["patch"])
    if "size" in stored:  # checkpoints written before patch.size became patch.side
        stored["side"] = stored.pop("size")
    patch = PatchConfig(
        **{k: v for k, v in stored.items() if v is not None or k in ("resize", "image_size")}
    )
    channels = int(prep["channels"])
    norm, group = _normalisation(paths.score_dir(payload["model"]) / "normalization.json", group)
    threshold = _image_threshold(paths.THRESHOLD, payload["model"])
    if not Path(images_dir).is_dir():
        raise DataError(f"{images_dir}: folder not found")
    files = sorted(p for p in Path(images_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{images_dir}: no images to score")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in files:
        image = read_image(path, IMAGE_MODES[channels])
        crops, boxes = _tiles(image, patch, int(prep["tile_size"]))
        with torch.no_grad():
            x = torch.from_numpy(crops).float().div(255).to(device)
            scores, maps = model.score(x, params.score)
        raw = scores.float().cpu().numpy()
        # The score stage's own function, so a new image is normalised like test images.
        scores, shift, scale = normalise(raw, pd.Series([group] * len(raw)), norm)
        tiles = boxes.assign(image_id=0, score=scores)
        image_score = float(
            aggregate_images(tiles, params.score.aggregate, params.score.aggregate_k)["score"].iloc[
                0
            ]
        )
        rows.append(
            {"image": str(path), "score": image_score, "defect": int(image_score >= threshold)}
        )
        if maps is not None:
            tile_maps = (maps.float().cpu().numpy() - shift[:, None, None]) / scale[:, None, None]
            full = stitch(tile_maps, tiles, image.shape[0], image.shape[1])
            np.save(out / f"{path.stem}_map.npy", full.astype(np.float16))
            save_png(out / f"{path.stem}_overlay.png", _overlay(image, full, threshold))
    frame = pd.DataFrame(rows)
    frame["threshold"] = threshold
    write_csv(out / "predictions.csv", frame)
    return frame

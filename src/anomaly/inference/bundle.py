"""One file per trained model: everything needed to score new images, nothing else.

A bundle is a ``torch.save`` of plain types and tensors (it loads with
``torch.load(weights_only=True)``, so opening one never runs code from the file):

- the checkpoint: model name, typed config, input shape and ``state_dict``;
- preprocessing: channels, tile size, the patch settings (side, stride, resize,
  image size, blank-tile rule) and the pixel scale;
- the score settings the pipeline used (``score.*``);
- the per-group score normalisation fitted on good validation tiles;
- the image threshold and the pixel threshold (``metrics/threshold.json``);
- the dataset family, which tells predict how to read a group from a file name.

Why a separate file and an ``export`` stage rather than the train stage's
checkpoint: normalisation and thresholds are fitted after training, on scores
the model produced, so only a stage after ``threshold`` can write a complete
bundle. ``models/<model>/model.pt`` stays the train stage's output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .. import __version__, paths
from ..config_schema import to_dict
from ..errors import DataError
from ..io import atomic_path, load_torch_file, read_json

BUNDLE_FORMAT = "anomaly-bundle"
BUNDLE_VERSION = 1


def bundle_path(model: str) -> Path:
    """Where the export stage writes the active model's bundle."""
    return paths.MODELS / f"{model}.bundle"


def _patch_settings(stored: dict, blank_std: float) -> dict:
    patch = dict(stored)
    if "size" in patch:  # checkpoints written before patch.size became patch.side
        patch["side"] = patch.pop("size")
    patch.setdefault("blank_std", blank_std)  # tile stores written before it was recorded
    return patch


def build_bundle(
    checkpoint: dict,
    score: Any,
    normalisation: dict,
    threshold: dict,
    dataset: str,
    blank_std: float,
) -> dict:
    """The bundle dict from the pipeline's pieces (each already read and checked)."""
    prep = checkpoint.get("preprocessing", {})
    if prep.get("scale") != "uint8 / 255":
        raise DataError(
            f"model {checkpoint.get('model')}: was trained on tables; bundles score images"
        )
    if threshold.get("model") != checkpoint.get("model"):
        raise DataError(
            f"{paths.THRESHOLD}: the threshold belongs to model "
            f"{threshold.get('model', 'unknown')}, not to {checkpoint.get('model')}; "
            "rerun the pipeline (dvc repro)"
        )
    pixel = threshold.get("pixel_threshold")
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "package_version": __version__,
        "model": checkpoint["model"],
        "config": checkpoint["config"],
        "in_channels": checkpoint["in_channels"],
        "image_size": checkpoint["image_size"],
        "input_shape": checkpoint["input_shape"],
        "state_dict": checkpoint["state_dict"],
        "seed": checkpoint.get("seed"),
        "preprocessing": {
            "channels": int(prep["channels"]),
            "tile_size": int(prep["tile_size"]),
            "patch": _patch_settings(prep["patch"], blank_std),
            "scale": prep["scale"],
        },
        "score": to_dict(score),
        "normalisation": normalisation,
        "image_threshold": float(threshold["image_threshold"]),
        "pixel_threshold": None if pixel is None else float(pixel),
        "threshold_method": threshold.get("method"),
        "dataset": dataset,
    }


def bundle_from_pipeline(params: Any) -> dict:
    """The active model's bundle from the pipeline's files (what the export stage writes)."""
    checkpoint = load_torch_file(
        paths.model_dir(params.model) / "model.pt",
        "cpu",
        "checkpoint",
        "not found; run the pipeline first (dvc repro)",
    )
    norm_file = paths.score_dir(params.model) / "normalization.json"
    settings_file = paths.score_dir(params.model) / "score_settings.json"
    for needed in (norm_file, settings_file, paths.THRESHOLD):
        if not needed.is_file():
            raise DataError(f"{needed}: not found; run the pipeline first (dvc repro)")
    settings = read_json(settings_file)  # what the score stage ran, `auto` resolved
    return build_bundle(
        checkpoint,
        {k: v for k, v in settings.items() if k not in ("origin", "tile_score")},
        read_json(norm_file),
        read_json(paths.THRESHOLD),
        params.dataset.name,
        params.patch.blank_std,
    )


def save_bundle(bundle: dict, path: str | Path) -> Path:
    """Write atomically; saved through a file object so identical bundles are identical
    bytes (torch names the zip's inner folder after the file name otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(bundle, handle)
    return path


def load_bundle(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """Read and check a bundle; one clear error for a missing, foreign or newer file."""
    path = Path(path)
    bundle = load_torch_file(
        path, device, "bundle", "bundle not found (write one with `anomaly export`)"
    )
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise DataError(
            f"{path}: not a model bundle (a checkpoint model.pt? export one with `anomaly export`)"
        )
    if int(bundle.get("version", 0)) > BUNDLE_VERSION:
        raise DataError(
            f"{path}: bundle format {bundle['version']} is newer than this package reads "
            f"({BUNDLE_VERSION}); upgrade anomaly-pipeline"
        )
    return bundle

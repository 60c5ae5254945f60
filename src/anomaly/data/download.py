"""The download stage: produce ``data/raw/<dataset>/`` with its manifest and ``dataset.json``.

One function per dataset family, chosen by ``dataset.name``. Each returns the
manifest table and the number of colour channels to read images with; local
folders named by ``dataset.source`` are read where they are, never copied.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from PIL import Image

from ..errors import DataError
from ..io import write_json
from ..params import Params
from .aitex import OFFICIAL_RESOURCES as AITEX_RESOURCES
from .aitex import read_aitex
from .folder import read_folder
from .manifest import MANIFEST_NAME, write_manifest
from .mnist import write_mnist
from .mvtec import CATEGORIES, GRAYSCALE, OFFICIAL_URL, read_mvtec
from .sources import Resource, cache_root, local_folder
from .synthetic_fabric import generate
from .tabular import read_table, synthetic_table, write_table

log = logging.getLogger(__name__)

Family = Callable[[Params, Path], tuple[pd.DataFrame, int, dict]]


def _synthetic_fabric(params: Params, out: Path) -> tuple[pd.DataFrame, int, dict]:
    data_dir = out / "images"
    generate(params.dataset.synthetic, params.seed, data_dir)
    frame = read_aitex(data_dir, params.dataset.categories)
    for column in ("image_path", "mask_path"):
        frame[column] = frame[column].map(
            lambda p: ";".join(f"images/{m}" for m in p.split(";")) if p else ""
        )
    return frame, 1, {"variant": "synthetic AITEX-like rolls"}


def _absolute(frame: pd.DataFrame, root: Path) -> pd.DataFrame:
    for column in ("image_path", "mask_path"):
        frame[column] = frame[column].map(
            lambda p: ";".join(str(root / m) for m in p.split(";")) if p else ""
        )
    return frame


def _aitex(params: Params, out: Path) -> tuple[pd.DataFrame, int, dict]:
    hint = (
        "Download Defect_images.7z, NODefect_images.7z and Mask_images.7z from AITEX's "
        "site, extract them into one folder and set dataset.source to it."
    )
    root = local_folder(
        params.dataset.source, AITEX_RESOURCES, cache_root(params.dataset.cache_dir) / "aitex", hint
    )
    frame = _absolute(read_aitex(root, params.dataset.categories), root)
    _warn_odd_sizes(frame)
    return frame, 1, {"variant": f"AITEX from {root}"}


def _mvtec(params: Params, out: Path) -> tuple[pd.DataFrame, int, dict]:
    categories = params.dataset.categories
    if not categories or len(categories) != 1:
        raise DataError(f"dataset.category: choose one MVTec AD category ({', '.join(CATEGORIES)})")
    category = categories[0]
    hint = (
        "Download mvtec_anomaly_detection.tar.xz from MVTec's site and set dataset.source "
        "to the archive or to its extracted folder."
    )
    root = local_folder(
        params.dataset.source,
        [Resource(OFFICIAL_URL)],
        cache_root(params.dataset.cache_dir) / "mvtec",
        hint,
        select=lambda name: _in_category(name, category),
        key=f"-{category}",
    )
    frame = read_mvtec(root, category)
    channels = 1 if category in GRAYSCALE else 3
    return (
        frame,
        channels,
        {
            "variant": f"MVTec AD {category} from {root}",
            "category_type": frame["category_type"].iloc[0],
        },
    )


def _in_category(member: str, category: str) -> bool:
    """Extract only the chosen category (plus the archive's top-level licence and readme)."""
    parts = member.split("/")
    if category in parts:
        return True
    return parts[-1].lower() in ("license.txt", "readme.txt") and not any(
        p in CATEGORIES for p in parts
    )


def _mnist(params: Params, out: Path) -> tuple[pd.DataFrame, int, dict]:
    frame, variant = write_mnist(
        out,
        params.dataset.source,
        params.dataset.normal_class,
        cache_root(params.dataset.cache_dir),
    )
    log.info("MNIST: %s", variant)
    return frame, 1, {"variant": variant, "normal_class": params.dataset.normal_class}


def _folder(params: Params, out: Path) -> tuple[pd.DataFrame, int, dict]:
    if not params.dataset.source:
        raise DataError(
            "dataset.source: set it to your image folder (good/, defect/<type>/, "
            "masks/<type>/) for dataset.name=folder"
        )
    root = local_folder(
        params.dataset.source, [], cache_root(params.dataset.cache_dir) / "folder", ""
    )
    frame = read_folder(root)
    with Image.open(frame["image_path"].iloc[0]) as first:
        channels = 1 if first.mode in ("1", "L", "I", "I;16", "F", "LA") else 3
    return frame, channels, {"variant": f"folder {root}"}


def _tabular(params: Params, out: Path) -> tuple[pd.DataFrame, int, dict]:
    cfg = params.dataset.tabular
    if params.dataset.source:
        features, labels, names = read_table(params.dataset.source, cfg.label_column)
        variant = f"CSV {params.dataset.source}"
    else:
        table = synthetic_table(
            params.seed, cfg.n_normal, cfg.n_anomalies, cfg.dims, cfg.shift, cfg.spread
        )
        labels = table.pop("label").to_numpy()
        features, names = table.to_numpy("float32"), list(table.columns)
        variant = f"synthetic Gaussian table ({cfg.dims}-D, {cfg.n_anomalies} anomalies)"
    frame = write_table(out, features, labels, names)
    return frame, 1, {"variant": variant, "kind": "tabular", "features": names}


def _warn_odd_sizes(frame: pd.DataFrame) -> None:
    sizes: dict[tuple[int, int], int] = {}
    per_image = []
    for path in frame["image_path"]:
        with Image.open(path) as img:
            per_image.append((path, img.size))
            sizes[img.size] = sizes.get(img.size, 0) + 1
    common = max(sizes, key=sizes.get)
    for path, size in per_image:
        if size != common:
            log.warning(
                "%s: image is %dx%d, most are %dx%d; it is tiled on its own grid (last "
                "tile flush with the edge)",
                path,
                *size,
                *common,
            )


FAMILIES: dict[str, Family] = {
    "synthetic_fabric": _synthetic_fabric,
    "aitex": _aitex,
    "mvtec": _mvtec,
    "mnist": _mnist,
    "folder": _folder,
    "tabular": _tabular,
}


def download(params: Params, raw_root: str | Path = "data/raw") -> Path:
    """Materialise the dataset and write its manifest; returns the manifest path."""
    out = Path(raw_root) / params.dataset.name
    out.mkdir(parents=True, exist_ok=True)
    frame, channels, info = FAMILIES[params.dataset.name](params, out)
    if frame.empty:
        raise DataError(f"dataset {params.dataset.name}: no images found")
    manifest = out / MANIFEST_NAME
    write_manifest(frame, manifest)
    write_json(
        out / "dataset.json",
        {
            "name": params.dataset.name,
            "channels": channels,
            "images": int(len(frame)),
            "good": int((frame["label"] == 0).sum()),
            "defect": int((frame["label"] == 1).sum()),
            **info,
        },
    )
    return manifest


def dataset_info(raw_dir: str | Path) -> dict:
    """What the download stage recorded (channels, kind, variant); defaults when absent."""
    from ..io import read_json

    path = Path(raw_dir) / "dataset.json"
    return {"channels": 1, "kind": "images", **(read_json(path) if path.is_file() else {})}

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
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..io import is_disk_full, write_csv, write_json
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

# A family returns the manifest, the channels to read images with (None: those of the
# first readable image) and what dataset.json should record.
Family = Callable[[Params, Path], tuple[pd.DataFrame, int | None, dict]]
SINGLE_CHANNEL_MODES = ("1", "L", "I", "I;16", "F", "LA")


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
    # Channels: from the first image that reads, after the bad-file check (download()).
    return read_folder(root), None, {"variant": f"folder {root}"}


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


def check_files(
    frame: pd.DataFrame, root: Path, policy: str
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, tuple[int, int]], str | None]:
    """Decode every image and mask once, before any stage relies on them.

    Returns the rows that read, the skipped rows (``dataset.on_bad_file: skip``) with
    the reason, each image's (width, height) and the first readable image's Pillow mode.
    With ``error`` (the default) the first bad file stops the stage with one line naming
    it: a zero-byte or truncated PNG is found here, not as a traceback three stages later.
    """
    keep, skipped, sizes, first_mode = [], [], {}, None
    for index, row in frame.iterrows():
        problem = None
        parts = [("image", row["image_path"])]
        parts += [("mask", m) for m in str(row["mask_path"] or "").split(";") if m]
        for kind, relative in parts:
            path = Path(relative) if Path(relative).is_absolute() else root / relative
            try:
                with Image.open(path) as img:
                    img.load()
                    if kind == "image":
                        sizes[row["image_path"]] = img.size
                        first_mode = first_mode or img.mode
            except FileNotFoundError:
                problem = f"{path}: {kind} not found"
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
                if is_disk_full(exc):
                    raise
                problem = f"{path}: corrupt or unreadable {kind} ({exc})"
            if problem:
                break
        if problem is None:
            keep.append(index)
            continue
        if policy == "error":
            raise DataError(f"{problem}; fix or remove it, or set dataset.on_bad_file: skip")
        log.warning("skipping %s", problem)
        skipped.append({"image_path": row["image_path"], "reason": problem})
    skipped_frame = pd.DataFrame(skipped, columns=["image_path", "reason"])
    return frame.loc[keep].reset_index(drop=True), skipped_frame, sizes, first_mode


def _warn_odd_sizes(sizes: dict[str, tuple[int, int]]) -> None:
    """Name every image whose size differs from the most common one (AITEX has a few)."""
    counts: dict[tuple[int, int], int] = {}
    for size in sizes.values():
        counts[size] = counts.get(size, 0) + 1
    if len(counts) < 2:
        return
    common = max(counts, key=counts.get)
    for path, size in sizes.items():
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
    skipped = pd.DataFrame(columns=["image_path", "reason"])
    if info.get("kind") != "tabular":
        frame, skipped, sizes, first_mode = check_files(frame, out, params.dataset.on_bad_file)
        if frame.empty:
            raise DataError(f"dataset {params.dataset.name}: no readable images")
        if channels is None:
            channels = 1 if first_mode in SINGLE_CHANNEL_MODES else 3
        _warn_odd_sizes(sizes)
    if len(skipped):
        log.warning(
            "%d unreadable file(s) skipped (dataset.on_bad_file: skip); listed in %s",
            len(skipped),
            out / "skipped.csv",
        )
    write_csv(out / "skipped.csv", skipped)
    if not (frame["label"] == 1).any():
        log.warning(
            "dataset %s has no defect images: training works, but detection metrics "
            "(AUROC, precision, recall) cannot be measured and are reported as null",
            params.dataset.name,
        )
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
            "skipped": int(len(skipped)),
            **info,
        },
    )
    return manifest


def dataset_info(raw_dir: str | Path) -> dict:
    """What the download stage recorded (channels, kind, variant); defaults when absent."""
    from ..io import read_json

    path = Path(raw_dir) / "dataset.json"
    return {"channels": 1, "kind": "images", **(read_json(path) if path.is_file() else {})}

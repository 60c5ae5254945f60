"""The download stage: produce ``data/raw/<dataset>/`` with its manifest and ``dataset.json``.

The family named by ``dataset.name`` (``data/families/<name>.py``) reads or fetches
the data into the manifest table; local folders named by ``dataset.source`` are
read where they are, never copied. Here: the checks every family gets (every
image decodes, bad files per ``dataset.on_bad_file``, odd sizes, no defects).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..image_reader import check_decodes as decode_check
from ..image_reader import is_single_channel, oriented_size
from ..io import is_disk_full, write_csv, write_json
from ..params import Params
from .families.registry import get_family
from .manifest import MANIFEST_NAME, write_manifest

log = logging.getLogger(__name__)


def check_files(
    frame: pd.DataFrame, root: Path, policy: str
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, tuple[int, int]], bool]:
    """Decode every image and mask once, before any stage relies on them.

    Returns the rows that read, the skipped rows (``dataset.on_bad_file: skip``) with
    the reason, each image's (width, height) and whether any image is in colour (one
    colour image makes the data colour; grayscale data stays one channel, whatever its
    folder layout).
    With ``error`` (the default) the first bad file stops the stage with one line naming
    it: a zero-byte or truncated PNG is found here, not as a traceback three stages later.
    """
    keep, skipped, sizes, colour = [], [], {}, False
    for index, row in frame.iterrows():
        problem = None
        parts = [("image", row["image_path"])]
        parts += [("mask", m) for m in str(row["mask_path"] or "").split(";") if m]
        for kind, relative in parts:
            path = Path(relative) if Path(relative).is_absolute() else root / relative
            try:
                with Image.open(path) as img:
                    # the one reader's structural rules (one page, decodes fully); value
                    # ranges are patchify's, which knows patch.intensity_range
                    decode_check(img, str(path))
                    if kind == "image":
                        sizes[row["image_path"]] = oriented_size(img)
                        colour = colour or not is_single_channel(img.mode)
            except DataError as exc:
                problem = str(exc)
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
    return frame.loc[keep].reset_index(drop=True), skipped_frame, sizes, colour


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


def download(params: Params, raw_root: str | Path = "data/raw") -> Path:
    """Materialise the dataset and write its manifest; returns the manifest path."""
    out = Path(raw_root) / params.dataset.name
    out.mkdir(parents=True, exist_ok=True)
    family = get_family(params.dataset.name)
    frame, channels, info = family.read(params, out)
    if frame.empty:
        raise DataError(f"dataset {params.dataset.name}: no images found")
    skipped = pd.DataFrame(columns=["image_path", "reason"])
    if info.get("kind") != "tabular":
        frame, skipped, sizes, colour = check_files(frame, out, params.dataset.on_bad_file)
        if frame.empty:
            raise DataError(f"dataset {params.dataset.name}: no readable images")
        if channels is None:
            channels = 3 if colour else 1
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
            "score_defaults": dict(family.score_defaults),  # what score.*: auto becomes
            "anomaly_kind": family.anomaly_kind,
            **info,
        },
    )
    return manifest

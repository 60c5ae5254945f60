"""``anomaly predict``: score a folder (or files) of new images with a bundle.

Writes into the output folder, keeping each input's path relative to the folder
given (so ``good/000.png`` and ``broken/000.png`` never overwrite each other):

- ``predictions.csv``: image, group, score, threshold, defect, blank, the number
  of pixels in the predicted mask;
- ``<path>_map.npy``: the full-resolution anomaly map (float16, normalised like
  the score);
- ``<path>_mask.png``: the predicted defect mask (map >= the pixel threshold);
- ``<path>_overlay.png``: the image with its map, colour bar, predicted mask
  outline, score and threshold, drawn like the pipeline's gallery.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..data.mvtec import IMAGE_SUFFIXES
from ..errors import DataError
from ..io import atomic_path, save_png, write_csv
from ..scoring import to_float16
from .detector import Detector

log = logging.getLogger(__name__)


def find_images(inputs: list[str | Path]) -> list[tuple[Path, Path]]:
    """(file, path relative to the input it came from) for every image in ``inputs``
    (folders searched recursively, files taken as they are), sorted, checked."""
    found: list[tuple[Path, Path]] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise DataError(
                    f"{item}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in this folder"
                )
            found += [(p, p.relative_to(item)) for p in files]
        elif item.is_file():
            found.append((item, Path(item.name)))
        else:
            raise DataError(f"{item}: not found")
    seen: dict[Path, Path] = {}
    for path, rel in found:
        if rel in seen:
            raise DataError(
                f"{path}: same relative name as {seen[rel]}; its outputs would overwrite "
                "those of the other; pass the two folders' common parent instead"
            )
        seen[rel] = path
    return found


def predict_images(
    detector: Detector,
    inputs: list[str | Path],
    out_dir: str | Path,
    group: str | None = None,
    overlays: bool = True,
) -> pd.DataFrame:
    """Score every image, write maps, masks, overlays and ``predictions.csv``."""
    from ..reporting.plots import display_size, overlay_figure

    files = find_images(inputs)
    out = Path(out_dir)
    rows = []
    for path, rel in tqdm(files, desc=f"predict {detector.name}", unit="img", disable=None):
        image = detector.read(path)[0]  # read once: scored, then drawn in the overlay
        result = detector.predict_one(image, detector.group_for(path, group), name=str(path))
        stem = out / rel.with_suffix("")
        stem.parent.mkdir(parents=True, exist_ok=True)
        rows.append(
            {
                "image": rel.as_posix(),
                "group": result.group,
                "score": result.score,
                "threshold": result.threshold,
                "defect": int(result.defect),
                "blank": int(result.blank),
                "mask_pixels": None if result.mask is None else int(result.mask.sum()),
            }
        )
        if result.anomaly_map is None:
            continue
        with atomic_path(Path(f"{stem}_map.npy")) as target, open(target, "wb") as handle:
            np.save(handle, to_float16(result.anomaly_map))
        if result.mask is not None:
            save_png(Path(f"{stem}_mask.png"), result.mask.astype(np.uint8) * 255)
        if overlays:
            # Reduced to what the figure can show, and the full-size arrays dropped first:
            # on a huge image, drawing then adds to the image alone, not to image + map.
            pixels = rows[-1]["mask_pixels"]
            shown, small_map, small_mask = display_size(image, result.anomaly_map, result.mask)
            small = replace(result, anomaly_map=small_map, mask=small_mask)
            shown = np.ascontiguousarray(shown)
            image = result = None
            overlay_figure(shown, small, rel.as_posix(), Path(f"{stem}_overlay.png"), 110, pixels)
        log.debug("%s: score %.4g", rel, rows[-1]["score"])
    frame = pd.DataFrame(rows)
    write_csv(out / "predictions.csv", frame)
    flagged = int(frame["defect"].sum())
    log.info(
        "%d images scored with %s: %d called defective (threshold %.4g); %s",
        len(frame),
        detector.name,
        flagged,
        detector.image_threshold,
        out / "predictions.csv",
    )
    return frame

"""Read a folder in the AITEX Fabric Image Database layout into a manifest.

Layout (also what the synthetic generator writes)::

    NODefect_images/<fabric folder>/nnnn_000_ff.png
    Defect_images/nnnn_ddd_ff.png
    Mask_images/nnnn_ddd_ff_mask.png      (white = defect)

``nnnn`` is the image id, ``ddd`` the defect code and ``ff`` the fabric code.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePath

import pandas as pd

from ..errors import DataError

log = logging.getLogger(__name__)

# AITEX defect codes and the names the manifest uses for them.
DEFECT_NAMES = {
    "002": "broken_end",
    "006": "broken_yarn",
    "010": "broken_pick",
    "016": "weft_curling",
    "019": "fuzzyball",
    "022": "cut_selvage",
    "023": "crease",
    "025": "warp_ball",
    "027": "knots",
    "029": "contamination",
    "030": "nep",
    "036": "weft_crack",
}
DEFECT_CODES = {name: code for code, name in DEFECT_NAMES.items()}

# The database's three archives; AITEX publishes no checksums, so the first
# verified download's sha256 is recorded (see sources.fetch_resource).
_BASE = "https://www.aitex.es/wp-content/uploads/2019/07/"


def _resources():
    from .sources import Resource

    return [
        Resource(_BASE + name)
        for name in ("Defect_images.7z", "NODefect_images.7z", "Mask_images.7z")
    ]


FABRIC_FOLDERS = {f"{i:02d}": f"fabric{i:02d}" for i in range(1, 8)}

_NAME = re.compile(r"^(?P<id>\d{4})_(?P<defect>\d{3})_(?P<fabric>\d{2})$")
_MASK = re.compile(r"^(?P<stem>\d{4}_\d{3}_\d{2})_mask(?P<part>\d*)$")


OFFICIAL_RESOURCES = _resources()


def _parse(path: Path) -> re.Match[str]:
    match = _NAME.match(path.stem)
    if match is None:
        raise DataError(f"{path}: file name is not AITEX's nnnn_ddd_ff.png pattern")
    return match


def fabric_of(path: PurePath) -> str | None:
    """The fabric code in an AITEX file name (``nnnn_ddd_ff``), None for other names:
    what predict uses to pick a new roll's score normalisation."""
    match = _NAME.match(path.stem)
    return match["fabric"] if match else None


def read_aitex(root: str | Path, fabrics: list[str] | None = None) -> pd.DataFrame:
    """The manifest of an AITEX-layout folder; ``fabrics`` keeps only those fabric codes."""
    root = Path(root)
    good_dir, defect_dir, mask_dir = (
        root / "NODefect_images",
        root / "Defect_images",
        root / "Mask_images",
    )
    for folder in (good_dir, defect_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: missing; not an AITEX-layout folder")
    masks: dict[str, list[Path]] = {}
    if mask_dir.is_dir():
        for path in sorted(mask_dir.glob("*.png")):
            match = _MASK.match(path.stem)
            if match:
                masks.setdefault(match["stem"], []).append(path)

    rows = []
    for path in sorted(good_dir.rglob("*.png")):
        match = _parse(path)
        rows.append(_row(root, path, None, 0, "good", match["fabric"]))
    for path in sorted(defect_dir.glob("*.png")):
        match = _parse(path)
        code = match["defect"]
        name = DEFECT_NAMES.get(code, f"defect_{code}")
        found = masks.get(path.stem, [])
        if not found:
            log.warning("%s: defect image has no mask; pixel metrics will skip it", path)
        elif len(found) > 1:
            log.warning("%s: %d mask files; merging them", path, len(found))
        rows.append(_row(root, path, found, 1, name, match["fabric"]))
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise DataError(f"{root}: no PNG images found in AITEX layout")
    if fabrics:
        keep = frame["group"].isin([str(f).zfill(2) for f in fabrics])
        if not keep.any():
            raise DataError(f"{root}: no images of fabric code(s) {', '.join(map(str, fabrics))}")
        frame = frame[keep].reset_index(drop=True)
    return frame


def _row(
    root: Path, image: Path, masks: list[Path] | None, label: int, defect: str, fabric: str
) -> dict:
    return {
        "image_path": str(image.relative_to(root)),
        "mask_path": ";".join(str(m.relative_to(root)) for m in masks) if masks else "",
        "label": label,
        "defect_type": defect,
        "group": fabric,
        "source_split": "",
    }

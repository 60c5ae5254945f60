"""Score new images with a bundle, anywhere: no project folder, DVC or params file.

>>> from anomaly import load_detector
>>> detector = load_detector("models/cae.bundle")
>>> [p.score for p in detector.predict(["roll.png"])]

Each image goes through exactly what the pipeline did to its test images: the
same tiling, resizing and blank-tile rule (:func:`anomaly.data.patching.cut_tiles`),
the model's ``score`` with the pipeline's ``score.*`` settings, the per-group
normalisation (:func:`anomaly.scoring.normalise`), the image aggregation and the
stitching of tile maps. That is what makes a bundle's score of a test image equal
to ``scores/<model>/test_images.csv`` (tested).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..config_schema import build
from ..data.patching import IMAGE_MODES, cut_tiles
from ..errors import AnomalyError, DataError
from ..image_reader import decode, read_image, read_image_bytes
from ..params import PatchConfig, ScoreConfig
from ..scoring import MapStitcher, aggregate_images, normalise, to_float16
from .bundle import load_bundle

log = logging.getLogger(__name__)

ImageInput = str | Path | np.ndarray | Image.Image


@dataclass
class Prediction:
    """One image's result. Maps are at the image's own resolution."""

    source: str  # file path, or "image[i]" for an array
    group: str  # the group whose normalisation was applied ("" without normalisation)
    score: float  # normalised image score, comparable with ``threshold``
    threshold: float
    defect: bool  # score >= threshold
    anomaly_map: np.ndarray | None  # (H, W) float32, normalised like the score
    mask: np.ndarray | None  # (H, W) bool: anomaly_map >= pixel_threshold
    pixel_threshold: float | None
    blank: bool  # every tile was flat padding; scored anyway, the pipeline would skip it


class Detector:
    """A trained model with its preprocessing, normalisation and thresholds."""

    def __init__(self, bundle: dict, device: str | torch.device = "auto", source: str = "") -> None:
        from ..models.registry import model_from_payload
        from ..models.training import resolve_device

        self.source = source or "bundle"
        self.device = resolve_device(str(device))
        self.bundle = bundle
        self.model = model_from_payload(bundle, self.device, self.source)
        prep = bundle["preprocessing"]
        self.channels = int(prep["channels"])
        self.tile_size = int(prep["tile_size"])
        self.patch = build(PatchConfig, prep["patch"], "preprocessing.patch", self.source)
        self.score_cfg = build(ScoreConfig, bundle["score"], "score", self.source)
        self.normalisation: dict = bundle["normalisation"]
        self.image_threshold = float(bundle["image_threshold"])
        pixel = bundle.get("pixel_threshold")
        self.pixel_threshold = None if pixel is None else float(pixel)
        self.dataset = str(bundle.get("dataset", ""))

    @property
    def name(self) -> str:
        return str(self.bundle["model"])

    @property
    def groups(self) -> list[str]:
        """The groups (fabric codes, categories) the model was normalised on."""
        if self.normalisation.get("method") != "group":
            return []
        fitted = {str(g) for g in self.normalisation["groups"]}
        # groups the pipeline scored with the overall statistics (no good validation tiles)
        return sorted(fitted | {str(g) for g in self.normalisation.get("fallback_groups", [])})

    def group_for(self, path: str | Path | None, group: str | None = None) -> str:
        """The group whose normalisation applies: ``group`` if given, else the one the
        dataset family reads from the file name, else the model's only group. Never a
        silent fallback to the overall statistics: a wrong group shifts every score."""
        groups = self.groups
        if not groups:
            return "" if group is None else str(group)
        if group is None and path is not None:
            group = self._group_from_name(PurePath(path))
        if group is None:
            if len(groups) != 1:
                raise DataError(
                    f"{path or 'image'}: the model normalises scores per group and the file "
                    f"name does not say which; pass a group (one of: {', '.join(groups)})"
                )
            group = groups[0]
        if str(group) not in groups:
            raise DataError(
                f"{path or 'image'}: group {group} is not one the model was scored on "
                f"(known: {', '.join(groups)})"
            )
        return str(group)

    def _group_from_name(self, path: PurePath) -> str | None:
        from ..data.families.registry import get_family

        try:
            family = get_family(self.dataset, self.source)
        except AnomalyError:  # a family this installation does not have
            return None
        return family.group_of(path)

    def read(self, image: ImageInput, index: int = 0) -> tuple[np.ndarray, str, str | None]:
        """(uint8 array in the model's channels, a name for messages, its path or None)."""
        mode = IMAGE_MODES[self.channels]
        bounds = self.patch.intensity_range
        if isinstance(image, (str, Path)):
            return read_image(image, mode, bounds), str(image), str(image)
        name = f"image[{index}]"
        if isinstance(image, Image.Image):
            return decode(image, mode, name, bounds), name, None
        array = np.asarray(image)
        deep = array.dtype == np.uint16 and array.ndim == 2  # a 16-bit camera frame
        if not (array.dtype == np.uint8 or deep) or array.ndim not in (2, 3):
            raise DataError(
                f"{name}: expected a uint8 array (H, W) or (H, W, C), or uint16 (H, W), "
                f"got {array.dtype} {array.shape}"
            )
        return decode(Image.fromarray(array), mode, name, bounds), name, None

    def decode_bytes(self, data: bytes, name: str) -> np.ndarray:
        """An encoded image held in memory (an upload) as the uint8 array ``read`` gives."""
        return read_image_bytes(data, name, IMAGE_MODES[self.channels], self.patch.intensity_range)

    @torch.no_grad()
    def predict_one(
        self, image: ImageInput, group: str | None = None, index: int = 0, name: str = ""
    ) -> Prediction:
        """One image; ``name`` labels an already-read array in messages and results.

        Memory stays bounded on huge images (a line-scan frame of tens of megapixels):
        tiles are scored a batch at a time and each batch's maps are added into the
        image's map at once (:class:`anomaly.scoring.MapStitcher`), so what grows with
        the image is the image, its tiles (uint8) and the map, never a float copy of
        every tile's map."""
        array, read_name, path = self.read(image, index)
        name = name or read_name
        group = self.group_for(path, group)
        tiles, boxes, blank, _, _ = cut_tiles(array, self.patch, self.tile_size)
        all_blank = bool(blank.all())
        if all_blank:
            log.warning("%s: every tile is flat (patch.blank_std); scored anyway", name)
        keep = np.arange(len(tiles)) if all_blank else np.flatnonzero(~blank)
        boxes = [boxes[i] for i in keep]
        # One group per image: its shift and scale (float64, as in the score stage), applied
        # to the maps batch by batch and to the tile scores at the end.
        _, shift, scale = normalise(np.zeros(1), pd.Series([group]), self.normalisation)
        stitcher = None
        raw = []
        step = self.score_cfg.batch_size
        for start in range(0, len(keep), step):
            x = torch.from_numpy(tiles[keep[start : start + step]])
            s, m = self.model.score(x.float().div(255).to(self.device), self.score_cfg)
            raw.append(s.float().cpu().numpy())
            if m is None:
                continue
            # float16, as the score stage stores the maps the pixel metrics read
            maps = to_float16(m.float().cpu().numpy()).astype(np.float32)
            stitcher = stitcher or MapStitcher(array.shape[0], array.shape[1])
            batch_boxes = boxes[start : start + step]
            normalised = (maps - shift[:, None, None]) / scale[:, None, None]
            for tile_map, box in zip(normalised, batch_boxes, strict=True):
                stitcher.add(tile_map, *box)
        del tiles
        raw = np.concatenate(raw)
        if not np.isfinite(raw).all():
            raise DataError(f"{name}: the model gave NaN or infinite scores")
        frame = pd.DataFrame(boxes, columns=["x", "y", "w", "h"]).assign(image_id=0)
        scores = (raw.astype(np.float64) - shift) / scale  # what normalise() computes per row
        image_score = float(
            aggregate_images(
                frame.assign(score=scores), self.score_cfg.aggregate, self.score_cfg.aggregate_k
            )["score"].iloc[0]
        )
        full = mask = None
        if stitcher is not None:
            full = stitcher.result()
            for top in range(0, full.shape[0], 512):  # as the score stage stores it: float16
                full[top : top + 512] = to_float16(full[top : top + 512])
            if self.pixel_threshold is not None:
                mask = full >= self.pixel_threshold
        return Prediction(
            source=name,
            group=group,
            score=image_score,
            threshold=self.image_threshold,
            defect=image_score >= self.image_threshold,
            anomaly_map=full,
            mask=mask,
            pixel_threshold=self.pixel_threshold,
            blank=all_blank,
        )

    def predict(
        self,
        images: ImageInput | Sequence[ImageInput] | Iterable[ImageInput],
        group: str | None = None,
    ) -> list[Prediction]:
        """Score images (paths, uint8 arrays or PIL images); ``group`` overrides the group
        read from file names."""
        if isinstance(images, (str, Path, np.ndarray, Image.Image)):
            images = [images]
        return [self.predict_one(image, group, i) for i, image in enumerate(images)]


def load_detector(path: str | Path, device: str = "auto") -> Detector:
    """The detector stored in a bundle (``models/<model>.bundle``, ``anomaly export``)."""
    return Detector(load_bundle(path, "cpu"), device, str(path))

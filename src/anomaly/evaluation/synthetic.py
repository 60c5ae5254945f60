"""Simulated defects on held-out good tiles: a quality figure that needs no labelled defect.

Why: a user's own folder has no labelled defects, so nothing says which model (or which
setting) detects defects best on it. Held-out good validation tiles are known to be
normal; painting a defect into a copy of one with an exact mask gives a labelled
pair, and how well a model ranks the copies above the originals (image AUROC) and the
painted pixels above the rest (pixel AUROC) is a figure every run can compute.

Guard against the obvious bias: DRAEM trains on pasted textures in Perlin masks and the
denoising ``cae`` on soft ellipses of shifted brightness, so a figure built from one kind
would favour the model trained on it. The set mixes six kinds that inspection meets, at
three sizes and two contrasts, in equal shares:

- ``foreign``: another validation tile, rotated a quarter turn and inverted, pasted into
  an ellipse (contamination, a foreign body);
- ``stain``: a smooth brightening or darkening of low to medium contrast; the mask is
  where the change is at least 30% of its peak;
- ``scratch``: a thin straight line (1 or 2 px) brighter or darker than the surface;
- ``smear``: the texture blurred away inside an ellipse;
- ``hole``: an ellipse of nearly constant dark or bright value (a hole, a burn, a glint);
- ``colour`` (RGB only): the chroma shifted inside an ellipse, luminance unchanged.

Table rows (no pixels) get one kind, ``shift``: one to three features moved by 3 to 6
standard deviations.

Sizes are fractions of a reference length of 64 image pixels (``REFERENCE_PIXELS``), not
of the tile: a candidate that cuts the images into bigger tiles, keeps them whole or
upsamples them is graded on the same defects, in image pixels, as one with 64-px tiles.
Sized from the tile, the figure favoured bigger tiles (PaDiM on real photographs: the
figure rose from 0.740 to 0.830 with whole-crop tiles while its test AUROC fell). See
:func:`defect_geometry`.

Every variant draws from its own generator ``[seed, image_id, variant]``, so the set does
not depend on batch sizes, devices or the order tiles are scored in.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

GRAY_KINDS = ("foreign", "stain", "scratch", "smear", "hole")
RGB_KINDS = (*GRAY_KINDS, "colour")
TABLE_KINDS = ("shift",)

SIZES = {"small": (0.04, 0.08), "medium": (0.08, 0.15), "large": (0.15, 0.25)}  # radius / reference
REFERENCE_PIXELS = 64  # image pixels a defect's size is a fraction of (at most the tile)
CONTRASTS = {"low": (0.08, 0.2), "high": (0.25, 0.5)}
STAIN_MASK_LEVEL = 0.3  # a stain's mask: change >= 30% of its peak change
_SEED_TAG = 23  # keeps these generators apart from every other use of `seed`


def kinds_for(channels: int, tabular: bool) -> tuple[str, ...]:
    """The defect kinds that make sense for this data."""
    if tabular:
        return TABLE_KINDS
    return RGB_KINDS if channels == 3 else GRAY_KINDS


def plan_variants(
    tiles: pd.DataFrame, per_image: int, kinds: tuple[str, ...], seed: int
) -> pd.DataFrame:
    """Which tile of which image gets which defect: one row (``variant, image_id,
    patch_id, donor_patch_id, kind``) per defective variant. ``per_image`` variants of every image in ``tiles`` (good validation tiles,
    with ``image_id`` and ``patch_id``): each variant picks one tile of its image and a
    donor tile of another image (the ``foreign`` kind's source). Kinds cycle over the
    whole set so that every kind gets an equal share."""
    rows = []
    by_image = {int(i): g["patch_id"].to_numpy() for i, g in tiles.groupby("image_id", sort=True)}
    all_ids = tiles["patch_id"].to_numpy()
    all_images = tiles["image_id"].to_numpy()
    counter = 0
    for image_id, own in by_image.items():
        for v in range(per_image):
            rng = np.random.default_rng([seed, _SEED_TAG, image_id, v])
            others = all_ids[all_images != image_id]
            donor_pool = others if len(others) else own
            rows.append(
                {
                    "variant": counter,
                    "image_id": image_id,
                    "patch_id": int(own[rng.integers(len(own))]),
                    "donor_patch_id": int(donor_pool[rng.integers(len(donor_pool))]),
                    "kind": kinds[counter % len(kinds)],
                }
            )
            counter += 1
    columns = ["variant", "image_id", "patch_id", "donor_patch_id", "kind"]
    return pd.DataFrame(rows, columns=columns)


def defect_geometry(
    box_wh: np.ndarray,
    image_hw: np.ndarray,
    image_size: int | None,
    tile_side: int,
    resolution: int | Literal["auto", "native"] = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Each tile's (reference length, upsampling), both in stored tile pixels.

    ``box_wh`` holds each tile's box width and height in original image pixels
    (``patches.csv``), ``image_hw`` its image's height and width (``images.csv``),
    ``image_size`` is ``patch.image_size`` (the working image is that square) and
    ``tile_side`` the stored tile side. ``resolution`` is ``score.synthetic_resolution``,
    the square side at which the reference is measured: ``auto`` the working image's
    (``image_size``), ``native`` the image's own, or that side.

    The reference, what ``SIZES`` and the scratch length are fractions of, is 64 pixels
    of the coarser of the image's own and the reference resolution (an upsampled image
    keeps 64 of its own pixels, a downsampled one 64 reference pixels), capped at the
    working image's shorter side and at the tile. So a 64-px tile at the image's
    resolution, a tile smaller than that and a whole image smaller than 64 px keep the
    tile side; tiles at or below the image's resolution (the default fabric, MVTec at
    ``image_size: 256``) get the figures tile-relative sizes gave, byte for byte.

    Why the reference resolution is separate from the working one: candidates that
    resize the images differently must be graded on the same defects. Measured at the
    working resolution, the whole image shrunk from 512 to 256 px got defects twice as
    large in image pixels as 64-px tiles at the image's resolution, and the figure
    ranked it first on three of four 512-px parts where its test AUROC was lower
    (``label_free_parts_512_working.jsonl``). ``anomaly select`` therefore pins one reference
    resolution for every candidate.

    The upsampling is how many tile pixels one image pixel became (1 when the tile is
    at or below the image's resolution): :func:`paint` draws the defect at the image's
    own resolution and resamples it like the image, because a real defect in the file
    goes through the same resize; drawn at the upsampled resolution its edges would be
    sharper than anything an upsampled image holds, and any model would find them."""
    box_wh = np.asarray(box_wh, dtype=np.float64).reshape(-1, 2)
    image_hw = np.asarray(image_hw, dtype=np.float64).reshape(-1, 2)
    h0, w0 = image_hw[:, 0], image_hw[:, 1]
    work_h = np.full_like(h0, image_size) if image_size else h0
    work_w = np.full_like(w0, image_size) if image_size else w0
    upscale = np.minimum(work_h / h0, work_w / w0)  # working pixels per image pixel
    reference_size = {"auto": image_size, "native": None}.get(resolution, resolution)
    ref_h = np.full_like(h0, reference_size) if reference_size else h0
    ref_w = np.full_like(w0, reference_size) if reference_size else w0
    ref_scale = np.minimum(ref_h / h0, ref_w / w0)  # reference pixels per image pixel
    # 64 px at the coarser of the image's own and the reference resolution, in working
    # pixels (written so that a reference at the working resolution gives 64 exactly)
    in_reference = np.where(
        ref_scale >= 1.0, REFERENCE_PIXELS * upscale, REFERENCE_PIXELS * (upscale / ref_scale)
    )
    in_work = np.minimum(in_reference, np.minimum(work_h, work_w))
    tile_in_work = np.maximum(box_wh[:, 0] * work_w / w0, box_wh[:, 1] * work_h / h0)
    reference = np.minimum(in_work * tile_side / tile_in_work, float(tile_side))
    upsampling = np.maximum(1.0, tile_side / box_wh.max(axis=1))
    # rounding of the boxes must not move a tile-sized reference off the tile side, nor
    # a tile at the image's resolution onto a resampling
    reference = np.where(
        np.isclose(reference, tile_side, rtol=1e-6, atol=0.0), float(tile_side), reference
    )
    upsampling = np.where(np.isclose(upsampling, 1.0, rtol=0.0, atol=1e-3), 1.0, upsampling)
    return reference, upsampling


def _resample(planes: np.ndarray, side: int, method: int = Image.BILINEAR) -> np.ndarray:
    """(C, s, s) float planes to (C, side, side) with PIL's filter ``method``; bilinear
    is the resampling patchify gives images and tiles."""
    return np.stack(
        [
            np.asarray(
                Image.fromarray(plane.astype(np.float32), mode="F").resize((side, side), method),
                dtype=np.float64,
            )
            for plane in planes
        ]
    )


INVERSE_STEPS = 3  # refinements of the image-resolution estimate (see _at_image_resolution)


def _at_image_resolution(tile: np.ndarray, coarse: int) -> np.ndarray:
    """An upsampled tile back at its image's resolution: the image that patchify's
    bilinear upsampling turns into ``tile``.

    A plain downsampling blurs (a box average of a bilinear upsampling is the image
    filtered by about [1/8, 3/4, 1/8]), and a defect drawn on a blurred estimate keeps
    the lost detail as a ghost inside it (a hole with the texture showing through).
    So the estimate is refined until upsampling it and averaging back gives the tile's
    own average (Van Cittert's iteration): on 2x-upsampled crops of three scikit-image
    textures the painted tiles then match drawing on the original crop and upsampling
    it to within about one 8-bit level (mean absolute error 0.001-0.003 inside the
    mask, against up to 0.03 without the refinement)."""
    side = tile.shape[-1]
    target = _resample(tile, coarse, Image.BOX)
    estimate = target.copy()
    for _ in range(INVERSE_STEPS):
        back = _resample(_resample(estimate, side), coarse, Image.BOX)
        estimate = np.clip(estimate + (target - back), 0.0, 1.0)
    return estimate


def _ellipse(rng: np.random.Generator, side: int, radius: float) -> np.ndarray:
    """A filled ellipse (major radius ``radius``, minor 0.4-1.0 of it, any angle) inside
    the tile; never empty."""
    radius = max(radius, 1.5)
    minor = radius * rng.uniform(0.4, 1.0)
    cy, cx = rng.uniform(radius, side - radius, size=2)
    angle = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[:side, :side].astype(np.float64) + 0.5
    u = (yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
    v = -(yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
    mask = (u / radius) ** 2 + (v / minor) ** 2 <= 1.0
    if not mask.any():
        mask[int(cy), int(cx)] = True
    return mask


def _radius(rng: np.random.Generator, reference: float) -> float:
    low, high = SIZES[rng.choice(list(SIZES))]
    return rng.uniform(low, high) * reference


def _contrast(rng: np.random.Generator) -> float:
    low, high = CONTRASTS[rng.choice(list(CONTRASTS))]
    return float(rng.uniform(low, high))


def _away(tile: np.ndarray, mask: np.ndarray) -> float:
    """+1 to brighten, -1 to darken: away from the region's mean, so the change is not
    clipped away on a bright or dark surface."""
    return -1.0 if tile[:, mask].mean() > 0.5 else 1.0


def paint(
    tile: np.ndarray,
    donor: np.ndarray,
    kind: str,
    rng: np.random.Generator,
    reference: float | None = None,
    upsampling: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(defective copy, boolean mask) of one tile (C, S, S, float in [0, 1]).

    Radii and scratch lengths are fractions of ``reference`` (tile pixels, at most the
    side; None: the side). With ``upsampling`` > 1 (tile pixels per image pixel, see
    :func:`defect_geometry`) the defect is drawn on the tile shrunk to the image's
    resolution and its change resampled back, so scratch and blur widths are in image
    pixels and edges are as soft as the resize makes them. Pixels outside the mask are
    returned unchanged, bit for bit; the copy is quantised to the 8-bit levels every
    stored tile has."""
    side = tile.shape[-1]
    reference = float(side) if reference is None else min(float(reference), float(side))
    if upsampling > 1.0:
        coarse = max(8, int(round(side / upsampling)))
        small = _at_image_resolution(tile, coarse).astype(np.float32)
        # only a foreign body reads the donor
        donor_small = (
            _at_image_resolution(donor, coarse).astype(np.float32) if kind == "foreign" else small
        )
        painted, small_mask = paint(small, donor_small, kind, rng, reference * coarse / side)
        # upsampling is linear: the painted image, upsampled, is the tile plus the
        # upsampled change
        change = _resample(painted.astype(np.float64) - small, side)
        # every pixel the resampled change can reach: a tile pixel depends only on the
        # coarse pixels around it, and those are unchanged outside the coarse mask
        mask = _resample(small_mask[None].astype(np.float64), side)[0] > 0
        out = tile.astype(np.float64).copy()
        out[:, mask] += change[:, mask]
    else:
        out, mask = _draw(tile, donor, kind, rng, reference)
    out = np.round(np.clip(out, 0.0, 1.0) * 255.0) / 255.0
    # Only masked pixels may differ (clipping and rounding could touch nothing else, but
    # the contract is exact masks, so it is enforced, not assumed).
    out[:, ~mask] = tile[:, ~mask]
    return out.astype(np.float32), mask


def _draw(
    tile: np.ndarray, donor: np.ndarray, kind: str, rng: np.random.Generator, reference: float
) -> tuple[np.ndarray, np.ndarray]:
    """One defect of ``kind`` drawn on a float64 copy of ``tile`` at the tile's own
    resolution, and its mask; :func:`paint` quantises it and enforces the mask."""
    channels, side = tile.shape[0], tile.shape[-1]
    out = tile.astype(np.float64).copy()
    if kind == "stain":
        sigma = _radius(rng, reference) / 2 + 1.0
        blob = np.zeros((side, side))
        cy, cx = rng.integers(0, side, size=2)
        blob[cy, cx] = 1.0
        blob = ndimage.gaussian_filter(blob, sigma, mode="constant")
        blob /= blob.max()
        mask = blob >= STAIN_MASK_LEVEL
        out[:, mask] += _away(tile, mask) * _contrast(rng) * blob[mask]
    elif kind == "scratch":
        length = rng.uniform(0.3, 0.8) * reference
        angle = rng.uniform(0, np.pi)
        half = length / 2
        cy, cx = rng.uniform(0, side, size=2)
        dy, dx = np.sin(angle), np.cos(angle)
        yy, xx = np.mgrid[:side, :side].astype(np.float64) + 0.5
        along = np.clip((yy - cy) * dy + (xx - cx) * dx, -half, half)
        dist = np.hypot(yy - (cy + along * dy), xx - (cx + along * dx))
        mask = dist <= rng.choice([0.5, 1.0])  # 1 or 2 px wide
        if not mask.any():
            mask[min(int(cy), side - 1), min(int(cx), side - 1)] = True
        out[:, mask] += _away(tile, mask) * max(_contrast(rng), 0.2)
    else:
        mask = _ellipse(rng, side, _radius(rng, reference))
        if kind == "foreign":
            pasted = 1.0 - np.rot90(donor.astype(np.float64), 1, axes=(1, 2))
            out[:, mask] = pasted[:, mask]
        elif kind == "smear":
            sigma = rng.uniform(1.5, 4.0)
            blurred = ndimage.gaussian_filter(out, (0, sigma, sigma), mode="reflect")
            out[:, mask] = blurred[:, mask]
        elif kind == "hole":
            level = (
                rng.uniform(0.02, 0.12) if tile[:, mask].mean() > 0.5 else rng.uniform(0.88, 0.98)
            )
            noise = rng.normal(0, 0.01, size=(channels, int(mask.sum())))
            out[:, mask] = level + noise
        elif kind == "colour":
            if channels != 3:
                raise ValueError("the colour defect needs RGB tiles")
            direction = rng.normal(size=3)
            direction -= direction.mean()  # equal shift up and down: luminance kept
            direction /= np.abs(direction).max()
            out[:, mask] += (direction * _contrast(rng))[:, None]
        else:
            raise ValueError(f"unknown synthetic defect kind {kind!r}")
    return out, mask


def shift_row(row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A table row (standardised features, any shape) with 1-3 features moved by 3-6 sd."""
    out = row.astype(np.float32).copy()
    flat = out.reshape(-1)
    picks = rng.choice(flat.size, size=min(flat.size, int(rng.integers(1, 4))), replace=False)
    flat[picks] += rng.choice([-1.0, 1.0], size=len(picks)) * rng.uniform(3, 6, size=len(picks))
    return out


def make_variants(
    plan: pd.DataFrame,
    tiles: np.ndarray,
    donors: np.ndarray,
    seed: int,
    tabular: bool,
    geometry: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Defective copies (V, C, S, S float32) of ``tiles`` (the plan's tiles, model input)
    and their masks (V, S, S bool; None for tables). ``geometry``: each tile's
    :func:`defect_geometry` (None: the tile side, no resampling)."""
    out = np.empty_like(tiles, dtype=np.float32)
    masks = None if tabular else np.zeros((len(tiles), *tiles.shape[-2:]), dtype=bool)
    for i, row in enumerate(plan.itertuples()):
        rng = np.random.default_rng([seed, _SEED_TAG, int(row.image_id), int(row.variant), 1])
        if tabular:
            out[i] = shift_row(tiles[i], rng)
        else:
            reference, upsampling = (
                (None, 1.0) if geometry is None else (float(geometry[0][i]), float(geometry[1][i]))
            )
            out[i], masks[i] = paint(tiles[i], donors[i], row.kind, rng, reference, upsampling)
    return out, masks

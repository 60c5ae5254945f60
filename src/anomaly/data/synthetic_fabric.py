"""A deterministic generator of AITEX-like fabric rolls with pixel-exact defect masks.

Why synthetic: the default pipeline must run offline in minutes, yet look like
the real inspection problem. The rolls are woven textures (yarns with rounded
cross-sections interlaced by a weave pattern), and the defects copy AITEX's
classes in shape and in subtlety, with contrast ranges set in params so that
models can be compared on harder or easier data.

The output uses AITEX's own folder layout, so :mod:`anomaly.data.aitex` reads
it with the same code that reads the real database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ..io import atomic_dir, save_png
from ..params import SyntheticFabricConfig
from .aitex import DEFECT_CODES, FABRIC_FOLDERS

# A pixel belongs to a defect's mask where the defect's weight reaches this level:
# low enough that the mask covers every visibly changed pixel.
MASK_LEVEL = 0.2

FABRIC_CODES = {"plain": "01", "twill": "02", "irregular": "03", "satin": "04"}


@dataclass(frozen=True)
class Yarns:
    """Which yarn covers each position along one axis, and where inside it."""

    index: np.ndarray  # yarn number per pixel
    phase: np.ndarray  # 0..1 across the yarn's width
    count: int


def _yarns(length: int, period: float, jitter: float, rng: np.random.Generator) -> Yarns:
    n = int(2 * length / period) + 4  # widths are >= period / 2, so this always covers
    widths = np.clip(period * (1 + jitter * rng.standard_normal(n)), period * 0.5, period * 2)
    bounds = np.concatenate([[0.0], np.cumsum(widths)]) - rng.uniform(0, period)
    pos = np.arange(length) + 0.5
    index = np.searchsorted(bounds, pos, side="right") - 1
    phase = (pos - bounds[index]) / widths[index]
    return Yarns(index=index, phase=phase, count=n)


def _weave_pattern(kind: str) -> np.ndarray:
    """1 where the warp (vertical) yarn lies on top, for one repeat of the weave."""
    if kind in ("plain", "irregular"):
        return np.array([[1, 0], [0, 1]], dtype=bool)
    if kind == "twill":
        return np.array([[((i + j) % 4) < 2 for i in range(4)] for j in range(4)], dtype=bool)
    if kind == "satin":
        return np.array([[(2 * i - j) % 5 != 0 for i in range(5)] for j in range(5)], dtype=bool)
    raise ValueError(f"unknown fabric {kind!r}")


_FABRIC_STYLE = {
    # period (px per yarn), width jitter, slub strength, base brightness
    "plain": (6.0, 0.04, 0.03, 0.58),
    "twill": (5.0, 0.04, 0.03, 0.52),
    "irregular": (7.0, 0.18, 0.08, 0.55),
    "satin": (4.0, 0.03, 0.02, 0.62),
}


def weave(
    height: int, width: int, kind: str, rng: np.random.Generator, noise: float
) -> tuple[np.ndarray, Yarns, Yarns]:
    """A float image in [0, 1] of woven fabric, with its warp and weft yarn layout."""
    period, jitter, slub, base = _FABRIC_STYLE[kind]
    period *= rng.uniform(0.95, 1.05)
    warp = _yarns(width, period, jitter, rng)
    weft = _yarns(height, period, jitter, rng)
    pattern = _weave_pattern(kind)
    reps = pattern.shape[0]
    on_top = pattern[weft.index[:, None] % reps, warp.index[None, :] % reps]

    warp_level = 1 + 0.04 * rng.standard_normal(warp.count)
    weft_level = 0.93 + 0.04 * rng.standard_normal(weft.count)
    # Slubs: slow brightness changes along each yarn (strong for irregular yarn).
    warp_slub = ndimage.gaussian_filter1d(rng.standard_normal((warp.count, height)), 12, axis=1)
    weft_slub = ndimage.gaussian_filter1d(rng.standard_normal((weft.count, width)), 12, axis=1)
    warp_slub *= slub / (warp_slub.std() + 1e-9)
    weft_slub *= slub / (weft_slub.std() + 1e-9)

    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    warp_val = (warp_level[warp.index][None, :] + warp_slub[warp.index[None, :], rows]) * (
        0.55 + 0.45 * np.sin(np.pi * warp.phase)[None, :]
    )
    weft_val = (weft_level[weft.index][:, None] + weft_slub[weft.index[:, None], cols]) * (
        0.55 + 0.45 * np.sin(np.pi * weft.phase)[:, None]
    )
    img = base * np.where(on_top, warp_val, weft_val)
    img = ndimage.gaussian_filter(img, 0.6)
    img += noise * rng.standard_normal(img.shape)
    return img, warp, weft


def _soft_blob(
    shape: tuple[int, int],
    center: tuple[float, float],
    radii: tuple[float, float],
    angle: float,
    rng: np.random.Generator,
    roughness: float,
) -> np.ndarray:
    """An irregular blob: an ellipse whose edge is perturbed by smooth noise (values 0..1)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    dy, dx = yy - center[0], xx - center[1]
    c, s = np.cos(angle), np.sin(angle)
    u = (c * dx + s * dy) / radii[1]
    v = (-s * dx + c * dy) / radii[0]
    dist = np.sqrt(u**2 + v**2)
    wobble = ndimage.gaussian_filter(rng.standard_normal(shape), max(radii) / 2)
    wobble /= np.abs(wobble).max() + 1e-9
    return np.clip(1.5 - dist * (1 + roughness * wobble) * 1.5, 0, 1)


def _missing_yarn(img: np.ndarray, mask: np.ndarray, c: float) -> None:
    """Where a yarn is missing the weave pattern disappears: a flat, darker gap."""
    flat = ndimage.uniform_filter(img, 9)
    img[mask] = flat[mask] * (1 - c)


def _broken_end(img, rng, c, warp: Yarns, weft: Yarns):
    h, w = img.shape
    x0 = rng.integers(8, w - 8)
    yarn = warp.index[x0]
    cols = warp.index == yarn
    length = rng.integers(h // 4, h + 1)
    y0 = rng.integers(0, h - length + 1)
    mask = np.zeros_like(img, dtype=bool)
    mask[y0 : y0 + length, cols] = True
    _missing_yarn(img, mask, c)
    return mask


def _broken_pick(img, rng, c, warp: Yarns, weft: Yarns):
    h, w = img.shape
    y = rng.integers(8, h - 8)
    yarn = weft.index[y]
    rows = weft.index == yarn
    length = rng.integers(w // 16, w // 4 + 1)
    x0 = rng.integers(0, w - length + 1)
    mask = np.zeros_like(img, dtype=bool)
    mask[rows, x0 : x0 + length] = True
    _missing_yarn(img, mask, c)
    return mask


def _random_center(img, rng, margin):
    h, w = img.shape
    return rng.uniform(margin, h - margin), rng.uniform(margin, w - margin)


def _fuzzyball(img, rng, c, warp, weft):
    r = rng.uniform(4, 9)
    alpha = _soft_blob(
        img.shape,
        _random_center(img, rng, r + 2),
        (r, r * rng.uniform(0.8, 1.3)),
        rng.uniform(0, np.pi),
        rng,
        0.6,
    )
    fluff = ndimage.gaussian_filter(img, 2.0) + c * rng.choice([-1, 1])
    img[:] = img * (1 - alpha) + fluff * alpha
    return alpha > MASK_LEVEL


def _contamination(img, rng, c, warp, weft):
    r = rng.uniform(10, 28)
    alpha = _soft_blob(
        img.shape,
        _random_center(img, rng, r / 2),
        (r, r * rng.uniform(0.6, 1.6)),
        rng.uniform(0, np.pi),
        rng,
        0.3,
    )
    img -= c * alpha
    return alpha > MASK_LEVEL


def _crease(img, rng, c, warp, weft):
    h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    x0 = rng.uniform(0.1 * w, 0.9 * w)
    slope = rng.uniform(-0.3, 0.3)
    sigma = rng.uniform(4, 8)
    dist = xx - (x0 + slope * (yy - h / 2))
    profile = np.exp(-0.5 * (dist / sigma) ** 2)
    length = rng.uniform(0.5, 1.0) * h
    y0 = rng.uniform(0, h - length)
    along = (yy >= y0) & (yy <= y0 + length)
    profile = profile * along
    img -= c * profile
    return profile > MASK_LEVEL


def _knots(img, rng, c, warp, weft):
    r = rng.uniform(3, 5.5)
    alpha = _soft_blob(
        img.shape,
        _random_center(img, rng, r + 2),
        (r, r * rng.uniform(1.0, 1.8)),
        rng.uniform(0, np.pi),
        rng,
        0.3,
    )
    img += c * alpha
    return alpha > MASK_LEVEL


def _nep(img, rng, c, warp, weft):
    r = rng.uniform(2.5, 3.5)
    alpha = _soft_blob(img.shape, _random_center(img, rng, r + 2), (r, r), 0.0, rng, 0.1)
    img += c * alpha * rng.choice([-1, 1])
    return alpha > MASK_LEVEL


DEFECT_PAINTERS: dict[str, Callable] = {
    "broken_end": _broken_end,
    "broken_pick": _broken_pick,
    "fuzzyball": _fuzzyball,
    "contamination": _contamination,
    "crease": _crease,
    "knots": _knots,
    "nep": _nep,
}


def make_roll(
    cfg: SyntheticFabricConfig, seed: int, index: int, fabric: str, defect: str | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """One roll as uint8 (and its boolean mask when ``defect`` is given).

    Each roll draws from its own generator seeded by (seed, index), so any roll
    can be regenerated alone and changing the count keeps the earlier rolls.
    """
    rng = np.random.default_rng([seed, index])
    img, warp, weft = weave(cfg.height, cfg.width, fabric, rng, cfg.noise)
    mask = None
    if defect is not None:
        lo, hi = cfg.contrast.get(defect, [0.3, 0.5])
        count = rng.integers(cfg.defects_per_image[0], cfg.defects_per_image[1] + 1)
        mask = np.zeros(img.shape, dtype=bool)
        for _ in range(count):
            mask |= DEFECT_PAINTERS[defect](img, rng, rng.uniform(lo, hi), warp, weft)
    out = np.clip(img * 255, 0, 255).round().astype(np.uint8)
    return out, mask


def generate(cfg: SyntheticFabricConfig, seed: int, root: str | Path) -> Path:
    """Write the whole synthetic database under ``root`` in AITEX layout, atomically."""
    root = Path(root)
    with atomic_dir(root) as tmp:
        for sub in ("NODefect_images", "Defect_images", "Mask_images"):
            (tmp / sub).mkdir()
        image_id = 0
        for k in range(cfg.n_good):
            fabric = cfg.fabrics[k % len(cfg.fabrics)]
            code = FABRIC_CODES[fabric]
            img, _ = make_roll(cfg, seed, image_id, fabric, None)
            folder = tmp / "NODefect_images" / FABRIC_FOLDERS[code]
            folder.mkdir(exist_ok=True)
            save_png(folder / f"{image_id:04d}_000_{code}.png", img)
            image_id += 1
        for k in range(cfg.n_defect):
            fabric = cfg.fabrics[k % len(cfg.fabrics)]
            defect = cfg.defects[(k // len(cfg.fabrics)) % len(cfg.defects)]
            code = FABRIC_CODES[fabric]
            dcode = DEFECT_CODES[defect]
            img, mask = make_roll(cfg, seed, image_id, fabric, defect)
            stem = f"{image_id:04d}_{dcode}_{code}"
            save_png(tmp / "Defect_images" / f"{stem}.png", img)
            save_png(tmp / "Mask_images" / f"{stem}_mask.png", (mask * 255).astype(np.uint8))
            image_id += 1
    return root

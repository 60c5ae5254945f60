"""Validation on real photographs, offline: three texture photos from scikit-image.

scikit-image ships real grayscale photographs of brick, grass and gravel
(512 x 512) inside its wheel, so a benchmark on real textures needs no network.
This script turns each into a folder dataset in MVTec layout and runs the
pipeline's own stages on it (``ablate_features.run``: train -> score ->
threshold -> evaluate):

- train: ``--train`` random 128 x 128 crops of the photo's top half;
- test: ``--test`` good crops and as many defective crops of the bottom half
  (regions the model never saw), the defects drawn on the real texture, a
  quarter each: ``foreign`` (a disc of another photo pasted in: contamination),
  ``stain`` (a smooth low-contrast brightening or darkening), ``scratch`` (a thin
  line) and ``smear`` (the texture blurred away in a disc), with their masks.

The defects are simulated, the textures are not: this checks that a default
chosen on the synthetic fabric still holds on real texture statistics
(perspective, irregular grain, natural noise). A benchmark, not a test.

    PYTHONPATH=src python benchmarks/real_textures.py --model anogan --model cae
    PYTHONPATH=src python benchmarks/real_textures.py --variants "patchcore lite0 random stage2+3"
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ablate_features  # noqa: E402

TEXTURES = ("brick", "grass", "gravel")
DEFECTS = ("foreign", "stain", "scratch", "smear")
CROP = 128


def _photo(name: str) -> np.ndarray:
    import skimage.data

    return getattr(skimage.data, name)().astype(np.float32) / 255.0


def _crop(
    photo: np.ndarray, rows: tuple[int, int], rng: np.random.Generator, side: int = CROP
) -> np.ndarray:
    top = rng.integers(rows[0], rows[1] - side + 1)
    left = rng.integers(0, photo.shape[1] - side + 1)
    return photo[top : top + side, left : left + side].copy()


def _disc(rng: np.random.Generator, radius: float, side: int = CROP) -> np.ndarray:
    cy, cx = rng.uniform(radius + 4, side - radius - 4, size=2)
    yy, xx = np.mgrid[:side, :side]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2


def draw_defect(
    crop: np.ndarray, kind: str, other: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(defective crop, boolean mask) for one defect of ``kind`` on a square real texture
    crop; sizes in pixels whatever the crop's side (a defect has a physical size)."""
    out = crop.copy()
    side = crop.shape[0]
    if kind == "foreign":
        mask = _disc(rng, rng.uniform(6, 14), side)
        out[mask] = _crop(other, (0, other.shape[0]), rng, side)[mask]
    elif kind == "stain":
        sigma = rng.uniform(5, 10)
        blob = np.zeros_like(crop)
        cy, cx = rng.uniform(3 * sigma, side - 3 * sigma, size=2).astype(int)
        blob[cy, cx] = 1.0
        blob = ndimage.gaussian_filter(blob, sigma)
        blob /= blob.max()
        out = crop + rng.choice([-1, 1]) * rng.uniform(0.15, 0.35) * blob
        mask = blob > 0.3
    elif kind == "scratch":
        length, angle = rng.uniform(25, 60), rng.uniform(0, np.pi)
        cy, cx = rng.uniform(length / 2 + 2, side - length / 2 - 2, size=2)
        t = np.linspace(-length / 2, length / 2, int(length) * 3)
        line = np.zeros_like(crop, dtype=bool)
        line[
            np.round(cy + t * np.sin(angle)).astype(int),
            np.round(cx + t * np.cos(angle)).astype(int),
        ] = True
        mask = ndimage.binary_dilation(line) if rng.random() < 0.5 else line  # 1 or 3 px
        out[mask] = np.clip(crop[mask] + rng.choice([-1, 1]) * rng.uniform(0.25, 0.45), 0, 1)
    elif kind == "smear":
        mask = _disc(rng, rng.uniform(8, 14), side)
        out[mask] = ndimage.gaussian_filter(crop, 3.0)[mask]
    else:
        raise ValueError(kind)
    return np.clip(out, 0, 1), mask


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(array * 255).astype(np.uint8)).save(path)


def make_dataset(root: Path, texture: str, n_train: int, n_test: int, seed: int) -> Path:
    """Write ``root/<texture>`` in MVTec layout and return it."""
    rng = np.random.default_rng([seed, TEXTURES.index(texture)])
    photo = _photo(texture)
    other = _photo(TEXTURES[(TEXTURES.index(texture) + 1) % len(TEXTURES)])
    half = photo.shape[0] // 2
    base = root / texture
    for i in range(n_train):
        _save(_crop(photo, (0, half), rng), base / "train" / "good" / f"{i:03d}.png")
    for i in range(n_test):
        _save(_crop(photo, (half, photo.shape[0]), rng), base / "test" / "good" / f"{i:03d}.png")
    for i in range(n_test):
        kind = DEFECTS[i % len(DEFECTS)]
        crop, mask = draw_defect(_crop(photo, (half, photo.shape[0]), rng), kind, other, rng)
        _save(crop, base / "test" / kind / f"{i:03d}.png")
        _save(mask.astype(np.float32), base / "ground_truth" / kind / f"{i:03d}_mask.png")
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--textures", nargs="*", default=list(TEXTURES), choices=TEXTURES)
    parser.add_argument("--model", action="append", default=[], help="a model, its defaults")
    parser.add_argument("--variants", nargs="*", default=[], choices=list(ablate_features.VARIANTS))
    parser.add_argument("--train", type=int, default=100, help="good training crops")
    parser.add_argument("--test", type=int, default=40, help="good and defective test crops")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-S", "--set", action="append", default=[], help="param override")
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    args = parser.parse_args()
    for model in args.model:
        ablate_features.VARIANTS[f"{model} (defaults)"] = (model, {})
    variants = [*args.variants, *(f"{m} (defaults)" for m in args.model)]
    if not variants:
        parser.error("name at least one --model or --variants")
    out = args.out.resolve() if args.out else None
    os.environ.setdefault("TQDM_DISABLE", "1")
    with tempfile.TemporaryDirectory() as data_root:
        for texture in args.textures:
            base = make_dataset(Path(data_root), texture, args.train, args.test, args.seed)
            ablate_features.run(
                "folder", variants, [*args.set, f"dataset.source={base}"], out, label=texture
            )


if __name__ == "__main__":
    main()

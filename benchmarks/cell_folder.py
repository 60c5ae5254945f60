"""A folder in MVTec layout that no benchmark was tuned on: 16-bit grayscale, not square.

scikit-image's ``cell`` (a 660 x 550 grayscale microscope image, offline in its
wheel) cut into 160 x 120 crops saved as 16-bit PNGs, as a microscope or an
industrial camera writes them: 30 training crops from the top half, 12 good and 12
defective test crops from the bottom half, the defects drawn by
``real_textures.draw_defect`` (foreign disc, stain, scratch, smear) on the crop's
left 120 x 120 square, with exact masks. Used to check ``anomaly select`` from a
fresh clone as a user would run it on a small folder of their own::

    python benchmarks/cell_folder.py /tmp/cell_data
    python -m anomaly select -S dataset.name=mvtec -S dataset.source=/tmp/cell_data \\
        -S dataset.category=cell
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_textures  # noqa: E402

HEIGHT, WIDTH = 120, 160


def _save16(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(array, 0, 1) * 65535).astype(np.uint16)).save(path)


def make(root: Path, n_train: int = 30, n_test: int = 12, seed: int = 7) -> Path:
    """Write ``root/cell`` (see the module docstring) and return it."""
    import skimage.data

    rng = np.random.default_rng(seed)
    image = skimage.data.cell().astype(np.float32) / 255.0
    half = image.shape[0] // 2
    base = root / "cell"

    def crop(rows: tuple[int, int]) -> np.ndarray:
        top = rng.integers(rows[0], rows[1] - HEIGHT + 1)
        left = rng.integers(0, image.shape[1] - WIDTH + 1)
        return image[top : top + HEIGHT, left : left + WIDTH].copy()

    for i in range(n_train):
        _save16(crop((0, half)), base / "train/good" / f"{i:03d}.png")
    for i in range(n_test):
        _save16(crop((half, image.shape[0])), base / "test/good" / f"{i:03d}.png")
    real_textures.CROP = HEIGHT  # draw_defect places defects inside a CROP square
    for i in range(n_test):
        kind = real_textures.DEFECTS[i % len(real_textures.DEFECTS)]
        out = crop((half, image.shape[0]))
        square, mask = real_textures.draw_defect(out[:, :HEIGHT].copy(), kind, image, rng)
        out[:, :HEIGHT] = square
        full = np.zeros((HEIGHT, WIDTH), bool)
        full[:, :HEIGHT] = mask
        _save16(out, base / "test" / kind / f"{i:03d}.png")
        mask_path = base / "ground_truth" / kind / f"{i:03d}_mask.png"
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((full * 255).astype(np.uint8)).save(mask_path)
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="write <root>/cell here")
    print(make(parser.parse_args().root))


if __name__ == "__main__":
    main()

"""Held out: does the label-free pick hold on photographs no default was chosen on?

``label_free_real.py``'s seven texture photographs chose the defaults, the candidate
list and the label-free figure's design. These seven photographs never took part in a
choice, and they ask what textures do not: where things belong. Each is a *part*, the
way inspection photographs one (MVTec's object categories): the photograph resized to
``MARGIN`` times the view's side on its shorter side and cut square is the part, and
every sample is a 128-px view of it (``--view``) as the part lies under the camera
(shifted up to 8 px each way, turned up to 5 degrees, 4% nearer or farther), with a
random gain and offset on brightness (lighting) and Gaussian sensor noise. Without the
turn and the scale every candidate found nearly every defect (image AUROC 0.97-1.0):
the part never varied. Training views, good test views and defective test views are
all drawn this way, independently; the defects are ``real_textures.draw_defect``'s (a disc of the next
photograph pasted in, a stain, a scratch, a smear), in every channel of a colour
photograph, with exact masks.

The photographs, all shipped inside wheels the project installs: ``camera``, ``coins``
and ``cell`` (grayscale, scikit-image), ``coffee`` and ``chelsea`` (colour,
scikit-image), ``flower`` (colour, scikit-learn's sample images) and ``hopper`` (colour,
matplotlib's sample data). Rows, ``--summary`` and ``--montage`` as in
``label_free_real.py``, whose runner and summary this reuses.

    PYTHONPATH=src python benchmarks/label_free_parts.py --out benchmarks/results/label_free_parts.jsonl
    PYTHONPATH=src python benchmarks/label_free_parts.py --model patchcore --tag "whole image 256" \\
        -S patch.image_size=256 -S patch.side=256 -S patch.stride=256 --out ...
    PYTHONPATH=src python benchmarks/label_free_parts.py --summary benchmarks/results/label_free_parts.jsonl
    PYTHONPATH=src python benchmarks/label_free_parts.py --parts hopper --folder /tmp/parts
    python -m anomaly select -S dataset.name=mvtec -S dataset.source=/tmp/parts -S dataset.category=hopper
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import label_free_real  # noqa: E402
import real_textures  # noqa: E402

PARTS = ("camera", "coins", "cell", "coffee", "chelsea", "flower", "hopper")
CROP = real_textures.CROP  # the view's side; --view changes it
MARGIN = 1.25  # the part's side over the view's: room to move, turn and scale it
SHIFT, ANGLE, SCALE = 8.0, 5.0, 0.04  # placement: +-pixels, +-degrees, +-fraction
GAIN, OFFSET, NOISE = 0.05, 0.02, 0.01  # lighting (+-gain, +-offset) and sensor noise (std)


def part(name: str, view_side: int = CROP) -> np.ndarray:
    """(S, S, C) float in [0, 1], S = ``MARGIN * view_side``: the photograph resized and
    cut square, C = 1 or 3."""
    if name == "flower":
        from sklearn.datasets import load_sample_image

        image = Image.fromarray(load_sample_image("flower.jpg"))
    elif name == "hopper":
        import matplotlib.cbook

        image = Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg"))
    else:
        import skimage.data

        image = Image.fromarray(getattr(skimage.data, name)())
    side = round(MARGIN * view_side)
    scale = side / min(image.size)
    width, height = round(image.width * scale), round(image.height * scale)
    image = image.resize((width, height), Image.Resampling.LANCZOS)
    left, top = (width - side) // 2, (height - side) // 2
    array = np.asarray(image.crop((left, top, left + side, top + side)), dtype=np.float32)
    array /= 255.0
    return array[..., None] if array.ndim == 2 else array


def view(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One photograph of the part: placed, lit and noisy (see the module docstring); the
    view's side is the part's over ``MARGIN``, its shift in proportion."""
    from scipy import ndimage

    angle = np.deg2rad(rng.uniform(-ANGLE, ANGLE))
    scale = 1 + rng.uniform(-SCALE, SCALE)
    side = round(image.shape[0] / MARGIN)
    shift = rng.uniform(-SHIFT, SHIFT, size=2) * side / CROP
    # the view's pixel (y, x) samples the part at centre + scale * rotation @ (y, x) - ...
    rotation = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = (image.shape[0] - 1) / 2 + shift
    offset = centre - rotation @ np.full(2, (side - 1) / 2)
    crop = np.stack(
        [
            ndimage.affine_transform(image[..., c], rotation, offset, (side, side), order=1)
            for c in range(image.shape[-1])
        ],
        axis=-1,
    )
    gain, bias = 1 + rng.uniform(-GAIN, GAIN), rng.uniform(-OFFSET, OFFSET)
    noisy = crop * gain + bias + rng.normal(0.0, NOISE, crop.shape)
    return np.clip(noisy, 0, 1).astype(np.float32)


def samples(
    name: str, n_train: int, n_test: int, seed: int, view_side: int = CROP
) -> Iterator[label_free_real.Sample]:
    """Part ``name``'s dataset, view by view: training views, good and defective test
    views of ``view_side`` pixels (the defects keep their sizes in pixels)."""
    rng = np.random.default_rng([seed, len(label_free_real.PHOTOS) + PARTS.index(name)])
    image = part(name, view_side)
    donor = label_free_real.donor_like(
        part(PARTS[(PARTS.index(name) + 1) % len(PARTS)], view_side), image
    )
    return label_free_real.draw_samples(lambda _: view(image, rng), donor, rng, n_train, n_test)


def make_dataset(
    root: Path, name: str, n_train: int, n_test: int, seed: int, view_side: int = CROP
) -> Path:
    """``root/<name>`` in MVTec layout: :func:`samples`, written."""
    return label_free_real.write_samples(
        root / name, samples(name, n_train, n_test, seed, view_side)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="*", default=list(PARTS), choices=PARTS)
    label_free_real.candidate_arguments(parser, "views")
    parser.add_argument(
        "--view", type=int, default=CROP, help="the views' side in pixels (rows tag the part)"
    )
    parser.add_argument("--montage", type=Path, default=None, help="draw every part's views")
    parser.add_argument(
        "--folder", type=Path, default=None, help="only write the parts here, in MVTec layout"
    )
    args = parser.parse_args()
    if args.summary:
        label_free_real.summary(args.summary, args.candidates, args.rule)
        return
    if args.montage:
        montage(args.parts, args.montage, args.seed)
        return
    if args.folder:
        for name in args.parts:
            print(make_dataset(args.folder, name, args.train, args.test, args.seed, args.view))
        return

    def make(root: Path, label: str, n_train: int, n_test: int, seed: int) -> Path:
        return make_dataset(root, label.split("@")[0], n_train, n_test, seed, args.view)

    names = [p if args.view == CROP else f"{p}@{args.view}" for p in args.parts]
    label_free_real.run_candidates(make, names, args.model, args.tag, args)


def montage(names: list[str], out: Path, seed: int = 0) -> None:
    """Per part: two training views, then one defective test view of each kind with its
    mask outlined in red. Evidence of what the benchmark asks."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            base = make_dataset(Path(tmp), name, 2, len(real_textures.DEFECTS), seed)
            cells = [
                np.asarray(Image.open(f).convert("RGB"))
                for f in sorted((base / "train" / "good").glob("*.png"))
            ]
            for kind in real_textures.DEFECTS:
                file = sorted((base / "test" / kind).glob("*.png"))[0]
                cells.append(label_free_real.outlined(base, kind, file)[1])
            rows.append(np.concatenate(cells, axis=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(out)
    print(f"{out}: per part two training views, then {', '.join(real_textures.DEFECTS)}")


if __name__ == "__main__":
    main()

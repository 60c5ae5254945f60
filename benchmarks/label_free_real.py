"""Does the label-free figure pick the right model? Real photographs, offline.

Seven real photographs shipped inside scikit-image's wheel, four grayscale (brick,
grass, gravel, the moon's surface) and three colour (an immunohistochemistry slide,
the Hubble deep field, the centre of a retina fundus), each made into a folder dataset
in MVTec layout: 128-px training crops from the top half, good and defective test crops
from the bottom half (regions no training crop touched). The test defects are drawn by
``real_textures.draw_defect`` (its own generator, not the one the label-free figure
uses: foreign texture from another photograph, stain, scratch, smear), with exact masks;
on colour photographs they are drawn in every channel.

For each photograph every candidate runs through the pipeline's own stages in process
(``ablate_features.run``), and each row records the real test image AUROC beside the
label-free figure (``val_synthetic.*``). ``--summary`` then picks, per photograph, the
candidate with the highest label-free image AUROC and reports its regret against the
best candidate by the real AUROC, and the rank correlation of the two figures.

    PYTHONPATH=src python benchmarks/label_free_real.py --out benchmarks/results/label_free_real.jsonl
    PYTHONPATH=src python benchmarks/label_free_real.py --summary benchmarks/results/label_free_real.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ablate_features  # noqa: E402
import real_textures  # noqa: E402

PHOTOS = ("brick", "grass", "gravel", "moon", "ihc", "hubble", "retina")
CROP = real_textures.CROP


def photo(name: str) -> np.ndarray:
    """(H, W, C) float in [0, 1]: C = 1 for grayscale photographs, 3 for colour."""
    import skimage.data

    loaders = {
        "ihc": skimage.data.immunohistochemistry,
        "hubble": skimage.data.hubble_deep_field,
        "retina": lambda: skimage.data.retina()[300:1100, 300:1100],  # inside the fundus
    }
    array = loaders.get(name, getattr(skimage.data, name, None))()
    array = array.astype(np.float32) / 255.0
    return array[..., None] if array.ndim == 2 else array


def eight_bit(array: np.ndarray) -> np.ndarray:
    """The 8-bit levels a benchmark image is stored with (floats in [0, 1] in)."""
    return np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = eight_bit(array)
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)


def _crop(image: np.ndarray, rows: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    top = rng.integers(rows[0], rows[1] - CROP + 1)
    left = rng.integers(0, image.shape[1] - CROP + 1)
    return image[top : top + CROP, left : left + CROP].copy()


def draw_defect(
    crop: np.ndarray, kind: str, donor: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(defective (H, W, C) crop, (H, W) mask): ``real_textures.draw_defect`` with the
    same draws in every channel, so a colour defect is one defect, not three."""
    state = rng.bit_generator.state
    out = np.empty_like(crop)
    for c in range(crop.shape[-1]):
        rng.bit_generator.state = state
        out[..., c], mask = real_textures.draw_defect(crop[..., c], kind, donor[..., c], rng)
    return out, mask


class Sample(NamedTuple):
    """One image of a benchmark dataset before it is written: where it goes and, for a
    defective test image, its clean original and exact mask (what
    ``defect_visibility.py`` compares)."""

    split: str  # "train" or "test"
    kind: str  # "good" or the defect kind
    index: int
    image: np.ndarray  # (H, W, C) float in [0, 1]
    clean: np.ndarray | None = None
    mask: np.ndarray | None = None


def donor_like(donor: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The foreign-texture donor with ``image``'s channels: a colour donor for a grayscale
    photograph is averaged to grey (and, the other way, repeated)."""
    if donor.shape[-1] == image.shape[-1]:
        return donor
    return donor.mean(axis=2, keepdims=True).repeat(image.shape[-1], axis=2)


def draw_samples(
    take: Callable[[str], np.ndarray],
    donor: np.ndarray,
    rng: np.random.Generator,
    n_train: int,
    n_test: int,
) -> Iterator[Sample]:
    """The draws both photograph benchmarks share, in one fixed order so that a seed is
    one dataset: ``n_train`` training images, ``n_test`` good test images, then
    ``n_test`` defective ones cycling over ``real_textures.DEFECTS``. ``take(split)``
    draws one image of that split from ``rng``."""
    for i in range(n_train):
        yield Sample("train", "good", i, take("train"))
    for i in range(n_test):
        yield Sample("test", "good", i, take("test"))
    for i in range(n_test):
        kind = real_textures.DEFECTS[i % len(real_textures.DEFECTS)]
        clean = take("test")
        image, mask = draw_defect(clean, kind, donor, rng)
        yield Sample("test", kind, i, image, clean, mask)


def write_samples(base: Path, samples: Iterable[Sample]) -> Path:
    """``base`` in MVTec layout: ``train/good``, ``test/<kind>``, ``ground_truth/<kind>``."""
    for sample in samples:
        name = f"{sample.index:03d}"
        _save(sample.image, base / sample.split / sample.kind / f"{name}.png")
        if sample.mask is not None:
            mask = sample.mask[..., None].astype(np.float32)
            _save(mask, base / "ground_truth" / sample.kind / f"{name}_mask.png")
    return base


def samples(name: str, n_train: int, n_test: int, seed: int) -> Iterator[Sample]:
    """Photograph ``name``'s dataset (see the module docstring), image by image."""
    rng = np.random.default_rng([seed, PHOTOS.index(name)])
    image = photo(name)
    donor = donor_like(photo(PHOTOS[(PHOTOS.index(name) + 1) % len(PHOTOS)]), image)
    half = image.shape[0] // 2
    rows = {"train": (0, half), "test": (half, image.shape[0])}
    return draw_samples(lambda split: _crop(image, rows[split], rng), donor, rng, n_train, n_test)


def make_dataset(root: Path, name: str, n_train: int, n_test: int, seed: int) -> Path:
    """``root/<name>`` in MVTec layout (see the module docstring)."""
    return write_samples(root / name, samples(name, n_train, n_test, seed))


def outlined(base: Path, kind: str, file: Path) -> tuple[np.ndarray, np.ndarray]:
    """(RGB pixels, the same with the mask outlined in red) of one defective test image
    of a dataset ``make_dataset`` wrote: what the montages show."""
    from scipy import ndimage

    pixels = np.asarray(Image.open(file).convert("RGB"))
    mask = np.asarray(Image.open(base / "ground_truth" / kind / f"{file.stem}_mask.png")) > 0
    marked = pixels.copy()
    marked[mask ^ ndimage.binary_erosion(mask)] = (255, 0, 0)
    return pixels, marked


def montage(name: str, out: Path, per_kind: int = 4, seed: int = 0) -> None:
    """A picture of ``name``'s test defects: per kind, each defective crop beside a copy
    with its mask outlined in red. Evidence of what the test asks, e.g. that on grass a
    pasted gravel disc, a stain or a scratch is hard to see even for a person."""
    kinds = real_textures.DEFECTS
    with tempfile.TemporaryDirectory() as tmp:
        base = make_dataset(Path(tmp), name, 1, per_kind * len(kinds), seed)
        rows = []
        for kind in kinds:
            cells = []
            for file in sorted((base / "test" / kind).glob("*.png"))[:per_kind]:
                cells += outlined(base, kind, file)
            rows.append(np.concatenate(cells, axis=1))
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(out)
    print(f"{out}: rows {', '.join(kinds)}")


RULES = {
    "image": lambda r: r["val_synthetic.image.auroc"],
    "pixel": lambda r: r["val_synthetic.pixel.auroc"] or 0.0,
    "mean": lambda r: (
        (r["val_synthetic.image.auroc"] + (r["val_synthetic.pixel.auroc"] or 0.0)) / 2
    ),
}


def by_photograph(rows: list[dict], only: list[str] | None = None) -> dict[str, list[dict]]:
    """The rows of the variants ``only`` (all when None), grouped by photograph."""
    by_set: dict[str, list[dict]] = {}
    for row in rows:
        if not only or row["variant"] in only:
            by_set.setdefault(row["dataset"], []).append(row)
    return by_set


def picks(rows: list[dict], only: list[str] | None = None, rule: str = "image") -> list[dict]:
    """Per photograph, the row the label-free figure (``RULES[rule]``) ranks first."""
    return [max(group, key=RULES[rule]) for group in by_photograph(rows, only).values()]


def summary_text(rows: list[dict], only: list[str] | None = None, rule: str = "image") -> str:
    """Per photograph: the candidate the label-free figure picks, its real AUROC, the
    best real AUROC, the regret; and Spearman's rank correlation of the two figures."""
    from scipy.stats import spearmanr

    by_set = by_photograph(rows, only)
    out = [
        "| photograph | picked (label-free) | its real AUROC | best real | regret | rho |",
        "|---|---|---|---|---|---|",
    ]
    regrets, picked_real, best_real, pairs = [], [], [], []
    for name, group in by_set.items():
        pick = max(group, key=RULES[rule])
        best = max(group, key=lambda r: r["image.auroc"])
        rho = spearmanr(
            [RULES[rule](r) for r in group], [r["image.auroc"] for r in group]
        ).statistic
        regret = best["image.auroc"] - pick["image.auroc"]
        regrets.append(regret)
        picked_real.append(pick["image.auroc"])
        best_real.append(best["image.auroc"])
        pairs += [(RULES[rule](r), r["image.auroc"]) for r in group]
        out.append(
            f"| {name} | {pick['variant']} ({RULES[rule](pick):.3f}) | "
            f"{pick['image.auroc']:.3f} | {best['image.auroc']:.3f} ({best['variant']}) | "
            f"{regret:.3f} | {rho:.2f} |"
        )
    pooled = spearmanr(*zip(*pairs, strict=True)).statistic
    out += [
        "",
        f"mean real AUROC of the pick {np.mean(picked_real):.3f}, of the best "
        f"{np.mean(best_real):.3f}; mean regret {np.mean(regrets):.3f}, worst "
        f"{np.max(regrets):.3f}; pooled Spearman rho {pooled:.2f} over {len(pairs)} runs",
    ]
    return "\n".join(out)


def summary(paths: list[Path], only: list[str] | None = None, rule: str = "image") -> None:
    """Print :func:`summary_text` for the rows of ``paths``."""
    rows = [
        json.loads(line) for path in paths for line in path.read_text().splitlines() if line.strip()
    ]
    print(summary_text(rows, only, rule))


def run_candidates(
    make: Callable[[Path, str, int, int, int], Path],
    names: list[str],
    models: list[str],
    tag: str,
    args: argparse.Namespace,
    keep_scores: Path | None = None,
) -> None:
    """Each of ``models`` (default: patchcore, padim, cae) as ``'<model> (<tag>)'`` on
    each dataset ``make(root, name, args.train, args.test, args.seed)`` writes, under
    ``args.set`` overrides, one row each appended to ``args.out``."""
    models = models or ["patchcore", "padim", "cae"]
    for model in models:
        ablate_features.VARIANTS[f"{model} ({tag})"] = (model, {})
    variants = [f"{m} ({tag})" for m in models]
    out = args.out.resolve() if args.out else None
    os.environ.setdefault("TQDM_DISABLE", "1")
    with tempfile.TemporaryDirectory() as data_root:
        for name in names:
            base = make(Path(data_root), name, args.train, args.test, args.seed)
            ablate_features.run(
                "folder",
                variants,
                [*args.set, f"dataset.source={base}"],
                out,
                label=name,
                keep_scores=keep_scores,
            )


def candidate_arguments(parser: argparse.ArgumentParser, samples: str) -> None:
    """The options this script and ``label_free_parts.py`` share: the candidates, the
    datasets' sizes (``samples``: what one image is called), the rows and the summary."""
    parser.add_argument("--model", action="append", default=[], help="a candidate, defaults")
    parser.add_argument("--train", type=int, default=100, help=f"good training {samples}")
    parser.add_argument("--test", type=int, default=40, help=f"good and defective test {samples}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-S", "--set", action="append", default=[], help="param override")
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    parser.add_argument("--tag", default="defaults", help="variant label: '<model> (<tag>)'")
    parser.add_argument(
        "--summary", type=Path, nargs="+", default=None, help="summarise results files"
    )
    parser.add_argument("--rule", choices=list(RULES), default="image", help="pick by")
    parser.add_argument(
        "--candidates", nargs="*", default=None, help="with --summary: only these variants"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", nargs="*", default=list(PHOTOS), choices=PHOTOS)
    candidate_arguments(parser, "crops")
    parser.add_argument(
        "--keep-scores", type=Path, default=None, help="copy each run's image scores here"
    )
    parser.add_argument(
        "--montage", type=Path, default=None, help="draw the first photograph's test defects"
    )
    args = parser.parse_args()
    if args.summary:
        summary(args.summary, args.candidates, args.rule)
        return
    if args.montage:
        montage(args.photos[0], args.montage, seed=args.seed)
        return
    run_candidates(
        make_dataset,
        args.photos,
        args.model,
        args.tag,
        args,
        keep_scores=args.keep_scores.resolve() if args.keep_scores else None,
    )


if __name__ == "__main__":
    main()

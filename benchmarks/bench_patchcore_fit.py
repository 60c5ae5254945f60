"""PatchCore's memory-bank fit against the number of training patches.

A folder of large photographs (MVTec's are 700-1024 px) cut into the default 64-px
tiles gives millions of patch features, and greedy k-center coreset selection costs
(patches x kept entries x feature width): quadratic in the data. This measures the fit
(feature extraction, coreset, as the train stage runs it) on 64-px tiles of a real
photograph that ships with scikit-image (``coffee``, colour, upsampled to 1024 px),
for growing numbers of 1024-px images, so the cost of a large folder is a measured
line, not a guess.

    PYTHONPATH=src python benchmarks/bench_patchcore_fit.py --images 2 4 8 16 32 --tag channel_map
    PYTHONPATH=src python benchmarks/bench_patchcore_fit.py -S coreset_ratio=0.1 --tag core0.1

The ``before`` rows ran this script on a checkout of the commit before ``channel_map``.

Appends one JSON line per size to ``benchmarks/results/patchcore_fit_scaling.jsonl``
(``--out``) with the commit and machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_serve import commit  # noqa: E402
from bench_stages import machine  # noqa: E402

SIDE = 1024
TILE = 64


def tiles_of_photographs(count: int, seed: int) -> torch.Tensor:
    """``count`` 1024-px colour images (random crops of ``coffee``, upsampled, flipped)
    as 64-px tiles: (count * 256, 3, 64, 64) floats in [0, 1]."""
    import skimage.data
    from PIL import Image

    photo = skimage.data.coffee()  # 400 x 600 x 3
    rng = np.random.default_rng(seed)
    tiles = []
    for _ in range(count):
        top, left = rng.integers(0, 400 - 300), rng.integers(0, 600 - 300)
        crop = Image.fromarray(photo[top : top + 300, left : left + 300])
        image = np.asarray(crop.resize((SIDE, SIDE), Image.BILINEAR), np.float32) / 255
        if rng.random() < 0.5:
            image = image[:, ::-1]
        grid = image.reshape(SIDE // TILE, TILE, SIDE // TILE, TILE, 3)
        tiles.append(grid.transpose(0, 2, 4, 1, 3).reshape(-1, 3, TILE, TILE))
    return torch.from_numpy(np.ascontiguousarray(np.concatenate(tiles)))


def fit_seconds(images: int, overrides: dict, seed: int) -> dict:
    from anomaly.models.patchcore import PatchCore, PatchCoreConfig

    torch.manual_seed(seed)
    config = PatchCoreConfig(**overrides)
    model = PatchCore(config, in_channels=3, image_size=TILE)
    data = tiles_of_photographs(images, seed)
    batches = (data[i : i + 64] for i in range(0, len(data), 64))
    started = time.perf_counter()
    summary = model.fit_memory(batches, torch.device("cpu"), len(data), seed)
    seconds = time.perf_counter() - started
    return {
        "images_1024px": images,
        "tiles": len(data),
        "bank_width": int(model.memory_bank.shape[1]),
        **summary,
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument(
        "-S", "--set", action="append", default=[], help="PatchCoreConfig key=value"
    )
    parser.add_argument("--tag", default="defaults")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", default=str(REPO / "benchmarks/results/patchcore_fit_scaling.jsonl")
    )
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    for images in args.images:
        row = {
            "variant": args.tag,
            "overrides": overrides,
            **fit_seconds(images, overrides, args.seed),
        }
        row |= {"commit": commit(), "machine": machine()}
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as handle:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

"""``anomaly predict`` on huge images: wall time and peak RSS against image area.

Line-scan cameras write tens of megapixels per image. This builds square grayscale
images of 1, 4, 16 and 36 megapixels by tiling good test rolls of the pipeline's data
(so the model sees its own kind of texture), runs ``python -m anomaly predict`` on each
in its own process and reads that process's peak resident set size from ``wait4``.
Target (issue 28): at most 1.5 GB for 36 MP with the default ``cae``, time linear in
pixels.

    PYTHONPATH=src python benchmarks/bench_huge.py                 # 1, 4, 16, 36 MP
    PYTHONPATH=src python benchmarks/bench_huge.py --megapixels 1 --no-overlays   # smoke

Writes ``benchmarks/results/bench_huge.json`` (``--out``) with machine and commit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_serve import commit  # noqa: E402
from bench_stages import machine  # noqa: E402


def good_rolls(group: str | None) -> list[np.ndarray]:
    import pandas as pd

    from anomaly.image_reader import read_image
    from anomaly.params import load_params
    from anomaly.paths import manifest

    table = manifest(load_params("params.yaml").dataset.name)
    rows = pd.read_csv(table, dtype={"group": str})
    good = rows[(rows["label"] == 0) & ((rows["group"] == group) if group else True)]
    paths = [table.parent / p for p in good["image_path"][:16]]
    if not paths:
        sys.exit(f"error: {table}: no good images; run the pipeline first (make repro)")
    return [read_image(p) for p in paths]


def huge_image(side: int, rolls: list[np.ndarray]) -> np.ndarray:
    """``side`` x ``side`` pixels of real texture: rolls placed row by row."""
    rh, rw = rolls[0].shape
    out = np.empty((side, side), dtype=np.uint8)
    k = 0
    for y in range(0, side, rh):
        for x in range(0, side, rw):
            roll = rolls[k % len(rolls)]
            k += 1
            out[y : y + rh, x : x + rw] = roll[: side - y, : side - x]
    return out


def run_predict(
    image: Path, out: Path, bundle: str | None, overlays: bool, group: str | None
) -> dict:
    command = [sys.executable, "-m", "anomaly", "predict", str(image), "--out", str(out)]
    command += ["--device", "cpu"] + (["--model", bundle] if bundle else [])
    command += ["--group", group] if group else []
    command += [] if overlays else ["--no-overlays"]
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"error: predict failed on {image}: {proc.stderr.read().decode()[-400:]}")
    return {"seconds": round(seconds, 2), "peak_rss_mib": usage.ru_maxrss // 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, nargs="+", default=[1, 4, 16, 36])
    parser.add_argument("--model", default=None, help="bundle (default: the active model's)")
    parser.add_argument("--no-overlays", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/bench_huge.json")
    args = parser.parse_args()
    from PIL import Image

    from anomaly.inference.bundle import bundle_path
    from anomaly.inference.detector import load_detector
    from anomaly.params import load_params

    groups = load_detector(args.model or bundle_path(load_params("params.yaml").model)).groups
    group = groups[0] if groups else None  # the rolls come from the first group
    rolls = good_rolls(group)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mp in args.megapixels:
            side = int(round(math.sqrt(mp * 1e6)))
            image = Path(tmp) / f"huge_{side}.png"
            Image.fromarray(huge_image(side, rolls)).save(image)
            measured = run_predict(
                image, Path(tmp) / "out", args.model, not args.no_overlays, group
            )
            rows.append({"megapixels": round(side * side / 1e6, 2), "side": side, **measured})
            print(json.dumps(rows[-1]), flush=True)
    # seconds = startup + per_megapixel * megapixels: the fit says whether time is linear
    # in pixels (the residuals) once the fixed cost of starting Python and torch is apart.
    mp = np.array([r["megapixels"] for r in rows])
    seconds = np.array([r["seconds"] for r in rows])
    slope, startup = np.polyfit(mp, seconds, 1) if len(rows) > 1 else (np.nan, np.nan)
    worst = float(np.max(np.abs(seconds - (startup + slope * mp)) / seconds))
    result = {
        "benchmark": "predict on huge images",
        "commit": commit(),
        "machine": machine(),
        "bundle": args.model or "active model",
        "overlays": not args.no_overlays,
        "rows": rows,
        "linear_fit": {
            "startup_seconds": round(float(startup), 2),
            "seconds_per_megapixel": round(float(slope), 3),
            "worst_relative_residual": round(worst, 3),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""How visible are the photograph benchmarks' test defects? A bound on every model.

A simulated test defect is painted without looking at what is under it: a smear (the
texture blurred in a disc) that lands on a smooth region changes almost nothing, yet it
is labelled a defect. No detector can find a change nobody could see, so such defects
cap every model's image AUROC on that photograph. This script measures each defective
test image of ``label_free_real.py``'s textures and ``label_free_parts.py``'s parts
(the same datasets, drawn by the same code and seed) as they are stored: the mean
absolute change of the 8-bit pixels inside the mask, averaged over channels, in grey
levels. A defect whose mean change is under ``INVISIBLE`` grey levels (about 1% of the
range, the order of a person's contrast threshold) counts as invisible.

The ceiling: if every visible defect were scored above every good image and the
invisible ones at chance (half the good images above them), the image AUROC would be
``1 - invisible / (2 * defects)``.

    PYTHONPATH=src python benchmarks/defect_visibility.py --out benchmarks/results/defect_visibility.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import label_free_parts  # noqa: E402
import label_free_real  # noqa: E402
from bench_serve import commit  # noqa: E402
from bench_stages import machine  # noqa: E402

INVISIBLE = 3.0  # grey levels (of 255): a mean change below this counts as invisible


def mean_change(sample: label_free_real.Sample) -> float:
    """Mean absolute change inside the mask, over channels, in grey levels."""
    stored = [label_free_real.eight_bit(x).astype(np.float64) for x in (sample.image, sample.clean)]
    change = np.abs(stored[0] - stored[1]).mean(axis=-1)
    return float(change[sample.mask].mean())


def visibility_rows(benchmark: str, name: str, samples) -> list[dict]:
    """One row per defect kind of one dataset: the kinds' changes and invisible count."""
    by_kind: dict[str, list[float]] = {}
    for sample in samples:
        if sample.mask is not None:
            by_kind.setdefault(sample.kind, []).append(mean_change(sample))
    rows = []
    for kind, changes in by_kind.items():
        values = np.asarray(changes)
        rows.append(
            {
                "benchmark": benchmark,
                "dataset": name,
                "kind": kind,
                "defects": len(values),
                "median_change": round(float(np.median(values)), 2),
                "min_change": round(float(values.min()), 2),
                "invisible": int((values < INVISIBLE).sum()),
                "invisible_below": INVISIBLE,
            }
        )
    return rows


def ceiling(rows: list[dict]) -> float:
    """The image AUROC bound of one dataset's rows (see the module docstring)."""
    defects = sum(r["defects"] for r in rows)
    return 1.0 - sum(r["invisible"] for r in rows) / (2.0 * defects)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test", type=int, default=40, help="defective test images each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    args = parser.parse_args()
    sets = [
        ("textures", name, label_free_real.samples(name, 100, args.test, args.seed))
        for name in label_free_real.PHOTOS
    ] + [
        ("parts", name, label_free_parts.samples(name, 100, args.test, args.seed))
        for name in label_free_parts.PARTS
    ]
    stamp = {"commit": commit(), "machine": machine(), "seed": args.seed}
    for benchmark, name, samples in sets:
        rows = [{**row, **stamp} for row in visibility_rows(benchmark, name, samples)]
        print(
            f"{benchmark} {name}: ceiling {ceiling(rows):.3f}; "
            + ", ".join(
                f"{r['kind']} {r['median_change']:.1f} ({r['invisible']} invisible)" for r in rows
            )
        )
        if args.out:
            with args.out.open("a") as handle:
                handle.writelines(json.dumps(row) + "\n" for row in rows)


if __name__ == "__main__":
    main()

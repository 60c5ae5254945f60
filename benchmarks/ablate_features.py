"""Ablation of the feature models' defaults: backbone, pretrained vs random, levels, input size.

Runs the pipeline's own stages in process (train -> score -> threshold -> evaluate)
on shared data (download, patchify and split once per dataset) and prints one
row per variant: image and pixel AUROC with their 95% bootstrap intervals and
the wall time of train + score. A benchmark, not a test: the README's ablation
table comes from here.

    PYTHONPATH=src python benchmarks/ablate_features.py --dataset synthetic_fabric
    PYTHONPATH=src python benchmarks/ablate_features.py --dataset mnist --digits 0 1 2 3 4 5 6 7 8 9
    PYTHONPATH=src python benchmarks/ablate_features.py --dataset mnist --digits 0 --model vit_vae
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile
import time
from functools import cache
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_serve import commit  # noqa: E402  (the commit the rows were measured at)
from bench_stages import machine  # noqa: E402  (one description of the machine)

VARIANTS = {
    # name: (model, block overrides)
    "patchcore lite0 imagenet stage2+3": ("patchcore", {}),
    "patchcore lite0 random stage2+3": ("patchcore", {"weights": "none"}),
    "patchcore lite0 imagenet stage2": ("patchcore", {"layers": ["stage2"]}),
    "patchcore lite0 imagenet stage3+4": ("patchcore", {"layers": ["stage3", "stage4"]}),
    "patchcore resnet18 random layer2+3": (
        "patchcore",
        {"backbone": "resnet18", "weights": "none", "layers": ["layer2", "layer3"]},
    ),
    "patchcore lite0 imagenet stage2+3 @112": ("patchcore", {"input_size": 112}),
    "padim lite0 imagenet stage2+3+4": ("padim", {}),
    "padim lite0 imagenet stage2+3+4 @112": ("padim", {"input_size": 112}),
    "padim lite0 random stage2+3+4 @112": ("padim", {"input_size": 112, "weights": "none"}),
    "padim lite0 random stage2+3+4": ("padim", {"weights": "none"}),
    "padim lite0 imagenet stage2+3": ("padim", {"layers": ["stage2", "stage3"]}),
    "padim lite0 imagenet stage1+2+3": ("padim", {"layers": ["stage1", "stage2", "stage3"]}),
    "anogan vector code": ("anogan", {"latent": "vector"}),
    "anogan spatial code": ("anogan", {"latent": "spatial"}),
    "anogan spatial code 4ch": ("anogan", {"latent": "spatial", "latent_channels": 4}),
}


def _set(data: dict, dotted: str, value) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def run(
    dataset: str,
    variants: list[str],
    overrides: list[str],
    out: Path | None,
    label: str | None = None,
    keep_scores: Path | None = None,
) -> list[dict]:
    """One row per variant; ``label`` names the data in the rows (default: ``dataset``).

    ``keep_scores``: copy each variant's image scores (test, good validation, and the
    label-free set's) to ``keep_scores/<label>/<variant>/``, for studies that combine
    runs afterwards (``benchmarks/ensemble_real.py``)."""
    from anomaly.params import load_params
    from anomaly.pipeline import run_stage

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    base["dataset"]["name"] = dataset
    for item in overrides:
        key, _, value = item.partition("=")
        _set(base, key, yaml.safe_load(value))
    rows = []
    provenance = {"commit": commit(), "machine": _machine_line()}
    back = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        Path("params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
        for stage in ("download", "patchify", "split"):
            run_stage(stage, load_params("params.yaml"))
        for name in variants:
            model, block = VARIANTS[name]
            data = copy.deepcopy(base)
            data["model"] = model
            data["models"][model] = {**data["models"][model], **block}
            Path("params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
            params = load_params("params.yaml")
            start = time.perf_counter()
            for stage in ("train", "score"):
                run_stage(stage, params)
            seconds = time.perf_counter() - start
            for stage in ("threshold", "evaluate"):
                run_stage(stage, params)
            if keep_scores is not None:
                target = keep_scores / (label or dataset) / name
                target.mkdir(parents=True, exist_ok=True)
                for file in ("test_images.csv", "val_images.csv", "val_synthetic.npz"):
                    shutil.copy(Path("scores") / model / file, target / file)
            metrics = json.loads(Path("metrics/eval.json").read_text())
            row = {
                "variant": name,
                "dataset": label or dataset,
                "overrides": " ".join(overrides),
                "seconds": round(seconds, 1),
                **provenance,
                **{k: metrics.get(k) for k in KEYS},
                # the real AUROC per defect kind: which kinds a variant misses
                **{
                    k: v
                    for k, v in metrics.items()
                    if k.startswith("by_defect.") and k.endswith(".auroc")
                },
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            if out is not None:  # each row as it finishes: a long run keeps what it measured
                with open(out, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
        os.chdir(back)  # not left in a deleted folder: the next run() starts from here
    return rows


@cache
def _machine_line() -> dict:
    """The CPU and core count the rows were measured on (the results pages name them)."""
    found = machine()
    return {"cpu": found["cpu"], "cores": found["cores"], "torch": found["torch"]}


KEYS = (
    "score.patch_reduce",  # what `auto` resolved to
    "score.smooth_sigma",
    "image.auroc",
    "image.auroc_ci_low",
    "image.auroc_ci_high",
    "pixel.auroc",
    "pixel.auroc_ci_low",
    "pixel.auroc_ci_high",
    "pixel.aupro",
    "val_synthetic.image.auroc",  # the label-free figure (simulated defects on validation)
    "val_synthetic.image.auroc_ci_low",
    "val_synthetic.image.auroc_ci_high",
    "val_synthetic.pixel.auroc",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic_fabric")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="instead of --variants: this model with its default block (repeatable; "
        "-S models.<name>.<key>=... changes it)",
    )
    parser.add_argument("--digits", nargs="*", default=None, help="mnist: normal digits to run")
    parser.add_argument("-S", "--set", action="append", default=[], help="param override")
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    parser.add_argument(
        "--tag",
        default="defaults",
        help="with --model: variant label '<model> (<tag>)', naming what -S changes",
    )
    args = parser.parse_args()
    for model in args.model:
        VARIANTS[f"{model} ({args.tag})"] = (model, {})
    if args.model:
        args.variants = [f"{m} ({args.tag})" for m in args.model]
    out = args.out.resolve() if args.out else None
    os.environ.setdefault("TQDM_DISABLE", "1")
    if args.dataset == "mnist" and args.digits:
        for digit in args.digits:
            overrides = [*args.set, f"dataset.normal_class={digit}"]
            run("mnist", args.variants, overrides, out, label=f"mnist digit {digit}")
    else:
        run(args.dataset, args.variants, args.set, out)


if __name__ == "__main__":
    main()

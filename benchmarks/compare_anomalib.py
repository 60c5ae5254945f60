"""Side by side with anomalib: this project's patchcore / padim against anomalib's, same data.

A benchmark, not a test. anomalib is not a dependency of the project: install it
in a venv of its own (it installs offline from the package mirror) and name it::

    python3 -m venv /tmp/anomalib_venv
    /tmp/anomalib_venv/bin/pip install torch==2.14.1 torchvision==0.29.1 anomalib==2.7.0
    PYTHONPATH=src python benchmarks/compare_anomalib.py --anomalib-python /tmp/anomalib_venv/bin/python

Data: synthetic fabric rolls (seed 0; 40 good and 30 defective of 1024 x 256, the
pipeline's default before its 240-roll benchmark), cut into 256 x 256 crops and written
in MVTec AD layout, one category per fabric (``train/good`` from good rolls,
``test/good`` from held-out good rolls, ``test/defect`` with ``ground_truth`` masks).
Both libraries read that folder. Equal settings (what anomalib can run offline):
resnet18 with random weights, and the *same* random weights for both (one seeded
torchvision initialisation saved to a ``.pth``: ``weights: <path>`` here, loaded into
anomalib's timm backbone), images resized to 128 px, PatchCore on layer2+layer3 with
coreset ratio 0.1 and 9 neighbours, PaDiM on layer1..layer3 with 100 random channels.
The project runs its own stages (train, score, threshold, evaluate) with one
whole-image tile per crop; it holds 15% of the good training crops out for its
normalisation and threshold, so anomalib is fitted on the same remaining crops.
The feature heads (``--models fastflow reverse_distillation simplenet``) against
anomalib's ``Fastflow``, ``ReverseDistillation`` and ``Supersimplenet`` (anomalib
ships no SimpleNet; SuperSimpleNet is its successor, unsupervised here): the same
random resnet18 levels, FastFlow's 8 flow steps, each head trained for this project's
default number of epochs in both libraries (``HEAD_EPOCHS``), anomalib's optimisers.
Times: fit = the train stage / ``Engine.fit``; predict = test images per second of
the score stage / ``Engine.test`` (both include reading the images). Threads: the
same count for both (``--threads``, default 2, the CI machine's cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CROP = 256
SIZE = 128


def prepare(root: Path, seed: int = 0) -> list[str]:
    """Write the crops in MVTec layout under ``root``; returns the categories."""
    import yaml
    from PIL import Image

    from anomaly.params import load_params
    from anomaly.pipeline import run_stage

    work = root / "_source"
    work.mkdir(parents=True)
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    base["seed"] = seed
    base["dataset"]["name"] = "synthetic_fabric"
    # The comparison's own rolls, fixed so its table stays reproducible when the
    # pipeline's default benchmark changes: 70 rolls of 1024 x 256 (4 crops each).
    base["dataset"]["synthetic"].update(n_good=40, n_defect=30, width=1024, height=256)
    (work / "params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
    cwd = os.getcwd()
    os.chdir(work)
    try:
        run_stage("download", load_params("params.yaml"))
    finally:
        os.chdir(cwd)
    from anomaly.data.manifest import load_image_and_mask, read_manifest

    manifest = read_manifest(work / "data/raw/synthetic_fabric/manifest.csv")
    rng = np.random.default_rng(seed)
    categories = []
    for group, part in manifest.groupby("group", sort=True):
        category = f"fabric{group}"
        categories.append(category)
        goods = part[part["label"] == 0]
        test_goods = set(rng.choice(goods.index, max(1, len(goods) * 3 // 10), replace=False))
        for index, row in part.iterrows():
            image, mask = load_image_and_mask(manifest, row)
            for k in range(image.shape[1] // CROP):
                crop = image[:, k * CROP : (k + 1) * CROP]
                crop_mask = mask[:, k * CROP : (k + 1) * CROP]
                name = f"{index:04d}_{k}.png"
                if row["label"] == 0:
                    split = "test/good" if index in test_goods else "train/good"
                elif crop_mask.sum() >= 16:
                    split = "test/defect"
                    folder = root / category / "ground_truth/defect"
                    folder.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(crop_mask.astype(np.uint8) * 255).save(
                        folder / f"{Path(name).stem}_mask.png"
                    )
                elif crop_mask.sum() == 0:
                    split = "test/good"  # a clean part of a defective roll
                else:
                    continue  # a sliver of a defect: neither good nor a fair defect
                folder = root / category / split
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(crop).save(folder / name)
    return categories


def random_weights(root: Path, seed: int) -> Path:
    """One seeded random resnet18 initialisation, shared by both libraries."""
    import torch
    import torchvision

    path = root / f"resnet18_random_seed{seed}.pth"
    if not path.is_file():
        torch.manual_seed(seed)
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


# Each model's settings in both libraries, equal where both have the setting: the same
# levels of the same random resnet18, anomalib's defaults for the rest, and the heads
# trained for the same number of epochs (this project's default for each).
OUR_BLOCKS = {
    "patchcore": {
        "layers": ["layer2", "layer3"],
        "feature_dim": 384,
        "coreset_ratio": 0.1,
        "num_neighbours": 9,
    },
    "padim": {"layers": ["layer1", "layer2", "layer3"], "feature_dim": 100},
    "fastflow": {"layers": ["layer1", "layer2", "layer3"], "flow_steps": 8, "hidden_ratio": 1.0},
    "reverse_distillation": {"layers": ["layer1", "layer2", "layer3"]},
    "simplenet": {"layers": ["layer2", "layer3"]},
}
HEAD_EPOCHS = {"fastflow": 20, "reverse_distillation": 40, "simplenet": 30}
ANOMALIB_NAMES = {
    "patchcore": "Patchcore",
    "padim": "Padim",
    "fastflow": "Fastflow",
    "reverse_distillation": "ReverseDistillation",
    "simplenet": "Supersimplenet (the closest anomalib ships)",
}


def ours(root: Path, category: str, model: str, seed: int, reduce: str = "auto") -> dict:
    """This project's model through its own stages on one category (``reduce``: its
    ``score.patch_reduce``; anomalib's PaDiM scores an image by its map's maximum)."""
    import pandas as pd
    import yaml

    from anomaly.params import load_params
    from anomaly.pipeline import run_stage

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    base.update(seed=seed, model=model)
    base["dataset"].update(name="mvtec", source=str(root), category=category)
    base["patch"].update(side=SIZE, stride=SIZE, image_size=SIZE, blank_std=0.0)
    base["split"].update(val_fraction=0.15)
    base["score"]["patch_reduce"] = reduce
    common = {
        "backbone": "resnet18",
        "weights": str(random_weights(root, seed)),
        "input_size": None,
    }
    base["models"][model].update({**common, **OUR_BLOCKS[model]})
    if model in HEAD_EPOCHS:
        base["models"][model]["epochs"] = HEAD_EPOCHS[model]
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            Path("params.yaml").write_text(yaml.safe_dump(base, sort_keys=False))
            params = load_params("params.yaml")
            for stage in ("download", "patchify", "split"):
                run_stage(stage, params)
            start = time.perf_counter()
            run_stage("train", params)
            fit = time.perf_counter() - start
            start = time.perf_counter()
            run_stage("score", params)
            scored = time.perf_counter() - start
            for stage in ("threshold", "evaluate"):
                run_stage(stage, params)
            metrics = json.loads(Path("metrics/eval.json").read_text())
            n_test = json.loads(Path("data/splits/summary.json").read_text())["test"]["images"]
            n_val = json.loads(Path("data/splits/summary.json").read_text())["val"]["images"]
            # the good crops the pipeline held out: anomalib is fitted without them too
            images = pd.read_csv("data/patches/images.csv")
            val_ids = set(pd.read_csv("data/splits/val.csv")["image_id"])
            held_out = sorted(
                Path(p).name for p in images.loc[images["image_id"].isin(val_ids), "image_path"]
            )
        finally:
            os.chdir(cwd)
    return {
        "library": "anomaly-pipeline",
        "model": model,
        "patch_reduce": metrics.get("score.patch_reduce"),
        "category": category,
        "image_auroc": metrics["image.auroc"],
        "image_auroc_ci": [metrics["image.auroc_ci_low"], metrics["image.auroc_ci_high"]],
        "pixel_auroc": metrics.get("pixel.auroc"),
        "fit_s": round(fit, 2),
        # the score stage scores validation and test images
        "predict_img_per_s": round((n_test + n_val) / scored, 1),
        "held_out": held_out,
    }


def _anomalib_module(model: str):
    """anomalib's counterpart of ``model`` with the settings of ``OUR_BLOCKS``, built
    without weights (``timm.create_model`` is told pretrained=False: offline, and the
    shared random weights are loaded afterwards)."""
    import timm
    from anomalib import models as zoo

    create = timm.create_model
    timm.create_model = lambda *a, **k: create(*a, **{**k, "pretrained": False})
    cls = getattr(zoo, ANOMALIB_NAMES[model].split(" ")[0])
    kwargs = {
        "patchcore": dict(
            backbone="resnet18",
            layers=("layer2", "layer3"),
            pre_trained=False,
            coreset_sampling_ratio=0.1,
            num_neighbors=9,
        ),
        "padim": dict(
            backbone="resnet18",
            layers=["layer1", "layer2", "layer3"],
            pre_trained=False,
            n_features=100,
        ),
        "fastflow": dict(backbone="resnet18", pre_trained=False, flow_steps=8, hidden_ratio=1.0),
        "reverse_distillation": dict(
            backbone="resnet18", layers=("layer1", "layer2", "layer3"), pre_trained=False
        ),
        "simplenet": dict(backbone="resnet18", layers=["layer2", "layer3"], supervised=False),
    }[model]
    pre = cls.configure_pre_processor(image_size=(SIZE, SIZE))
    return cls(pre_processor=pre, visualizer=False, **kwargs)


def anomalib_run(root: Path, category: str, model: str, seed: int, held_out: list[str]) -> dict:
    """anomalib's Patchcore / Padim on one category (run inside anomalib's venv)."""
    import shutil
    import warnings

    import torch

    warnings.filterwarnings("ignore")
    from anomalib.data import Folder
    from anomalib.engine import Engine
    from lightning.pytorch import seed_everything

    seed_everything(seed)
    base = root / category
    fit_dir = root / "_anomalib" / "fit" / category
    shutil.rmtree(fit_dir, ignore_errors=True)
    fit_dir.mkdir(parents=True)
    for path in sorted((base / "train/good").iterdir()):
        if path.name not in held_out:
            shutil.copy(path, fit_dir / path.name)
    datamodule = Folder(
        name=category,
        root=base,
        normal_dir=fit_dir,
        abnormal_dir="test/defect",
        normal_test_dir="test/good",
        mask_dir="ground_truth/defect",
        train_batch_size=32,
        eval_batch_size=32,
        num_workers=0,
        val_split_mode="same_as_test",  # only its threshold uses it; AUROC does not
        seed=seed,
    )
    module = _anomalib_module(model)
    # the same random initialisation as the project's run (timm's resnet18 uses
    # torchvision's parameter names); the backbone is the model's timm FeatureListNet
    state = torch.load(root / f"resnet18_random_seed{seed}.pth", weights_only=True)
    (backbone,) = [m for m in module.model.modules() if type(m).__name__ == "FeatureListNet"]
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    # unexpected: the layers after the last one used (timm drops them) and the classifier
    if missing or any(not k.startswith(("fc.", "layer4.")) for k in unexpected):
        raise SystemExit(f"weights do not fit anomalib's backbone: {missing[:3]} {unexpected[:3]}")
    engine = Engine(
        default_root_dir=str(root / "_anomalib" / model / category),
        logger=False,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        max_epochs=HEAD_EPOCHS.get(model, 1),
    )
    start = time.perf_counter()
    engine.fit(model=module, datamodule=datamodule)
    fit = time.perf_counter() - start
    start = time.perf_counter()
    results = engine.test(model=module, datamodule=datamodule, verbose=False)[0]
    tested = time.perf_counter() - start
    n_test = len(datamodule.test_data)
    return {
        "library": "anomalib 2.7.0",
        "model": model,
        "anomalib_model": ANOMALIB_NAMES[model],
        "category": category,
        "image_auroc": float(results["image_AUROC"]),
        "pixel_auroc": float(results["pixel_AUROC"]) if "pixel_AUROC" in results else None,
        "fit_s": round(fit, 2),
        "predict_img_per_s": round(n_test / tested, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--anomalib-python", default=None, help="python of anomalib's venv")
    parser.add_argument("--models", nargs="*", default=["patchcore", "padim"], choices=OUR_BLOCKS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--root", type=Path, default=None, help="reuse prepared data here")
    parser.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    parser.add_argument("--anomalib-only", nargs=2, metavar=("CATEGORY", "MODEL"))
    parser.add_argument("--held-out", default="", help="comma-separated file names")
    parser.add_argument(
        "--reduce", default="auto", help="the project's score.patch_reduce (max: anomalib's rule)"
    )
    parser.add_argument("--no-anomalib", action="store_true", help="the project's rows only")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.anomalib_only:  # the child process, in anomalib's venv
        category, model = args.anomalib_only
        held_out = [n for n in args.held_out.split(",") if n]
        result = anomalib_run(args.root, category, model, args.seed, held_out)
        print(json.dumps(result), flush=True)
        return
    os.environ.setdefault("TQDM_DISABLE", "1")
    root = args.root or Path(tempfile.mkdtemp(prefix="anomalib_cmp_"))
    categories = (
        sorted(p.name for p in root.iterdir() if p.name.startswith("fabric"))
        if args.root and any(root.glob("fabric*"))
        else prepare(root, args.seed)
    )
    random_weights(root, args.seed)
    rows = []
    for model in args.models:
        for category in categories:
            mine = ours(root, category, model, args.seed, args.reduce)
            held_out = mine.pop("held_out")
            rows.append(mine)
            print(json.dumps(rows[-1]), flush=True)
            if args.anomalib_python and not args.no_anomalib:
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
                done = subprocess.run(
                    [
                        args.anomalib_python,
                        __file__,
                        "--root",
                        str(root),
                        "--seed",
                        str(args.seed),
                        "--threads",
                        str(args.threads),
                        "--anomalib-only",
                        category,
                        model,
                        "--held-out",
                        ",".join(held_out),
                    ],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if done.returncode != 0:
                    print(done.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"anomalib run failed for {model} {category}")
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(rows[-1]), flush=True)
    if args.out:
        sys.path.insert(0, str(REPO / "benchmarks"))
        from ablate_features import _machine_line, commit

        provenance = {"commit": commit(), **_machine_line()}
        with open(args.out, "a") as handle:
            for row in rows:
                handle.write(json.dumps({**row, **provenance}) + "\n")


if __name__ == "__main__":
    main()

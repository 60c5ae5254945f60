"""Lint, format and the benchmark script stay working."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

RUFF = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
SOURCES = ["src", "stages", "tests", "benchmarks", "scripts"]


@pytest.mark.skipif(not Path(RUFF).exists(), reason="ruff is installed by `make setup`")
def test_ruff_lint_and_format_are_clean():
    lint = subprocess.run([RUFF, "check", *SOURCES], cwd=REPO, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    fmt = subprocess.run(
        [RUFF, "format", "--check", *SOURCES], cwd=REPO, capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stdout


def test_benchmark_script_reports_every_model(tmp_path):
    out = tmp_path / "bench.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench_models.py",
            "--device",
            "cpu",
            "--tile",
            "16",
            "--batch",
            "4",
            "--steps",
            "1",
            "--models",
            "ae,cae,padim",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["model"] for r in rows] == ["ae", "cae", "padim"]
    assert all(r["train_tiles_per_s"] > 0 and r["score_tiles_per_s"] > 0 for r in rows)
    # Gradient models: also fed by the pipeline's loader; memory models: the bank build.
    assert all(r["loader_ratio"] > 0 for r in rows[:2])
    assert rows[2]["bank_build_seconds"] > 0 and rows[2]["bank"]["memory_bank"] == 1408
    # Each model in its own process: its own peak memory, not the largest so far.
    assert len({r["peak_memory_mib"] for r in rows}) == 3


def test_benchmark_models_default_list_and_composites():
    """`make bench` runs every model by default; a composite model (the ensemble, whose
    cost is its members') is left out of the default and refused in one line, not with
    a traceback from a worker process."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_models
    from anomaly.models.registry import available_models

    assert set(bench_models.benchmarkable()) == set(available_models()) - {"ensemble"}
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_models.py", "--models", "ensemble"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "'ensemble' is not a benchmarkable model" in result.stderr
    assert "Traceback" not in result.stderr


def test_stage_benchmark_smoke(tmp_path):
    """`make bench`'s stage part on tiny data: every stage's wall time and its own peak
    RSS (a child process each), and the memory-growth check, in one JSON file."""
    out = tmp_path / "stages.json"
    result = subprocess.run(
        [
            sys.executable,
            "benchmarks/bench_stages.py",
            "--tiny",
            "--scale",
            "2",
            "--out",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["machine"]["cores"] >= 1
    assert [r["stage"] for r in data["stages"]][:2] == ["download", "patchify"]
    assert all(r["seconds"] > 0 and r["peak_rss_mib"] > 50 for r in data["stages"])
    scaling = data["memory_scaling"]["stages"]
    assert {r["stage"] for r in scaling} >= {"patchify", "train", "score", "evaluate"}
    assert all("growth" in r for r in scaling)


def test_dvc_yaml_runs_every_stage_through_its_script():
    """dvc.yaml, stages/ and pipeline.STAGES name the same stages, and each stage depends on
    its own script and its own module (so a changed stage body reruns the stage)."""
    import yaml

    from anomaly.pipeline import STAGES

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(stages) == set(STAGES)
    for name, stage in stages.items():
        assert stage["cmd"] == f"python stages/{name}.py"
        assert (REPO / "stages" / f"{name}.py").is_file()
        assert {f"stages/{name}.py", f"src/anomaly/stages/{name}.py"} <= set(stage["deps"]), name


def test_real_texture_benchmark_writes_an_mvtec_folder_of_real_photos(tmp_path):
    """The real-photo validation data: unseen test regions, one defect per image, masks
    that cover what changed, read back by the folder reader as an official split."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import numpy as np
    from PIL import Image

    import real_textures
    from anomaly.data.folder import read_folder

    base = real_textures.make_dataset(tmp_path, "brick", n_train=6, n_test=8, seed=0)
    frame = read_folder(base)
    train = frame[frame["source_split"] == "train"]
    test = frame[frame["source_split"] == "test"]
    assert len(train) == 6 and train["label"].eq(0).all()
    assert test["label"].sum() == 8 and test["label"].eq(0).sum() == 8
    assert sorted(test.loc[test["label"].eq(1), "defect_type"].unique()) == sorted(
        real_textures.DEFECTS
    )
    assert test.loc[test["label"].eq(1), "mask_path"].ne("").all()

    rng = np.random.default_rng(0)
    photo = real_textures._photo("brick")
    other = real_textures._photo("grass")
    for kind in real_textures.DEFECTS:
        crop = real_textures._crop(photo, (256, 512), rng)
        defective, mask = real_textures.draw_defect(crop, kind, other, rng)
        assert 20 < mask.sum() < 0.1 * mask.size, kind
        changed = np.abs(defective - crop) > 1e-6
        assert changed[mask].mean() > 0.5, kind  # the defect is where the mask says
        if kind != "stain":  # a stain fades out smoothly past its mask
            assert not changed[~mask].any(), kind
    mask_png = np.array(Image.open(next((base / "ground_truth").rglob("*_mask.png"))))
    assert set(np.unique(mask_png)) <= {0, 255}


def test_defect_visibility_counts_a_smear_on_a_flat_region_as_invisible():
    """benchmarks/defect_visibility.py: a smear on a flat crop changes nothing and is
    counted invisible; a scratch is not; the ceiling puts the invisible ones at chance.
    The samples it measures are the ones label_free_real writes (same draws)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import numpy as np

    import defect_visibility
    import label_free_real

    rng = np.random.default_rng(0)
    flat = np.full((128, 128, 1), 0.5, dtype=np.float32)
    draws = {
        kind: label_free_real.draw_defect(flat, kind, flat, rng) for kind in ("smear", "scratch")
    }
    samples = [
        label_free_real.Sample("test", kind, 0, image, flat, mask)
        for kind, (image, mask) in draws.items()
    ]
    rows = {r["kind"]: r for r in defect_visibility.visibility_rows("t", "flat", samples)}
    assert rows["smear"]["invisible"] == 1 and rows["smear"]["median_change"] == 0.0
    assert rows["scratch"]["invisible"] == 0 and rows["scratch"]["min_change"] > 50
    assert defect_visibility.ceiling(list(rows.values())) == 0.75

    drawn = list(label_free_real.samples("moon", 2, 4, seed=0))
    assert [(s.split, s.kind) for s in drawn[:6]] == [("train", "good")] * 2 + [
        ("test", "good")
    ] * 4
    assert [s.kind for s in drawn[6:]] == list(label_free_real.real_textures.DEFECTS)
    for sample in drawn[6:]:
        assert np.array_equal(sample.image[~sample.mask], sample.clean[~sample.mask]) or (
            sample.kind == "stain"  # a stain fades out past its mask
        )


def test_ensemble_study_standardises_on_good_validation_and_combines(tmp_path):
    """benchmarks/ensemble_real.py: each member's scores are standardised on its good
    validation images, then averaged or maxed; the label-free set gets the same
    combination. Two members that each see half the defects make a better mean."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import numpy as np
    import pandas as pd

    import ensemble_real

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(20, int), np.ones(20, int)]
    for member, (scale, seen) in {"a": (1.0, slice(20, 30)), "b": (100.0, slice(30, 40))}.items():
        folder = tmp_path / "photo" / member
        folder.mkdir(parents=True)
        test = rng.normal(0, 1, 40)
        test[seen] += 6  # each member sees only its half of the defects
        pd.DataFrame({"image_id": np.arange(40), "score": scale * test, "label": labels}).to_csv(
            folder / "test_images.csv", index=False
        )
        pd.DataFrame(
            {"image_id": np.arange(10), "score": scale * rng.normal(0, 1, 10), "label": 0}
        ).to_csv(folder / "val_images.csv", index=False)
        np.savez(
            folder / "val_synthetic.npz",
            good_scores=scale * rng.normal(0, 1, 10),
            defect_scores=scale * rng.normal(2, 1, 10),
        )
    rows = {
        (tuple(r["members"]), r["rule"]): r for r in ensemble_real.candidates(tmp_path / "photo", 2)
    }
    single_a = rows[(("a",), "single")]["image.auroc"]
    single_b = rows[(("b",), "single")]["image.auroc"]
    both = rows[(("a", "b"), "max")]["image.auroc"]
    assert both > max(single_a, single_b) + 0.1  # b's scale (x100) did not swamp a
    assert 0.5 < rows[(("a", "b"), "mean")]["val_synthetic.image.auroc"] <= 1.0

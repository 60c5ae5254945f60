"""Shared fixtures: a tiny project configuration that runs the whole pipeline in seconds."""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]

# Under pytest-xdist each worker is one process on a shared machine: torch's default of
# one thread per core in every worker oversubscribes the cores, and small-tensor training
# then spends most of its time waiting (the DRAEM test took 184 s instead of 15 s).
# One thread per worker, also for the pipelines the tests start as subprocesses.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

# DVC posts a usage report after every command unless told not to: a daemon per command
# that tries the network and, offline, leaves its report in the temp directory. The tests
# must never reach the network; this project's .dvc/config says `analytics = false`, but
# the repositories the tests `dvc init` do not.
os.environ["DVC_NO_ANALYTICS"] = "1"

TINY = {
    "dataset": {
        "synthetic": {
            "n_good": 8,
            "n_defect": 6,
            "width": 256,
            "height": 64,
            "defects": ["fuzzyball", "knots", "broken_pick"],
            "contrast": {"fuzzyball": [0.5, 0.6], "knots": [0.5, 0.6], "broken_pick": [0.5, 0.6]},
        }
    },
    "patch": {"side": 32, "stride": 32},
    "split": {"val_fraction": 0.25, "test_good_fraction": 0.25},
    "models": {
        "cae": {"base_channels": 8, "depth": 2, "latent_channels": 4, "blocks": 0},
        "ae": {"hidden": [64], "latent_dim": 8},
        "vae": {"base_channels": 8, "depth": 2, "latent_dim": 16, "blocks": 0},
    },
    # min_steps_per_epoch 0: tiny sets would otherwise repeat 10x per epoch (its own
    # test is in test_batch_source.py)
    "train": {"epochs": 2, "batch_size": 32, "min_steps_per_epoch": 0},
    "plot": {"dpi": 40, "gallery_per_group": 1},
}


def deep_update(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


def tiny_params(**overrides: dict) -> dict:
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    return deep_update(deep_update(base, TINY), overrides)


def write_params(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run_tiny_pipeline(root: Path, stages: tuple[str, ...] | None = None) -> Path:
    """The tiny pipeline's stages (all by default) run in-process in ``root``: what the
    module-scoped project fixtures of the inference and fault tests build on."""
    from anomaly import pipeline
    from anomaly.params import load_params

    write_params(root / "params.yaml", tiny_params())
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("TQDM_DISABLE", "1")
        params = load_params(root / "params.yaml")
        for name in stages or tuple(pipeline.STAGES):
            pipeline.STAGES[name](params)
    return root


# Up to the bundle: what predict, serve and the image-format faults need.
TO_BUNDLE = ("download", "patchify", "split", "train", "score", "threshold", "export")


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A temporary project root with a tiny params.yaml, as the current directory."""
    write_params(tmp_path / "params.yaml", tiny_params())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def copy_project(dest: Path) -> None:
    """Copy what a fresh clone holds (code, pipeline, params) into ``dest``."""
    for name in ("stages", "src", "dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest / name)


@pytest.fixture(autouse=True)
def _quiet_tqdm(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")

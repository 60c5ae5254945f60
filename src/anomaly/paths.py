"""Where each stage reads and writes, relative to the project root (see dvc.yaml)."""

from __future__ import annotations

from pathlib import Path

RAW = Path("data/raw")
PATCHES = Path("data/patches")
SPLITS = Path("data/splits")
MODELS = Path("models")
SCORES = Path("scores")
METRICS = Path("metrics")
TRAIN_LOG = METRICS / "train"
THRESHOLD = METRICS / "threshold.json"
EVAL = METRICS / "eval.json"
TRAIN_TIME = METRICS / "train_time.json"
CURVES = Path("plots/curves")
FIGURES = Path("plots/figures")
EXPLORE = Path("plots/explore")
EXPLORE_DATA = Path("data/explore")


def manifest(dataset: str) -> Path:
    return RAW / dataset / "manifest.csv"


def model_dir(model: str) -> Path:
    return MODELS / model


def score_dir(model: str) -> Path:
    return SCORES / model

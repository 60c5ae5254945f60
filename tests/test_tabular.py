"""Tabular data end to end: synthetic table and a user's CSV."""

import json

import numpy as np
import pandas as pd
import pytest

from anomaly import pipeline
from anomaly.errors import DataError, ParamsError
from anomaly.params import load_params
from conftest import tiny_params, write_params

AE_10_5_2 = {"ae": {"hidden": [5], "latent_dim": 2, "denoise": 0.0}}


def run(project, **overrides):
    write_params(
        project / "params.yaml",
        tiny_params(
            model="ae", models=AE_10_5_2, train={"epochs": 30, "batch_size": 64}, **overrides
        ),
    )
    params = load_params()
    for stage in pipeline.STAGES.values():
        stage(params)
    return json.loads((project / "metrics/eval.json").read_text())


def test_synthetic_table_separates_anomalies(project):
    metrics = run(project, dataset={"name": "tabular"})
    assert metrics["image.auroc"] > 0.9
    assert "pixel.auroc" not in metrics
    scaler = json.loads((project / "data/splits/scaler.json").read_text())
    train = pd.read_csv(project / "data/splits/train.csv")
    rows = np.load(project / "data/patches/patches.npy")[train["patch_id"]].reshape(len(train), -1)
    assert np.allclose(scaler["mean"], rows.mean(axis=0), atol=1e-5)  # fit on train rows only
    assert (project / "plots/figures/feature_errors.png").is_file()
    assert (project / "plots/explore/features.png").is_file()
    assert (project / "plots/explore/class_balance.png").is_file()
    errors = pd.read_csv(project / "scores/ae/test_feature_errors.csv")
    assert list(errors.columns[2:]) == [f"x{i}" for i in range(10)]


def test_user_csv_with_label_column(project):
    rng = np.random.default_rng(1)
    normal = rng.normal(0, 1, (300, 4))
    odd = rng.normal(4, 1, (20, 4))
    table = pd.DataFrame(np.vstack([normal, odd]), columns=["a", "b", "c", "d"])
    table["is_bad"] = [0] * 300 + [1] * 20
    table.to_csv(project / "mine.csv", index=False)
    metrics = run(
        project,
        dataset={
            "name": "tabular",
            "source": str(project / "mine.csv"),
            "tabular": {"label_column": "is_bad"},
        },
    )
    assert metrics["image.auroc"] > 0.95


def test_bad_csv_and_wrong_model(project):
    pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}).to_csv(project / "bad.csv", index=False)
    write_params(
        project / "params.yaml",
        tiny_params(
            dataset={
                "name": "tabular",
                "source": str(project / "bad.csv"),
                "tabular": {"label_column": None},
            }
        ),
    )
    with pytest.raises(DataError, match=r"bad\.csv: non-numeric column\(s\) b"):
        pipeline.STAGES["download"](load_params())
    write_params(project / "params.yaml", tiny_params(dataset={"name": "tabular"}, model="cae"))
    params = load_params()
    for name in ("download", "patchify", "split"):
        pipeline.STAGES[name](params)
    with pytest.raises(ParamsError, match="needs square image tiles.*use model: ae"):
        pipeline.STAGES["train"](params)

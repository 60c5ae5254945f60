"""Family ``tabular``: rows of numeric features (a CSV, or a synthetic Gaussian table)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..tabular import read_table, synthetic_table, write_table
from .registry import Family, register


def read(params, out: Path) -> tuple[pd.DataFrame, int, dict]:
    cfg = params.dataset.tabular
    if params.dataset.source:
        features, labels, names = read_table(params.dataset.source, cfg.label_column)
        variant = f"CSV {params.dataset.source}"
    else:
        table = synthetic_table(
            params.seed, cfg.n_normal, cfg.n_anomalies, cfg.dims, cfg.shift, cfg.spread
        )
        labels = table.pop("label").to_numpy()
        features, names = table.to_numpy("float32"), list(table.columns)
        variant = f"synthetic Gaussian table ({cfg.dims}-D, {cfg.n_anomalies} anomalies)"
    frame = write_table(out, features, labels, names)
    return frame, 1, {"variant": variant, "kind": "tabular", "features": names}


FAMILY = register(
    Family(
        name="tabular",
        read=read,
        category_type=lambda _category: "table",
        label=lambda _params: "table",
        params_block="tabular",
        score_defaults={"patch_reduce": "mean", "smooth_sigma": 0.0},
        anomaly_kind="whole-image",
    )
)

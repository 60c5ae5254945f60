"""Tabular data: rows of numeric features, one sample per row.

``dataset.source`` names a CSV with numeric feature columns and an optional
label column (``dataset.tabular.label_column``; 0 = normal, anything else =
anomalous); without a source, a synthetic table is generated: 10-D standard
Gaussian normals and anomalies drawn with a shifted mean and a larger spread,
as in the classic 10-5-2 autoencoder example. Rows are stored as float32
``(N, 1, 1, D)`` "tiles" so the rest of the pipeline needs no special path;
standardisation is fitted on the good-only training split (split stage).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..io import write_csv

log = logging.getLogger(__name__)


def synthetic_table(
    seed: int, n_normal: int, n_anomalies: int, dims: int, shift: float, spread: float
) -> pd.DataFrame:
    rng = np.random.default_rng([seed, 21])
    normal = rng.standard_normal((n_normal, dims))
    anomalies = shift + spread * rng.standard_normal((n_anomalies, dims))
    data = np.vstack([normal, anomalies])
    labels = np.r_[np.zeros(n_normal, int), np.ones(n_anomalies, int)]
    order = rng.permutation(len(data))
    frame = pd.DataFrame(data[order], columns=[f"x{i}" for i in range(dims)])
    frame["label"] = labels[order]
    return frame


def read_table(
    path: str | Path, label_column: str | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features (N, D) float32, labels (N,) 0/1 and the feature names."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"dataset.source: {path} is not a file")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc
    labels = np.zeros(len(frame), dtype=int)
    if label_column:
        if label_column not in frame:
            raise DataError(
                f"{path}: no label column {label_column!r} "
                f"(set dataset.tabular.label_column, or null for none)"
            )
        labels = _labels(path, label_column, frame.pop(label_column))
    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        raise DataError(
            f"{path}: non-numeric column(s) {', '.join(map(str, non_numeric))}; "
            "keep only numeric features and the label"
        )
    values = frame.to_numpy(dtype=np.float32)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(f"{path}: row {row + 2}, column {frame.columns[col]!r} is not a number")
    if len(values) == 0:
        raise DataError(f"{path}: no rows")
    return values, labels, [str(c) for c in frame.columns]


def _labels(path: Path, column: str, values: pd.Series) -> np.ndarray:
    """0 = normal, anything else = anomalous; text, empty or NaN labels are errors, since
    ``NaN != 0`` would silently turn those rows into anomalies."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() | ~np.isfinite(numeric.to_numpy(dtype=float, na_value=np.nan))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        shown = "an empty cell" if pd.isna(values.iloc[row]) else repr(str(values.iloc[row]))
        raise DataError(
            f"{path}: label column {column!r} must hold numbers, 0 for normal and 1 for "
            f"anomalous; row {row + 2} has {shown} ({int(bad.sum())} such rows)"
        )
    labels = numeric.to_numpy(dtype=float)
    other = sorted(set(np.unique(labels)) - {0.0, 1.0})
    if other:
        log.warning(
            "%s: label column %r holds values other than 0 and 1 (%s); every non-zero "
            "value is taken as anomalous",
            path,
            column,
            ", ".join(f"{v:g}" for v in other[:5]),
        )
    return (labels != 0).astype(int)


def fit_scaler(rows: np.ndarray) -> dict[str, list[float]]:
    """Per-feature mean and std of the good-only training rows (std 1 where constant), so
    no statistic of validation or test rows leaks into the features."""
    rows = rows.reshape(len(rows), -1).astype(np.float64)
    std = rows.std(axis=0)
    return {"mean": rows.mean(axis=0).tolist(), "std": np.where(std > 1e-12, std, 1.0).tolist()}


def write_table(
    out: Path, features: np.ndarray, labels: np.ndarray, names: list[str]
) -> pd.DataFrame:
    """Store the table under ``out`` and return a manifest with one row per sample."""
    table = pd.DataFrame(features, columns=names)
    table["label"] = labels
    write_csv(out / "table.csv", table)
    return pd.DataFrame(
        {
            "image_path": [f"table.csv#{i}" for i in range(len(labels))],
            "mask_path": "",
            "label": labels,
            "defect_type": np.where(labels == 1, "anomaly", "good"),
            "group": "table",
            "source_split": "",
        }
    )

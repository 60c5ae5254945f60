"""Family ``synthetic_fabric``: generated AITEX-layout rolls (offline, exact masks)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..aitex import fabric_of, read_aitex
from ..synthetic_fabric import FABRIC_CODES, generate
from .registry import Family, register


def read(params, out: Path) -> tuple[pd.DataFrame, int, dict]:
    data_dir = out / "images"
    generate(params.dataset.synthetic, params.seed, data_dir)
    frame = read_aitex(data_dir, params.dataset.categories)
    for column in ("image_path", "mask_path"):
        frame[column] = frame[column].map(
            lambda p: ";".join(f"images/{m}" for m in p.split(";")) if p else ""
        )
    return frame, 1, {"variant": "synthetic AITEX-like rolls"}


FAMILY = register(
    Family(
        name="synthetic_fabric",
        read=read,
        group_of=fabric_of,
        categories=lambda params: [FABRIC_CODES[f] for f in params.dataset.synthetic.fabrics],
        category_type=lambda _category: "texture",
        params_block="synthetic",
    )
)

"""Family ``mnist``: one-class MNIST, the category is the normal digit."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ...errors import ParamsError
from ..mnist import write_mnist
from ..sources import cache_root
from .registry import Family, register

log = logging.getLogger(__name__)


def read(params, out: Path) -> tuple[pd.DataFrame, int, dict]:
    frame, variant = write_mnist(
        out,
        params.dataset.source,
        params.dataset.normal_class,
        cache_root(params.dataset.cache_dir),
    )
    log.info("MNIST: %s", variant)
    return frame, 1, {"variant": variant, "normal_class": params.dataset.normal_class}


def select(category: str) -> list[str]:
    """A sweep category of MNIST is the normal digit."""
    if not category.isdigit():
        raise ParamsError(
            f"params.yaml: sweep.categories has {category!r}; for mnist the categories are "
            "the normal digits 0-9"
        )
    return ["-S", f"dataset.normal_class={int(category)}"]


FAMILY = register(
    Family(
        name="mnist",
        read=read,
        categories=lambda _params: [str(digit) for digit in range(10)],
        category_type=lambda _category: "digit",
        select=select,
        label=lambda params: f"digit {params.get('dataset.normal_class')}",
        # A wrong digit is a whole-image anomaly: the mean error of the unsmoothed map
        # (README: cae 0.685 -> see the MNIST table with the fabric setting).
        score_defaults={"patch_reduce": "mean", "smooth_sigma": 0.0},
        anomaly_kind="whole-image",
    )
)

"""Unsupervised visual anomaly detection as a reproducible DVC pipeline.

``from anomaly import load_detector`` is the Python API for trained models
(:mod:`anomaly.inference.detector`); it is imported on first use, so ``import anomaly``
stays cheap for the stages, which need only ``__version__``.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_detector"]


def __getattr__(name: str) -> Any:
    if name == "load_detector":
        from .inference.detector import load_detector

        return load_detector
    raise AttributeError(f"module 'anomaly' has no attribute {name!r}")

"""Unsupervised visual anomaly detection as a reproducible DVC pipeline."""

__version__ = "0.1.0"

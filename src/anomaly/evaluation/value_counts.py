"""Exact statistics of float16 values in bounded memory (numpy only).

Maps are stored as float16, so at most 65,536 distinct values exist: counting them
keeps every statistic of millions of pixels (percentiles, F1 at any threshold, the
AUROC) exact in bounded memory, where a random subsample would only estimate it.
A module of its own so that stages that only count (evaluate) need not import torch
(it was most of evaluate's memory and start-up time).
"""

from __future__ import annotations

import numpy as np


def float16_key_counts(values: np.ndarray) -> np.ndarray:
    """Counts (65,536,) of a float16 array's values, indexed by an order-preserving key:
    a fixed-size histogram that several arrays add into (streaming, bounded memory)."""
    bits = np.ascontiguousarray(values, dtype=np.float16).ravel().view(np.uint16)
    bits = np.where(bits == 0x8000, np.uint16(0), bits)  # -0.0 is 0.0
    # An order-preserving key: flip all bits of negatives, the sign bit of positives.
    key = np.where(bits & 0x8000, ~bits, bits | 0x8000).astype(np.uint16)
    return np.bincount(key, minlength=1 << 16).astype(np.int64)


def counts_table(key_counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values, counts) ascending, from :func:`float16_key_counts` (or their sum)."""
    used = np.flatnonzero(key_counts)
    back = used.astype(np.uint16)
    back = np.where(back & 0x8000, back & 0x7FFF, ~back).astype(np.uint16)
    return back.view(np.float16).astype(np.float32), key_counts[used].astype(np.int64)


def float16_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values and their counts of a float16 array, ascending."""
    return counts_table(float16_key_counts(values))


def merge_counts(
    parts: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Sum several (values, counts) tables into one, ascending by value."""
    if not parts:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    values = np.concatenate([v for v, _ in parts])
    counts = np.concatenate([c for _, c in parts])
    unique, inverse = np.unique(values, return_inverse=True)
    return unique, np.bincount(inverse, weights=counts, minlength=len(unique)).astype(np.int64)

"""Measuring a run: image and pixel metrics with intervals, thresholds, and the
label-free figure (simulated defects on held-out good data)."""

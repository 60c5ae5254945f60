"""Evaluation without labelled defects: simulated defects on held-out good data."""

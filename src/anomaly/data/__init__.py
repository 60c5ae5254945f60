"""Datasets, manifests, patching and splitting."""

"""Stage export: model + normalisation + thresholds -> ``models/<model>.bundle`` (one file).

The bundle is what ``anomaly predict`` and ``anomaly.load_detector`` read: it needs no
project folder. See :mod:`anomaly.inference.bundle` for what it holds and why it is a stage of its
own, after ``threshold``.
"""

from __future__ import annotations

import logging

from ..inference.bundle import bundle_from_pipeline, bundle_path, save_bundle
from ..params import Params

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    """Write the active model's bundle (weights, preprocessing, normalisation, thresholds)."""
    path = save_bundle(bundle_from_pipeline(params), bundle_path(params.model))
    log.info("%s: bundle written (%.1f MB)", path, path.stat().st_size / 1e6)

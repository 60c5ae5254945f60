"""Stage download: ``dataset.*`` -> ``data/raw/<dataset>/`` with manifest.csv and dataset.json."""

from __future__ import annotations

import logging

from .. import paths
from ..data.download import download
from ..params import Params

log = logging.getLogger(__name__)


def run(params: Params) -> None:
    """Fetch or generate the dataset; write its manifest (one row per image)."""
    manifest = download(params, paths.RAW)
    log.info("wrote %s", manifest)

"""What several stages share: the entry point that DVC calls and the split readers."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

import pandas as pd

from .. import paths
from ..errors import AnomalyError
from ..io import is_disk_full, read_csv
from ..logging_utils import setup_logging
from ..params import Params, load_params


def run_guarded(action: Callable[[], object]) -> int:
    """Run ``action``; a user error or a full disk is one ``error:`` line and exit 2,
    an interrupt exit 130. Anything else is a bug and keeps its traceback."""
    try:
        action()
    except AnomalyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        where = exc.filename or "the output folder"
        print(
            f"error: disk full writing {where} ({exc.strerror}); free space and rerun; "
            "no partial output was kept",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("error: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    return 0


def entry(name: str, run: Callable[[Params], None], argv: list[str] | None = None) -> int:
    """``python stages/<name>.py [--params FILE]``: what dvc.yaml calls."""
    parser = argparse.ArgumentParser(prog=f"stages/{name}.py", description=run.__doc__)
    parser.add_argument(
        "--params", default="params.yaml", help="params file (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    setup_logging(logging.INFO)
    return run_guarded(lambda: run(load_params(args.params)))


def split_tiles(name: str, good_only: bool = False) -> pd.DataFrame:
    """The tiles of one split (train, val, test), optionally only the good ones."""
    frame = read_csv(paths.SPLITS / f"{name}.csv", required=["patch_id", "image_id", "label"])
    return frame[frame["label"] == 0] if good_only else frame

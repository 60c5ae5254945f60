"""Run DVC's command line from the package (the sweep and the report use it).

Through ``python -m dvc`` of this interpreter, so the DVC next to the package
runs even when the venv is not activated; a failure becomes one line.
"""

from __future__ import annotations

import subprocess
import sys
from itertools import takewhile
from pathlib import Path

from .errors import AnomalyError


class DvcCommandError(AnomalyError):
    """A DVC command failed (not a DVC repo, unknown revision, a queue error)."""


def run_dvc(
    repo: str | Path, *args: str, capture: bool = True, env: dict[str, str] | None = None
) -> str:
    """``dvc ARGS`` in ``repo``; its stdout, or with ``capture=False`` output goes to the
    terminal (long runs whose logs the user wants to follow); ``env`` replaces the
    environment (the sweep's thread budget for its workers)."""
    cmd = [sys.executable, "-m", "dvc", *args]
    proc = subprocess.run(cmd, cwd=repo, capture_output=capture, text=True, check=False, env=env)
    if proc.returncode != 0:
        words = " ".join(takewhile(lambda a: not a.startswith("-"), args))
        detail = (proc.stderr or "").strip().splitlines()[-1:] if capture else []
        raise DvcCommandError(
            f"{repo}: `dvc {words}` failed" + (f": {detail[0]}" if detail else "")
        )
    return proc.stdout or ""

"""Run this checkout's code: its ``src/`` goes first on the import path, for this process
and for the processes it starts (distributed training workers).

DVC hashes a stage's code in the directory the stage runs in (a queued experiment runs
in a copy under ``.dvc/tmp/exps``), while the editable install (``make setup``) points
at the main working copy, whose code may be edited or on another commit. Importing from
the checkout the stage runs in keeps "the code DVC hashed" and "the code that ran" the
same (measured before this: a queued experiment ran the working copy's edited model).
"""

import os
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")
if sys.path[:1] != [SRC]:
    sys.path.insert(0, SRC)
_rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != SRC]
os.environ["PYTHONPATH"] = os.pathsep.join([SRC, *_rest])

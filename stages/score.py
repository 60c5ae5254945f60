"""DVC stage 'score' (dvc.yaml): src/anomaly/stages/score.py says what it reads and writes."""

import sys

import _checkout  # noqa: F401  (first: this checkout's src/, see _checkout.py)
from anomaly.stages import score
from anomaly.stages.common import entry

if __name__ == "__main__":
    sys.exit(entry("score", score.run, sys.argv[1:]))

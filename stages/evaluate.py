"""DVC stage 'evaluate' (dvc.yaml): src/anomaly/stages/evaluate.py says what it reads and writes."""

import sys

import _checkout  # noqa: F401  (first: this checkout's src/, see _checkout.py)
from anomaly.stages import evaluate
from anomaly.stages.common import entry

if __name__ == "__main__":
    sys.exit(entry("evaluate", evaluate.run, sys.argv[1:]))

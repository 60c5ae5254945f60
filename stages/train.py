"""DVC stage 'train' (dvc.yaml): src/anomaly/stages/train.py says what it reads and writes."""

import sys

import _checkout  # noqa: F401  (first: this checkout's src/, see _checkout.py)
from anomaly.stages import train
from anomaly.stages.common import entry

if __name__ == "__main__":
    sys.exit(entry("train", train.run, sys.argv[1:]))

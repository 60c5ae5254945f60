"""DVC stage 'train' (dvc.yaml): src/anomaly/stages/train.py says what it reads and writes."""

import sys

from anomaly.stages import train
from anomaly.stages.common import entry

if __name__ == "__main__":
    sys.exit(entry("train", train.run, sys.argv[1:]))

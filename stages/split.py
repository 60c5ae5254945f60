"""DVC stage 'split' (dvc.yaml): src/anomaly/stages/split.py says what it reads and writes."""

import sys

from anomaly.stages import split
from anomaly.stages.common import entry

if __name__ == "__main__":
    sys.exit(entry("split", split.run, sys.argv[1:]))

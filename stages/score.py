"""DVC stage 'score' (dvc.yaml): src/anomaly/stages/score.py says what it reads and writes."""

import sys

from anomaly.stages import score
from anomaly.stages.common import entry

if __name__ == "__main__":
    sys.exit(entry("score", score.run, sys.argv[1:]))

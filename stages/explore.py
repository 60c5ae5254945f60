"""DVC stage 'explore' (dvc.yaml): src/anomaly/stages/explore.py says what it reads and writes."""

import sys

from anomaly.stages import explore
from anomaly.stages.common import entry

if __name__ == "__main__":
    sys.exit(entry("explore", explore.run, sys.argv[1:]))

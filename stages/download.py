"""DVC stage 'download' (dvc.yaml): src/anomaly/stages/download.py says what it reads and writes."""

import sys

from anomaly.stages import download
from anomaly.stages.common import entry

if __name__ == "__main__":
    sys.exit(entry("download", download.run, sys.argv[1:]))

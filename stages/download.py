"""DVC stage 'download' (dvc.yaml): src/anomaly/stages/download.py says what it reads and writes."""

import sys

import _checkout  # noqa: F401  (first: this checkout's src/, see _checkout.py)
from anomaly.stages import download
from anomaly.stages.common import entry

if __name__ == "__main__":
    sys.exit(entry("download", download.run, sys.argv[1:]))

"""DVC stage 'plot' (dvc.yaml): src/anomaly/stages/plot.py says what it reads and writes."""

import sys

import _checkout  # noqa: F401  (first: this checkout's src/, see _checkout.py)
from anomaly.stages import plot
from anomaly.stages.common import entry

if __name__ == "__main__":
    sys.exit(entry("plot", plot.run, sys.argv[1:]))

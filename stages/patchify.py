"""DVC stage 'patchify' (dvc.yaml): src/anomaly/stages/patchify.py says what it reads and writes."""

import sys

import _checkout  # noqa: F401  (first: this checkout's src/, see _checkout.py)
from anomaly.stages import patchify
from anomaly.stages.common import entry

if __name__ == "__main__":
    sys.exit(entry("patchify", patchify.run, sys.argv[1:]))

"""DVC stage 'explore': see dvc.yaml and ARCHITECTURE.md for what it reads and writes."""

import sys

from anomaly.cli import main

if __name__ == "__main__":
    sys.exit(main(["explore", *sys.argv[1:]]))

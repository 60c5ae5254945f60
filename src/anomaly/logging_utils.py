"""Per-epoch training logs that `dvc plots` can draw.

dvclive when it is installed (the normal case); otherwise a small writer
that produces the same files (``<dir>/metrics.json`` and
``<dir>/plots/metrics/<name>.tsv``), so the package also runs where DVC is
not installed, such as a bare GPU box.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any, Protocol

from .io import write_text

log = logging.getLogger(__name__)

# Loggers of libraries that are chatty at INFO. faiss's loader logs a
# ModuleNotFoundError for every CPU-specific build it tries before the one that loads:
# harmless, but read by users as an error in the middle of a run.
QUIET_LIBRARIES = ("faiss",)


def setup_logging(level: int = logging.INFO) -> None:
    """The CLI's and the stages' log format and level, libraries' INFO chatter off."""
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))


class EpochLogger(Protocol):
    def log(self, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


class TsvLogger:
    """Fallback with dvclive's file layout."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.step = 0
        self.latest: dict[str, Any] = {}
        (self.dir / "plots" / "metrics").mkdir(parents=True, exist_ok=True)
        for old in (self.dir / "plots" / "metrics").rglob("*.tsv"):
            old.unlink()

    def log(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            path = self.dir / "plots" / "metrics" / f"{name}.tsv"
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists()
            with path.open("a", newline="") as handle:
                writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
                if new:
                    writer.writerow(["step", name.split("/")[-1]])
                writer.writerow([self.step, value])
            self._set(name, value)
        self.latest["step"] = self.step
        # Byte for byte what dvclive writes (indent 4), so that a run that fell back to
        # this writer gives the same files, and the same dvc.lock hashes, as one that did not.
        write_text(self.dir / "metrics.json", json.dumps(self.latest, indent=4) + "\n")
        self.step += 1

    def _set(self, name: str, value: float) -> None:
        node = self.latest
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value

    def close(self) -> None:
        pass


class LiveLogger:
    """dvclive, configured to write files only (the pipeline's dvc.yaml declares them)."""

    def __init__(self, directory: str | Path) -> None:
        from dvclive import Live

        self.live = Live(dir=str(directory), save_dvc_exp=False, dvcyaml=None, report=None)

    def log(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self.live.log_metric(name, value)
        self.live.next_step()

    def close(self) -> None:
        self.live.end()


def make_logger(directory: str | Path) -> EpochLogger:
    try:
        return LiveLogger(directory)
    except ImportError:
        return TsvLogger(directory)
    except Exception as exc:  # dvclive refuses e.g. a git repo without commits
        log.warning("dvclive unavailable (%s); writing the same files without it", exc)
        return TsvLogger(directory)

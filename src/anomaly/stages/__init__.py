"""One module per DVC stage: each reads its inputs, calls domain code, writes its outputs.

Each module is its own DVC dependency (see dvc.yaml), so editing the plot stage
reruns only ``plot``. Stage modules import domain modules, never each other; this
package's ``__init__`` imports nothing, so importing one stage never loads another.
"""

NAMES = (
    "download",
    "patchify",
    "split",
    "explore",
    "train",
    "score",
    "threshold",
    "export",
    "evaluate",
    "plot",
)

"""MkDocs hook: the pipeline's committed figures (plots/figures, plots/explore) into the
site, so the docs show what the last `dvc repro` drew rather than a hand-copied image.

They are copied into ``docs/pipeline/`` (git-ignored) before each build."""

from __future__ import annotations

import shutil
from pathlib import Path

FIGURES = ("plots/figures", "plots/explore")


def on_pre_build(config) -> None:
    docs = Path(config["docs_dir"])
    root = Path(config["config_file_path"]).parent
    target = docs / "pipeline"
    shutil.rmtree(target, ignore_errors=True)
    for folder in FIGURES:
        source = root / folder
        if source.is_dir():
            shutil.copytree(source, target / folder, ignore=shutil.ignore_patterns("*.tmp"))

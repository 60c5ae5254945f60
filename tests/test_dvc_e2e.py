"""The real `dvc repro` in a temporary git repository, as a user runs it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import copy_project, tiny_params, write_params

DVC = str(Path(sys.executable).with_name("dvc"))
if not Path(DVC).exists():
    DVC = shutil.which("dvc") or "dvc"
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("dvc")]


def sh(*cmd, cwd):
    # dvc runs the stages' `python`: make it this interpreter, as an activated venv would.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {
        **os.environ,
        "PATH": path,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def test_dvc_repro_end_to_end(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_project(repo)
    write_params(repo / "params.yaml", tiny_params())
    sh("git", "init", "-q", cwd=repo)
    sh(DVC, "init", "-q", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "init", cwd=repo)

    out = sh(DVC, "repro", cwd=repo)
    for stage in [
        "download",
        "patchify",
        "split",
        "train",
        "score",
        "threshold",
        "evaluate",
        "plot",
    ]:
        assert f"Running stage '{stage}'" in out
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert 0.0 <= metrics["image.auroc"] <= 1.0 and "pixel.aupro" in metrics
    assert (repo / "plots/figures/roc.png").is_file()

    again = sh(DVC, "repro", cwd=repo)
    assert "Running stage" not in again

    write_params(repo / "params.yaml", tiny_params(threshold={"percentile": 80}))
    changed = sh(DVC, "repro", cwd=repo)
    ran = {line.split("'")[1] for line in changed.splitlines() if "Running stage" in line}
    assert ran == {"threshold", "evaluate", "plot"}

    shown = sh(DVC, "metrics", "show", "--json", cwd=repo)
    assert "image.auroc" in shown
    html = sh(DVC, "plots", "show", "-o", str(tmp_path / "plots_html"), cwd=repo)
    assert (tmp_path / "plots_html" / "index.html").is_file(), html

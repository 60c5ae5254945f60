"""One sweep shared by two machines: two clones of a bare git repository with one local
DVC remote, each running its shard and pushing, one pulling and reporting all."""

from __future__ import annotations

import hashlib
import sys

import pandas as pd
import pytest

from conftest import copy_project, tiny_params, write_params
from test_dvc_e2e import DVC, sh

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("sweep_remote")]


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_two_clones_share_a_sweep_through_git_and_dvc_remotes(tmp_path):
    start = tmp_path / "start"
    start.mkdir()
    copy_project(start)
    write_params(
        start / "params.yaml",
        tiny_params(
            model="ae",
            train={"epochs": 1},
            plot={"latent": "none", "dpi": 30, "gallery_per_group": 1},
            sweep={"models": ["ae"], "categories": ["01", "02"], "remote": "origin"},
        ),
    )
    sh("git", "init", "-q", cwd=start)
    sh(DVC, "init", "-q", cwd=start)
    sh(DVC, "remote", "add", "-d", "team", str(tmp_path / "dvc-store"), cwd=start)
    sh("git", "add", "-A", cwd=start)
    sh("git", "commit", "-qm", "sweep setup", cwd=start)
    shared = tmp_path / "shared.git"
    sh("git", "clone", "-q", "--bare", str(start), str(shared), cwd=tmp_path)

    machines = {}
    for shard in (1, 2):
        clone = tmp_path / f"machine{shard}"
        sh("git", "clone", "-q", str(shared), str(clone), cwd=tmp_path)
        out = sh(
            sys.executable, "-m", "anomaly", "sweep", "--run", "--shard", f"{shard}/2", cwd=clone
        )
        assert "pushing the experiments of HEAD to origin" in out
        machines[shard] = clone
    # Round robin over [ae-01, ae-02]: machine 1 ran ae-01, machine 2 ran ae-02.
    listed = sh(DVC, "exp", "list", "origin", cwd=machines[1])
    assert "ae-01" in listed and "ae-02" in listed

    # Machine 1 reports: it pulls machine 2's experiment first (params: sweep.remote).
    out = sh(sys.executable, "-m", "anomaly", "report", cwd=machines[1])
    assert "pulling experiments" in out
    rows = pd.read_csv(machines[1] / "reports/runs.csv")
    experiments = rows[rows["kind"] == "experiment"]
    assert set(experiments["name"]) == {"ae-01", "ae-02"}
    assert experiments["image.auroc"].between(0, 1).all()

    # Machine 2's trained model reaches machine 1 through the DVC remote: applying the
    # experiment restores its weights, identical to what machine 2 trained.
    sh(DVC, "exp", "apply", "ae-02", cwd=machines[2])
    sh(DVC, "exp", "apply", "ae-02", cwd=machines[1])
    weights = "models/ae/model.pt"
    assert _md5(machines[1] / weights) == _md5(machines[2] / weights)
    # Without the remote the pull would have found no outputs: the store holds them.
    assert any((tmp_path / "dvc-store").rglob("*"))

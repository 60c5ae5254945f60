"""The real `dvc repro` in a temporary git repository, as a user runs it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from anomaly.pipeline import STAGES
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


def test_dvc_commands_in_the_tests_never_reach_the_network(tmp_path, monkeypatch):
    """conftest turns DVC's usage reports off: a repository of `dvc init` would otherwise
    post one per command, and leave it in the temp directory when offline."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    repo = tmp_path / "repo"
    repo.mkdir()
    sh("git", "init", "-q", cwd=repo)
    sh(DVC, "init", "-q", cwd=repo)
    sh(DVC, "status", cwd=repo)
    assert "analytics" not in (repo / ".dvc/config").read_text()  # on, as DVC ships it
    assert sorted(p.name for p in temp.iterdir()) == []


def test_dvc_repro_end_to_end(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_project(repo)
    write_params(
        repo / "params.yaml", tiny_params(sweep={"models": ["ae", "vae"], "categories": []})
    )
    sh("git", "init", "-q", cwd=repo)
    sh(DVC, "init", "-q", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "init", cwd=repo)

    out = sh(DVC, "repro", cwd=repo)
    # Every stage of dvc.yaml ran, the same ones the package runs in process.
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert 0.0 <= metrics["image.auroc"] <= 1.0 and "pixel.aupro" in metrics
    for figure in ("roc.png", "threshold_study.png", "latent_space.png"):
        assert (repo / "plots/figures" / figure).is_file(), figure
    for figure in ("examples.png", "defect_sizes.png", "intensity.png", "class_balance.png"):
        assert (repo / "plots/explore" / figure).is_file(), figure

    again = sh(DVC, "repro", cwd=repo)
    assert "Running stage" not in again

    write_params(
        repo / "params.yaml",
        tiny_params(
            threshold={"percentile": 80}, sweep={"models": ["ae", "vae"], "categories": []}
        ),
    )
    changed = sh(DVC, "repro", cwd=repo)
    ran = {line.split("'")[1] for line in changed.splitlines() if "Running stage" in line}
    assert ran == {"threshold", "export", "evaluate", "plot"}

    shown = sh(DVC, "metrics", "show", "--json", cwd=repo)
    assert "image.auroc" in shown
    html = sh(DVC, "plots", "show", "-o", str(tmp_path / "plots_html"), cwd=repo)
    assert (tmp_path / "plots_html" / "index.html").is_file(), html

    # Two experiments, then the report must list them with the same numbers as DVC ...
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "baseline", cwd=repo)
    # ... queued and run as `anomaly sweep --run` does (params: sweep.models = [ae, vae]),
    # in a fresh clone (empty DVC cache) whose tiling param changed after the committed
    # dvc.lock: the second run restores patchify from the run-cache, and split once
    # failed there ("failed to load directory data/patches": the lock's directory object
    # is not in this cache) while the sweep exited 0. Split depends on the directory now.
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path)
    edited = (clone / "params.yaml").read_text()
    assert "min_defect_pixels: 16\n" in edited
    (clone / "params.yaml").write_text(
        edited.replace("min_defect_pixels: 16\n", "min_defect_pixels: 12\n")
    )
    sh("git", "commit", "-qam", "a tiling param, dvc.lock not updated", cwd=clone)
    repo = clone
    swept = sh(sys.executable, "-m", "anomaly", "sweep", "--run", cwd=repo)
    assert "is cached - skipping run" in swept  # the restore that used to fail
    assert "-n ae-all -S model=ae" in swept and "-n vae-all -S model=vae" in swept
    shown = json.loads(
        subprocess.run(
            [DVC, "exp", "show", "--json"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout
    )
    expected = {}
    for entry in shown:
        runs = [entry] + [e["revs"][0] for e in entry.get("experiments") or []]
        for run in runs:
            if run["rev"] != "workspace":
                data = run["data"]["metrics"]["metrics/eval.json"]["data"]
                expected[run["rev"]] = (run.get("name"), data["model"], data["image.auroc"])
    assert len(expected) == 3  # the baseline commit and two experiments

    sh(sys.executable, "-m", "anomaly", "report", cwd=repo)
    report_dir = repo / "reports"
    rows = pd.read_csv(report_dir / "runs.csv")
    assert set(rows["run_id"]) == set(expected)
    for _, row in rows.iterrows():
        _, model, auroc = expected[row["run_id"]]
        assert row["model"] == model
        assert row["image.auroc"] == pytest.approx(auroc)
    assert set(rows.loc[rows["kind"] == "experiment", "name"]) == {"ae-all", "vae-all"}
    assert "params.model" in rows.columns  # a param that differs between runs
    assert "params.seed" not in rows.columns  # one that does not
    for figure in ("heatmap_image_auroc.png", "f1_by_model.png"):
        assert (report_dir / figure).stat().st_size > 1000, figure
    # one category: no spread-over-categories or texture-vs-object figure
    assert not (report_dir / "metric_spread.png").exists()
    assert not (report_dir / "texture_vs_object.png").exists()
    summary = (report_dir / "summary.md").read_text()
    assert "| vae |" in summary and "| ae |" in summary and "3 runs" in summary

    # Incremental: a removed experiment stays in the report.
    sh(DVC, "exp", "remove", "vae-all", cwd=repo)
    sh(sys.executable, "-m", "anomaly", "report", cwd=repo)
    assert len(pd.read_csv(report_dir / "runs.csv")) == 3

    # Branches: an experiment promoted to a branch is compared with --rev.
    sh(DVC, "exp", "branch", "ae-all", "other", cwd=repo)
    diff = sh(DVC, "metrics", "diff", "HEAD", "other", "--all", cwd=repo)
    assert "image.auroc" in diff
    sh(sys.executable, "-m", "anomaly", "report", "--rev", "other", cwd=repo)
    rows = pd.read_csv(report_dir / "runs.csv")
    # The branch tip is the experiment's commit: its row is updated, not duplicated.
    assert len(rows) == 3
    branch = rows[rows["baseline"] == "other"]
    assert list(branch["kind"]) == ["commit"] and list(branch["model"]) == ["ae"]

    # `dvc plots diff` of the two branches, drawn by a real browser where Chromium and an
    # installed Vega are present (`make plots-check` installs Vega once with npm; a test
    # never downloads it).
    vega = Path(os.environ.get("ANOMALY_CACHE", Path.home() / ".cache" / "anomaly-pipeline"))
    vega = vega / "vega"
    if shutil.which("chromium") and (vega / "node_modules/vega/build/vega.min.js").is_file():
        check = sh(
            sys.executable,
            str(Path(__file__).resolve().parents[1] / "scripts" / "check_plots_browser.py"),
            "HEAD",
            "other",
            "--vega-dir",
            str(vega),
            "--out",
            str(tmp_path / "plots_check"),
            cwd=repo,
        )
        assert "drawn in Chromium: " in check
        assert (tmp_path / "plots_check" / "screenshot.png").stat().st_size > 10_000


def _changed_stages(repo) -> set[str]:
    """Stages `dvc status` reports as changed (names without the dvc.yaml prefix)."""
    shown = json.loads(sh(DVC, "status", "--json", cwd=repo) or "{}")
    return {name.split(":")[-1] for name in shown}


def test_exact_boundaries_remote_round_trip_and_fresh_clone(tmp_path):
    """Issue 10: edits rerun exactly the stages that run the edited code; a fresh clone's
    `dvc repro` leaves git clean but for the declared timing file; `dvc push` / `dvc pull`
    restore everything without rerunning; a failing `-S model=foo` keeps committed files."""
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_project(repo)
    write_params(repo / "params.yaml", tiny_params(train={"epochs": 1}))
    sh("git", "init", "-q", cwd=repo)
    sh(DVC, "init", "-q", cwd=repo)
    sh(DVC, "repro", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "repro", cwd=repo)
    assert _changed_stages(repo) == set()

    # Editing code: a comment in the active model's file, another model's, the plot module.
    for path, expected in [
        ("src/anomaly/models/cae.py", {"train", "score"}),
        ("src/anomaly/models/vae.py", set()),
        ("src/anomaly/data/families/mvtec.py", set()),
        ("src/anomaly/data/families/synthetic_fabric.py", {"download"}),
        ("src/anomaly/stages/plot.py", {"plot"}),
        ("src/anomaly/evaluation/metrics.py", {"evaluate"}),
        ("src/anomaly/data/manifest.py", {"download", "patchify", "explore", "evaluate", "plot"}),
    ]:
        target = repo / path
        original = target.read_text()
        target.write_text(original + "\n# an edit\n")
        assert _changed_stages(repo) == expected, path
        target.write_text(original)
    assert _changed_stages(repo) == set()

    # A DVC remote (a local folder here; S3 and others the same way).
    remote = tmp_path / "remote"
    sh(DVC, "remote", "add", "-d", "local", str(remote), cwd=repo)
    sh("git", "commit", "-qam", "remote", cwd=repo)
    sh(DVC, "push", cwd=repo)
    # The bundle in DVC's model registry: a version tag (GTO's convention) is all
    # `dvc artifacts get` needs to fetch it from the remote.
    sh("git", "tag", "-a", "detector@v0.1.0", "-m", "tiny cae", cwd=repo)
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    sh(DVC, "artifacts", "get", str(repo), "detector", "-o", "got.bundle", cwd=fetched)
    assert (fetched / "got.bundle").read_bytes() == (repo / "models/cae.bundle").read_bytes()
    bare = tmp_path / "origin.git"
    sh("git", "clone", "-q", "--bare", str(repo), str(bare), cwd=tmp_path)

    # A teammate's clone: pull, nothing to rerun, every artefact there.
    pulled = tmp_path / "pulled"
    sh("git", "clone", "-q", str(bare), str(pulled), cwd=tmp_path)
    sh(DVC, "pull", cwd=pulled)
    assert _changed_stages(pulled) == set()
    assert (pulled / "models/cae/model.pt").is_file()
    assert "Running stage" not in sh(DVC, "repro", cwd=pulled)

    # Another fresh clone reproduces from scratch: dvc.lock identical, git clean except
    # the declared timing file.
    fresh = tmp_path / "fresh"
    sh("git", "clone", "-q", str(bare), str(fresh), cwd=tmp_path)
    sh(DVC, "repro", cwd=fresh)
    import difflib

    ours, theirs = (repo / "dvc.lock").read_text(), (fresh / "dvc.lock").read_text()
    assert ours == theirs, "".join(
        difflib.unified_diff(ours.splitlines(True), theirs.splitlines(True), n=8)
    )
    status = sh("git", "status", "--porcelain", cwd=fresh).split("\n")
    assert {line[3:] for line in status if line.strip()} <= {"metrics/train_time.json"}

    # An older commit checks out from the cache after a push.
    (repo / "params.yaml").write_text(
        (repo / "params.yaml").read_text().replace("percentile: 95", "percentile: 90")
    )
    sh(DVC, "repro", cwd=repo)
    sh("git", "commit", "-qam", "threshold 90", cwd=repo)
    sh(DVC, "push", cwd=repo)
    sh("git", "checkout", "-q", "HEAD~1", cwd=repo)
    sh(DVC, "checkout", cwd=repo)
    assert _changed_stages(repo) == set()
    sh("git", "checkout", "-q", "-", cwd=repo)
    sh(DVC, "checkout", cwd=repo)

    # An unknown model fails in one line and deletes nothing that git tracks.
    before = sh("git", "status", "--porcelain", cwd=repo)
    failed = subprocess.run(
        [DVC, "exp", "run", "-S", "model=foo"],
        cwd=repo,
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        },
    )
    # DVC checks the templated deps before any stage code runs: its one line names the
    # missing src/anomaly/models/foo.py (and the stage CLI names the known models).
    assert failed.returncode != 0
    assert "src/anomaly/models/foo.py" in failed.stderr
    sh("git", "checkout", "-q", "--", "params.yaml", cwd=repo)
    assert sh("git", "status", "--porcelain", cwd=repo) == before

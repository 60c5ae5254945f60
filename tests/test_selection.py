"""`anomaly select`: candidates as experiments, ranked by the label-free figure, applied."""

import json
import shutil
import subprocess

import pytest
import yaml

from anomaly.cli import main
from anomaly.errors import ParamsError
from anomaly.params import load_params
from anomaly.reporting import selection
from anomaly.reporting.sweep import SweepError
from conftest import copy_project, tiny_params, write_params
from test_dvc_e2e import DVC, sh


def test_candidates_parse_name_and_check():
    parsed = selection.parse_candidates(
        ["padim", {"model": "patchcore", "set": {"models.patchcore.input_size": 256}}]
    )
    assert [c.name for c in parsed] == ["padim", "patchcore-input_size256"]
    assert parsed[1].set_params() == [
        "-S",
        "model=patchcore",
        "-S",
        "models.patchcore.input_size=256",
    ]
    named = selection.parse_candidates(["cae", {"model": "cae", "name": "cae-b", "set": {}}])
    assert [c.name for c in named] == ["cae", "cae-b"]
    for bad, message in [
        (["padim"], "at least two"),
        (["padim", "padim"], "twice"),
        (["padim", "nope"], r"\[1\]\.model is 'nope'"),
        (["padim", {"model": "cae", "sett": {}}], "unknown keys"),
        (["padim", 3], r"\[1\] must be a model name"),
    ]:
        with pytest.raises(ParamsError, match=message):
            selection.parse_candidates(bad)


def test_candidates_on_the_command_line_by_the_names_the_report_shows():
    configured = [
        "patchcore",
        "cae",
        {"model": "patchcore", "name": "whole", "set": {"patch.side": 256}},
    ]
    # dropping the cae: the configured entry keeps its settings, a model gets its defaults
    chosen = selection.named_candidates(["patchcore", "whole", "padim"], configured)
    assert [(c.name, c.model, c.overrides) for c in chosen] == [
        ("patchcore", "patchcore", {}),
        ("whole", "patchcore", {"patch.side": 256}),
        ("padim", "padim", {}),
    ]
    with pytest.raises(
        ParamsError, match=r"--candidates nope: neither .*\(patchcore, cae, whole\)"
    ):
        selection.named_candidates(["patchcore", "nope"], configured)
    with pytest.raises(ParamsError, match=r"^anomaly select: --candidates needs at least two"):
        selection.named_candidates(["whole"], configured)


@pytest.fixture
def git_project(tmp_path, monkeypatch):
    write_params(tmp_path / "params.yaml", tiny_params())
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"]):
        subprocess.run(cmd, cwd=tmp_path, check=True)
    monkeypatch.setattr(selection, "_existing", lambda repo: {})
    return tmp_path


def test_plan_names_runs_by_candidate_and_settings(git_project, monkeypatch):
    params = load_params(git_project / "params.yaml")
    candidates = selection.parse_candidates(["padim", "cae"])
    extra = ["dataset.name=mvtec", "dataset.category=carpet"]
    commands = selection.plan(git_project, params, candidates, extra)
    names = [c[c.index("-n") + 1] for c in commands]
    tag = selection.tag(extra)
    assert names == [f"select-padim-{tag}", f"select-cae-{tag}"]
    assert selection.tag(list(reversed(extra))) == tag  # order of -S does not matter
    assert selection.tag(["dataset.category=grid"]) != tag  # other data, other runs
    pin = ["-S", "score.synthetic_resolution=native"]  # the defects' size, alike for all
    assert all(c[-6:] == ["-S", extra[0], "-S", extra[1], *pin] for c in commands)
    # a candidate that already ran from this commit is reused, not rerun
    monkeypatch.setattr(selection, "_existing", lambda repo: {f"select-padim-{tag}": False})
    assert len(selection.plan(git_project, params, candidates, extra)) == 1
    # a failed one is tried again under its name (-f: DVC refuses a taken name)
    monkeypatch.setattr(selection, "_existing", lambda repo: {f"select-padim-{tag}": True})
    again = selection.plan(git_project, params, candidates, extra)
    assert len(again) == 2 and again[0][-1] == "-f" and again[1][-1] != "-f"
    (git_project / "new.py").write_text("x = 1\n")
    with pytest.raises(SweepError, match=r"untracked files .*new\.py"):
        selection.plan(git_project, params, candidates, extra)


def test_every_candidate_is_graded_on_defects_of_one_size(git_project):
    """The fault this guards against: sized at each candidate's own working resolution,
    the whole image shrunk to 256 px got larger defects in image pixels than 64-px tiles
    at full resolution, and won the figure on 512-px parts where its test AUROC was
    lower (label_free_parts_512_working.jsonl). select pins one resolution for all."""
    params = load_params(git_project / "params.yaml")
    candidates = selection.parse_candidates(
        ["padim", {"model": "patchcore", "name": "whole", "set": {"patch.image_size": 256}}]
    )

    def pins(extra):
        return [
            [c[i + 1] for i in range(len(c) - 1) if c[i] == "-S" and "synthetic_res" in c[i + 1]]
            for c in selection.plan(git_project, params, candidates, extra)
        ]

    native = ["score.synthetic_resolution=native"]
    assert pins([]) == [native, native]  # not the whole-image candidate's 256
    at_256 = ["score.synthetic_resolution=256"]
    assert pins(["patch.image_size=256"]) == [at_256, at_256]  # the user's working size
    assert pins(["score.synthetic_resolution=128"]) == [["score.synthetic_resolution=128"]] * 2
    own = selection.parse_candidates(
        ["padim", {"model": "cae", "set": {"score.synthetic_resolution": 64}}]
    )
    commands = selection.plan(git_project, params, own, [])
    assert "score.synthetic_resolution=64" in commands[1]
    assert "score.synthetic_resolution=native" not in commands[1]


def _record(name, label_free, pixel=None, test=None):
    return {
        "candidate": name,
        "experiment": f"select-{name}-abcdef",
        "val_synthetic.image.auroc": label_free,
        "val_synthetic.image.auroc_ci_low": None if label_free is None else label_free - 0.05,
        "val_synthetic.image.auroc_ci_high": None if label_free is None else label_free + 0.02,
        "val_synthetic.pixel.auroc": pixel,
        "image.auroc": test,
        "seconds": 12.3,
    }


def test_rank_by_the_label_free_figure_then_pixels_failed_runs_last():
    ranked = selection.rank(
        [
            _record("a", 0.80, 0.9),
            _record("broken", None),
            _record("b", 0.91, 0.7),
            _record("c", 0.91, 0.8),
        ]
    )
    assert [r["candidate"] for r in ranked] == ["c", "b", "a", "broken"]
    text = selection.report_markdown(ranked, ["dataset.name=folder"], "c")
    assert "| 1 | c | 0.910 [0.860, 0.930] | 0.800 |" in text
    assert "test image AUROC" not in text  # no labelled defects, no such column
    assert "Applied to the workspace: **c**" in text
    labelled = selection.report_markdown(
        selection.rank([_record("a", 0.8, test=0.95), _record("b", 0.7, test=0.6)]), [], None
    )
    assert "test image AUROC (labelled defects)" in labelled and "| 0.950 |" in labelled


def test_the_report_says_when_the_figure_does_not_separate_the_top_two():
    # intervals are [figure - 0.05, figure + 0.02]
    close = selection.report_markdown(
        selection.rank([_record("a", 0.90), _record("b", 0.88), _record("c", 0.5)]), [], "a"
    )
    assert "does not separate a from b" in close
    apart = selection.report_markdown(
        selection.rank([_record("a", 0.95), _record("b", 0.85)]), [], "a"
    )
    assert "does not separate" not in apart
    # without intervals (too few images for a bootstrap) nothing is claimed either way
    bare = [_record("a", 0.90), _record("b", 0.89)]
    for r in bare:
        r["val_synthetic.image.auroc_ci_low"] = r["val_synthetic.image.auroc_ci_high"] = None
    assert "does not separate" not in selection.report_markdown(selection.rank(bare), [], "a")


def test_the_report_says_when_the_figure_rests_on_few_good_images():
    """Found on a 30-image folder: 4 good validation images, three candidates tied at
    one figure; the report says why and what to do."""
    few = [_record("a", 0.92), _record("b", 0.92)]
    for r in few:
        r["val_synthetic.n_good"] = 4
    text = selection.report_markdown(selection.rank(few), [], "a")
    assert "rests on 4 good validation images" in text and "split.val_fraction" in text
    enough = [_record("a", 0.92), _record("b", 0.80)]
    for r in enough:
        r["val_synthetic.n_good"] = 36
    assert "rests on" not in selection.report_markdown(selection.rank(enough), [], "a")


def test_select_params_are_checked(tmp_path):
    write_params(tmp_path / "params.yaml", tiny_params(select={"candidates": ["padim"]}))
    assert main(["select", "--params", str(tmp_path / "params.yaml"), "--dry-run"]) == 2


@pytest.mark.e2e
@pytest.mark.xdist_group("dvc")
def test_select_runs_ranks_and_applies_the_clearly_better_model(tmp_path):
    """Two candidates on a tiny fabric set: PaDiM (pretrained features) and an MLP
    autoencoder trained for two epochs. Select must pick PaDiM by the label-free figure
    alone, and leave a consistent workspace: its params, metrics, model and bundle."""
    repo = tmp_path / "repo"
    repo.mkdir()
    copy_project(repo)
    write_params(repo / "params.yaml", tiny_params(select={"candidates": ["ae", "padim"]}))
    sh("git", "init", "-q", cwd=repo)
    sh(DVC, "init", "-q", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "init", cwd=repo)
    # as this repository ships: the pipeline's lock, metrics and plots committed ...
    sh(DVC, "repro", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-qm", "repro", cwd=repo)
    # ... and, as in a fresh clone, no outputs and an empty cache: queued runs could not
    # restore the stages they share with the commit (select runs `dvc repro` first)
    sh("git", "clean", "-fdqX", "-e", "!.dvc", cwd=repo)
    shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)
    out = sh("python", "-m", "anomaly", "select", "-S", "dataset.synthetic.n_good=10", cwd=repo)
    assert "padim wins" in out and "`dvc repro` first" in out, out
    ranking = json.loads((repo / "reports/selection.json").read_text())["ranking"]
    assert [r["candidate"] for r in ranking] == ["padim", "ae"]
    best, other = ranking
    assert best["val_synthetic.image.auroc"] > other["val_synthetic.image.auroc"] + 0.1
    assert best["image.auroc"] >= other["image.auroc"]  # the real defects do not disagree
    # the workspace is the winner's
    applied = yaml.safe_load((repo / "params.yaml").read_text())
    assert applied["model"] == "padim"
    # graded at the resolution select pinned for both (the images' own: no image_size)
    assert applied["score"]["synthetic_resolution"] == "native"
    metrics = json.loads((repo / "metrics/eval.json").read_text())
    assert metrics["model"] == "padim"
    assert metrics["val_synthetic.image.auroc"] == best["val_synthetic.image.auroc"]
    assert (repo / "models/padim.bundle").is_file() and (repo / "models/padim").is_dir()
    assert "test image AUROC" in (repo / "reports/selection.md").read_text()
    status = sh(DVC, "status", cwd=repo)
    assert "up to date" in status, status
    # a second select reuses both runs and changes nothing
    again = sh("python", "-m", "anomaly", "select", "-S", "dataset.synthetic.n_good=10", cwd=repo)
    assert "already ran from this commit" in again and "padim wins" in again


def test_untracked_stage_outputs_are_not_lost_inputs(git_project):
    """An applied experiment leaves its outputs in the workspace; where DVC's own
    .gitignore files were never committed git calls them untracked, but a queued run
    restores them from the cache, so they must not stop the next select."""
    (git_project / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  train:\n    cmd: x\n    outs:\n    - path: models/padim\n"
    )
    (git_project / "models/padim").mkdir(parents=True)
    (git_project / "models/padim/model.pt").write_bytes(b"x")
    subprocess.run(["git", "add", "dvc.lock"], cwd=git_project, check=True)
    params = load_params(git_project / "params.yaml")
    candidates = selection.parse_candidates(["padim", "cae"])
    assert len(selection.plan(git_project, params, candidates, [])) == 2


def test_failed_runs_and_baseline_metrics_are_never_ranked(monkeypatch, tmp_path):
    """DVC lists a failed experiment with its baseline's metrics (seen on a fresh clone:
    two failed candidates showed the committed cae run's figures); neither may rank."""
    good = {"model": "padim", "val_synthetic.image.auroc": 0.9}
    baseline = {"model": "cae", "val_synthetic.image.auroc": 0.95}
    monkeypatch.setattr(
        selection,
        "_experiments",
        lambda repo: {
            "select-padim-t": {"failed": False, "eval": good, "seconds": 3},
            "select-cae-t": {"failed": True, "eval": baseline, "seconds": 9},
            "select-ae-t": {"failed": False, "eval": baseline, "seconds": 9},
        },
    )
    candidates = {
        f"select-{c.name}-t": c for c in selection.parse_candidates(["padim", "cae", "ae", "vae"])
    }
    records, failed = selection.collect(tmp_path, candidates)
    assert [r["candidate"] for r in records] == ["padim"]
    assert failed == ["cae", "ae", "vae"]  # failed, someone else's metrics, never ran
    text = selection.report_markdown(selection.rank(records), [], "padim", failed)
    assert "Failed, not ranked: cae, ae, vae." in text

"""The sweep's safety checks and the report's tables, without running DVC.

The end-to-end test (test_dvc_e2e.py) runs both against real experiments.
"""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest

from anomaly.params import load_params
from anomaly.reporting import report, sweep
from conftest import tiny_params, write_params


def _entry(rev: str, model: str, category, auroc: float, name=None, created="2026-11-24T05:00:00"):
    """One ``dvc exp show --json`` run entry with the fields the report reads."""
    return {
        "rev": rev,
        "name": name,
        "data": {
            "rev": rev,
            "timestamp": created,
            "params": {
                "params.yaml": {
                    "data": {
                        "seed": 0,
                        "model": model,
                        "dataset": {"name": "synthetic_fabric", "category": category},
                    }
                }
            },
            "metrics": {
                "metrics/eval.json": {
                    "data": {
                        "model": model,
                        "image.auroc": auroc,
                        "image.f1": auroc - 0.1,
                        "image.f1_max": auroc - 0.05,
                        "pixel.auroc": auroc - 0.02,
                        "image.auroc_ci_low": auroc - 0.05,
                        "image.auroc_ci_high": min(auroc + 0.05, 1.0),
                        "by_defect.nep.recall": 0.5,
                    }
                },
                "metrics/train_time.json": {"data": {"seconds": 12.5}},
                "metrics/threshold.json": {"error": {"type": "FileNotFoundError"}},
            },
        },
        "error": None,
        "experiments": None,
    }


def _exp_show() -> list[dict]:
    base = _entry("a" * 40, "cae", None, 0.9, name="main")
    base["experiments"] = [
        {"name": "vae-01", "revs": [_entry("b" * 40, "vae", "01", 0.8, "vae-01")]},
        {"name": "cae-01", "revs": [_entry("c" * 40, "cae", "01", 0.95, "cae-01")]},
        {"name": "failed", "revs": [{"rev": "d" * 40, "name": "failed", "error": {"msg": "x"}}]},
        {"name": "queued", "revs": [{"rev": "e" * 40, "name": "queued", "data": {"metrics": {}}}]},
    ]
    workspace = _entry("workspace", "cae", None, 0.9)
    return [workspace, base]


def test_collect_reads_commits_and_experiments_and_skips_unfinished():
    records = report.collect(_exp_show())
    assert [r["name"] for r in records] == ["main", "vae-01", "cae-01"]
    by_name = {r["name"]: r for r in records}
    assert by_name["vae-01"]["kind"] == "experiment" and by_name["vae-01"]["baseline"] == "main"
    assert by_name["vae-01"]["category"] == "01" and by_name["main"]["category"] == "all"
    assert by_name["cae-01"]["image.auroc"] == 0.95
    assert by_name["cae-01"]["time.seconds"] == 12.5
    assert by_name["cae-01"]["category_type"] == "texture"
    assert len(report.collect(_exp_show(), include_workspace=True)) == 4


def test_run_whose_metrics_belong_to_other_params_is_left_out_and_named(tmp_path):
    """Params committed without running the pipeline (here: the dataset switched to mnist
    while eval.json still holds the fabric run) must not file fabric numbers under mnist."""
    entries = _exp_show()
    moved = _entry("f" * 40, "cae", None, 0.99, name="cae-mnist")
    moved["data"]["params"]["params.yaml"]["data"]["dataset"]["name"] = "mnist"
    moved["data"]["metrics"]["metrics/eval.json"]["data"]["dataset"] = "synthetic_fabric"
    entries[1]["experiments"].append({"name": "cae-mnist", "revs": [moved]})
    records = report.collect(entries)
    assert "cae-mnist" not in [r["name"] for r in records]
    assert report.stale(entries) == ["cae-mnist"]
    report.write_report(records, tmp_path, "HEAD", [], report.stale(entries))
    assert "cae-mnist" in (tmp_path / "summary.md").read_text()
    # The same run with matching metrics is kept.
    moved["data"]["metrics"]["metrics/eval.json"]["data"]["dataset"] = "mnist"
    archived = report.collect(entries)
    assert "cae-mnist" in [r["name"] for r in archived]
    # An archive (runs.json) that holds the run from before it was found stale loses
    # its row: found on a sweep clone whose table kept the fabric number under mnist.
    moved["data"]["metrics"]["metrics/eval.json"]["data"]["dataset"] = "synthetic_fabric"
    assert report.stale_ids(entries) == {"f" * 40}
    merged = report.merge_runs(archived, report.collect(entries), report.stale_ids(entries))
    assert "cae-mnist" not in [r["name"] for r in merged]
    assert len(merged) == len(archived) - 1


def test_runs_table_keeps_only_differing_params():
    table = report.runs_table(report.collect(_exp_show()))
    assert "params.model" in table.columns and "params.dataset.category" in table.columns
    assert "params.seed" not in table.columns
    assert list(table.columns[:8]) == report.ID_COLUMNS


def test_merge_keeps_old_rows_and_replaces_reruns():
    old = report.collect(_exp_show())
    rerun = [dict(old[1], **{"image.auroc": 0.5})]
    merged = report.merge_runs(old, rerun)
    assert len(merged) == 3
    assert {r["run_id"]: r["image.auroc"] for r in merged}["b" * 40] == 0.5


def test_write_report_tables_and_figures(tmp_path):
    records = report.collect(_exp_show())
    written = report.write_report(records, tmp_path, "HEAD", report.unfinished(_exp_show()))
    assert written["runs"] == 3
    for name in ("runs.csv", "summary.md", "heatmap_image_auroc.png", "defect_recall.png"):
        assert (tmp_path / name).is_file(), name
    summary = (tmp_path / "summary.md").read_text()
    assert "Left out, not evaluated (queued, running or failed): failed, queued." in summary
    # Columns: categories, then the mean over per-category runs ("all" is not averaged in).
    assert (
        "| model | 01 | all | mean |\n|---|---|---|---|\n| cae | 0.950 | 0.900 | 0.950 |" in summary
    )
    frame = pd.read_csv(tmp_path / "runs.csv")
    assert frame.loc[frame["name"] == "vae-01", "image.auroc"].item() == 0.8
    # Every run's AUROC comes with its interval; pixel AUROC has none here: bare number.
    assert "| vae-01 | experiment |" in summary
    assert "| 0.800 [0.750, 0.850] | 0.780 |" in summary
    # The results table: per category, best image AUROC first, intervals, train seconds.
    results = summary.split("## Results: synthetic_fabric")[1].split("##")[0]
    rows = [line for line in results.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| run | model | category | image AUROC [95% CI]")
    assert rows[1:] == [
        "| cae-01 | cae | 01 | 0.950 [0.900, 1.000] | 0.930 | 0.850 | 12 |",
        "| vae-01 | vae | 01 | 0.800 [0.750, 0.850] | 0.780 | 0.700 | 12 |",
        "| main | cae | all | 0.900 [0.850, 0.950] | 0.880 | 0.800 | 12 |",
    ]


def test_report_archive_that_is_not_one(tmp_path):
    (tmp_path / "runs.json").write_text("[1, 2")
    with pytest.raises(report.DataError, match="not a report archive"):
        report.load_previous(tmp_path)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"dataset.name": "mnist", "dataset.normal_class": 3}, "digit 3"),
        ({"dataset.name": "mvtec", "dataset.category": "screw"}, "screw"),
        ({"dataset.name": "aitex", "dataset.category": json.dumps(["01", "02"])}, "01+02"),
        ({"dataset.name": "tabular"}, "table"),
    ],
)
def test_category_labels(params, expected):
    assert report.category_of(params) == expected


def test_category_types():
    assert report.category_type("mvtec", "carpet") == "texture"
    assert report.category_type("mvtec", "screw") == "object"
    assert report.category_type("mnist", "digit 0") == "digit"  # as its family declares
    assert report.category_type("aitex", "01") == "texture"
    assert report.category_type("a_family_from_the_future", "x") == "other"


@pytest.fixture
def git_project(tmp_path, monkeypatch):
    write_params(
        tmp_path / "params.yaml",
        tiny_params(sweep={"models": ["cae", "vae"], "categories": ["01", "02"]}),
    )
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"]):
        subprocess.run(cmd, cwd=tmp_path, check=True)
    monkeypatch.setattr(sweep, "existing_names", lambda repo: {"vae-02"})
    return tmp_path


def test_sweep_plans_every_combination_not_yet_run(git_project):
    params = load_params(git_project / "params.yaml")
    commands = sweep.plan(git_project, params, extra=["train.epochs=1"])
    names = [c[c.index("-n") + 1] for c in commands]
    assert names == ["cae-01", "cae-02", "vae-01"]  # vae-02 already ran from this commit
    assert commands[0][:3] == ["exp", "run", "--queue"]
    assert "dataset.category='01'" in commands[0]  # quoted: YAML would read 01 as 1
    assert all(c[-2:] == ["-S", "train.epochs=1"] for c in commands)
    rerun = sweep.plan(git_project, params, rerun=True)
    assert len(rerun) == 4 and all(c[-1] == "-f" for c in rerun)  # -f overwrites a name


def test_sweep_shards_split_the_experiments_between_machines(git_project):
    """Two machines with --shard 1/2 and 2/2 queue disjoint halves that together are
    the whole sweep (round robin over the fixed order)."""
    params = load_params(git_project / "params.yaml")
    names = {}
    for shard in ("1/2", "2/2"):
        commands = sweep.plan(git_project, params, rerun=True, shard=sweep.parse_shard(shard))
        names[shard] = [c[c.index("-n") + 1] for c in commands]
    assert names == {"1/2": ["cae-01", "vae-01"], "2/2": ["cae-02", "vae-02"]}
    for bad in ("0/2", "3/2", "a/b", "2"):
        with pytest.raises(sweep.SweepError, match=rf"--shard {bad}: expected i/n"):
            sweep.parse_shard(bad)


def test_sweep_run_names_the_experiments_that_failed(git_project, monkeypatch):
    """`dvc exp run --run-all` exits 0 when a run fails, and `dvc exp show` lists a
    failed run with its baseline's metrics: the sweep must still end non-zero, naming
    each run that did not finish as itself (seen: a stale dvc.lock failed a run in
    split, and `anomaly sweep --run` said nothing)."""
    from anomaly.reporting import report as report_module

    calls = []
    monkeypatch.setattr(sweep, "run_dvc", lambda repo, *args, **kw: calls.append(args) or "")
    monkeypatch.setattr(
        report_module,
        "head_experiments",
        lambda repo: {
            "cae-01": {"failed": False, "eval": {"model": "cae"}},
            "cae-02": {"failed": True, "eval": {"model": "cae"}},
            "vae-01": {"failed": False, "eval": {"model": "cae"}},  # the baseline's metrics
        },
    )
    params = load_params(git_project / "params.yaml")
    with pytest.raises(sweep.SweepError, match=r"2 of 3 experiments failed: cae-02, vae-01 "):
        sweep.sweep(git_project, params, run=True)
    assert ("exp", "run", "--run-all", "-j", "1") in calls
    monkeypatch.setattr(
        report_module,
        "head_experiments",
        lambda repo: {
            n: {"failed": False, "eval": {"model": n[:3]}} for n in ("cae-01", "cae-02", "vae-01")
        },
    )
    assert len(sweep.sweep(git_project, params, run=True)) == 3


def test_sweep_workers_share_the_cores():
    assert sweep.worker_threads(1, cpus=2) == 2
    assert sweep.worker_threads(2, cpus=2) == 1
    assert sweep.worker_threads(4, cpus=2) == 1  # never zero
    assert sweep.worker_threads(2, cpus=16) == 8


def test_sweep_refuses_untracked_inputs(git_project):
    (git_project / "new_model.py").write_text("x = 1\n")
    params = load_params(git_project / "params.yaml")
    with pytest.raises(sweep.SweepError, match=r"untracked files .*new_model\.py.*git add"):
        sweep.plan(git_project, params)
    commands = sweep.plan(git_project, params, copy_untracked=True)
    assert all(c[-2:] == ["-C", "new_model.py"] for c in commands)


def test_sweep_copies_an_ignored_dataset_folder(git_project):
    (git_project / "mydata").mkdir()
    (git_project / "mydata" / "a.png").write_bytes(b"x")
    (git_project / ".gitignore").write_text("/mydata/\n")
    subprocess.run(["git", "add", ".gitignore"], cwd=git_project, check=True)
    write_params(
        git_project / "params.yaml",
        tiny_params(
            dataset={"name": "folder", "source": "mydata"},
            sweep={"models": ["cae"], "categories": []},
        ),
    )
    subprocess.run(["git", "add", "params.yaml"], cwd=git_project, check=True)
    commands = sweep.plan(git_project, load_params(git_project / "params.yaml"))
    assert len(commands) == 1 and commands[0][-2:] == ["-C", "mydata"]
    assert "dataset.category" not in " ".join(commands[0])


def test_best_models_lists_ties():
    cells = pd.DataFrame(
        {
            "dataset": ["d"] * 3,
            "category": ["01"] * 3,
            "model": ["vae", "cae", "ae"],
            "image.auroc": [1.0, 1.0, 0.9],
        }
    )
    best = report.best_models(cells)
    assert best.to_dict(orient="records") == [
        {"dataset": "d", "category": "01", "model": "cae, vae", "image.auroc": 1.0}
    ]


def test_report_outside_a_dvc_repo_is_one_line_error(tmp_path):
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "anomaly", "report"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "`dvc exp show` failed" in lines[0], result.stderr


def test_sweep_cli_names_the_untracked_file(git_project):
    import sys

    (git_project / "notes.txt").write_text("draft\n")
    result = subprocess.run(
        [sys.executable, "-m", "anomaly", "sweep", "--dry-run"],
        cwd=git_project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "notes.txt" in result.stderr and "--copy-untracked" in result.stderr


def test_sweep_all_expands_models_and_the_datasets_categories(tmp_path):
    from anomaly.data.mvtec import CATEGORIES
    from anomaly.models.registry import available_models

    path = write_params(
        tmp_path / "params.yaml",
        tiny_params(dataset={"name": "mvtec"}, sweep={"models": "all", "categories": "all"}),
    )
    combos = sweep.combinations(load_params(path))
    assert len(combos) == len(available_models()) * len(CATEGORIES) == 14 * 15
    assert combos[0].set_params()[-1] == f"dataset.category='{CATEGORIES[0]}'"

    path = write_params(
        tmp_path / "params.yaml",
        tiny_params(dataset={"name": "mnist"}, sweep={"models": ["ae"], "categories": "all"}),
    )
    combos = sweep.combinations(load_params(path))
    assert [c.set_params()[-1] for c in combos][:2] == [
        "dataset.normal_class=0",
        "dataset.normal_class=1",
    ]
    assert combos[3].name == "ae-3"

    path = write_params(
        tmp_path / "params.yaml",
        tiny_params(dataset={"name": "tabular"}, sweep={"categories": "all"}),
    )
    with pytest.raises(sweep.SweepError, match="has no known categories"):
        sweep.combinations(load_params(path))


def test_sweep_params_are_checked(tmp_path):
    from anomaly.errors import ParamsError
    from anomaly.models.registry import check_model_params

    path = write_params(tmp_path / "params.yaml", tiny_params(sweep={"models": ["cae", "vea"]}))
    with pytest.raises(ParamsError, match="sweep.models names 'vea', not a known model"):
        check_model_params(load_params(path), "all")
    path = write_params(tmp_path / "params.yaml", tiny_params(sweep={"models": "some"}))
    with pytest.raises(ParamsError, match="sweep.models"):
        load_params(path)


def test_pivot_keeps_a_category_where_no_run_has_the_metric():
    """Found on a ten-digit MNIST sweep: one category had pixel metrics and the others
    none, and pivot_table's dropped columns made `make report` fail with a KeyError."""
    frame = pd.DataFrame(
        {
            "dataset": ["mnist"] * 4,
            "model": ["cae", "cae", "padim", "padim"],
            "category": ["digit 0", "digit 1"] * 2,
            "created": ["2026-11-26"] * 4,
            "run_id": ["a", "b", "c", "d"],
            "pixel.auroc": [0.9, float("nan"), 0.8, float("nan")],
        }
    )
    table = report.pivot(frame, "pixel.auroc")
    assert list(table.columns) == ["digit 0", "digit 1", "mean"]
    assert table.loc["cae", "mean"] == pytest.approx(0.9)
    assert table["digit 1"].isna().all()


def test_results_table_shows_the_label_free_figure_with_its_interval():
    frame = pd.DataFrame(
        {
            "name": ["a", "b"],
            "model": ["padim", "cae"],
            "dataset": ["folder", "folder"],
            "category": ["all", "all"],
            "image.auroc": [None, None],
            "val_synthetic.image.auroc": [0.91, 0.8],
            "val_synthetic.image.auroc_ci_low": [0.88, 0.75],
            "val_synthetic.image.auroc_ci_high": [0.94, 0.85],
        }
    )
    table = report.results_table(frame)
    assert list(table["label-free AUROC [95% CI]"]) == [
        "0.910 [0.880, 0.940]",
        "0.800 [0.750, 0.850]",
    ]

import csv
import json

from anomaly.logging_utils import TsvLogger, make_logger


def test_tsv_logger_writes_dvclive_layout(tmp_path):
    logger = TsvLogger(tmp_path / "log")
    logger.log({"train/loss": 1.0, "val/loss": 2.0})
    logger.log({"train/loss": 0.5, "val/loss": 1.5})
    logger.close()
    rows = list(
        csv.DictReader((tmp_path / "log/plots/metrics/train/loss.tsv").open(), delimiter="\t")
    )
    assert [(r["step"], r["loss"]) for r in rows] == [("0", "1.0"), ("1", "0.5")]
    summary = json.loads((tmp_path / "log/metrics.json").read_text())
    assert summary == {"train": {"loss": 0.5}, "val": {"loss": 1.5}, "step": 1}


def test_make_logger_falls_back_outside_a_git_repo(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logger = make_logger(tmp_path / "log")
    logger.log({"train/loss": 1.0})
    logger.close()
    assert (tmp_path / "log/plots/metrics/train/loss.tsv").is_file()


def test_fallback_writes_the_same_bytes_as_dvclive(tmp_path, monkeypatch):
    """Which writer ran (dvclive, or the fallback where dvclive refuses, e.g. in a git repo
    without commits) must not change the files, or dvc.lock would differ between clones."""
    from anomaly.logging_utils import LiveLogger

    monkeypatch.chdir(tmp_path)
    for name, cls in (("live", LiveLogger), ("tsv", TsvLogger)):
        logger = cls(tmp_path / name)
        for step in range(3):
            logger.log({"train/loss": 1.0 / (step + 1), "val/loss": 0.5 + step / 7})
        logger.close()
    files = sorted(p.relative_to(tmp_path / "live") for p in (tmp_path / "live").rglob("*.*"))
    assert files == sorted(p.relative_to(tmp_path / "tsv") for p in (tmp_path / "tsv").rglob("*.*"))
    for rel in files:
        assert (tmp_path / "live" / rel).read_bytes() == (tmp_path / "tsv" / rel).read_bytes(), rel


def test_training_prints_one_line_per_epoch_when_not_a_terminal(caplog):
    """Under `dvc queue` or CI (no terminal) the bar is off, so progress must come as
    log lines: epoch, losses, elapsed time, time left."""
    import logging

    import torch

    from anomaly.models.registry import build_model, model_config
    from anomaly.models.training import fit
    from anomaly.params import TrainConfig

    model = build_model("ae", model_config("ae", {"hidden": [16], "latent_dim": 4}), 1, 8)
    batches = [torch.rand(8, 1, 8, 8) for _ in range(2)]
    with caplog.at_level(logging.INFO, logger="anomaly.models.training"):
        fit(model, batches, batches, TrainConfig(epochs=3, batch_size=8), None, torch.device("cpu"))
    lines = [r.getMessage() for r in caplog.records if "epoch" in r.getMessage()]
    assert [line.split(",")[0] for line in lines[:3]] == [
        f"train ae: epoch {i}/3" for i in (1, 2, 3)
    ]
    assert "val loss" in lines[0] and "s elapsed" in lines[0] and "s left" in lines[0]
    assert "best val loss" in lines[-1]


def test_a_stage_that_loads_faiss_prints_no_import_errors(tmp_path):
    """The fault: faiss's loader logs a ModuleNotFoundError, at INFO, for each CPU build
    it tries before the one that loads; in `anomaly select`'s output they read as errors.
    A fresh interpreter, as a stage runs: our INFO lines stay, faiss's are gone."""
    import subprocess
    import sys

    code = (
        "import logging; from anomaly.logging_utils import setup_logging; "
        "setup_logging(logging.INFO); import faiss; "
        "logging.getLogger('anomaly.x').info('ours')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    text = out.stdout + out.stderr
    assert "INFO anomaly.x: ours" in text
    assert "faiss" not in text and "ModuleNotFoundError" not in text, text

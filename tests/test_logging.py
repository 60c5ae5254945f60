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

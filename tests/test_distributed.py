"""Distributed training: 2 CPU processes on gloo, launched by the train stage itself
through torchrun's launcher, against a single-process run of the same params."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from anomaly import pipeline
from anomaly.distributed import state_digest
from anomaly.models.registry import load_checkpoint
from anomaly.params import load_params
from conftest import tiny_params, write_params

pytestmark = pytest.mark.xdist_group("distributed")  # two processes of their own


def _prepare(root, **overrides):
    write_params(root / "params.yaml", tiny_params(**overrides))
    params = load_params(root / "params.yaml")
    for name in ("download", "patchify", "split"):
        pipeline.STAGES[name](params)


def _train_in_subprocess(root, distributed: bool) -> subprocess.CompletedProcess:
    """Train in a fresh process whose temporary directory is ``root/tmp``: the tests
    assert that a run leaves nothing there (torchrun's launcher keeps per-worker log
    folders under the system temp directory unless told otherwise)."""
    params = (root / "params.yaml").read_text()
    params = params.replace("distributed: true", "distributed: false")
    if distributed:
        params = params.replace("distributed: false", "distributed: true")
    (root / "params.yaml").write_text(params)
    temp = root / "tmp"
    temp.mkdir(exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(temp)}
    return subprocess.run(
        [sys.executable, "-m", "anomaly.stages.train"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _left_in_temp(root) -> list[str]:
    """What a run left in its temporary directory, less torch's compile cache (one per
    user, reused by every run)."""
    return sorted(
        p.name for p in (root / "tmp").iterdir() if not p.name.startswith("torchinductor_")
    )


def _after_train(root) -> dict:
    params = load_params(root / "params.yaml")
    for name in ("score", "threshold", "evaluate"):
        pipeline.STAGES[name](params)
    return json.loads((root / "metrics/eval.json").read_text())


def _state(root, model: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(root / f"models/{model}/model.pt")[0].state_dict()


# an ensemble's members train one after the other, each distributed as if alone
ENSEMBLE = {"members": ["padim", "ae"], "overrides": {"ae": {"hidden": [64], "latent_dim": 8}}}


@pytest.mark.parametrize("model", ["ae", "padim", "simplenet", "reverse_distillation", "ensemble"])
def test_two_gloo_processes_match_one_process(project, model):
    overrides = {"model": model, "train": {"epochs": 3, "batch_size": 16, "processes": 2}}
    if model == "ensemble":
        overrides["models"] = {"ensemble": ENSEMBLE}
    _prepare(project, **overrides)

    single = _train_in_subprocess(project, distributed=False)
    assert single.returncode == 0, single.stderr
    single_state = _state(project, model)
    single_metrics = _after_train(project)

    both = _train_in_subprocess(project, distributed=True)
    assert both.returncode == 0, both.stderr
    assert "launching 2 worker processes" in both.stderr
    assert _left_in_temp(project) == []  # no launcher logs left behind
    summary = json.loads((project / f"models/{model}/train_summary.json").read_text())
    # Both ranks ended with identical weights (the stage compares their digests and
    # fails otherwise), and they are the weights rank 0 saved.
    assert summary["distributed"]["processes"] == 2
    assert summary["distributed"]["backend"] == "gloo"
    ddp_model, _ = load_checkpoint(project / f"models/{model}/model.pt")
    assert summary["distributed"]["weights_sha256"] == state_digest(ddp_model)
    ddp_state = ddp_model.state_dict()
    ddp_metrics = _after_train(project)

    # padim: each rank sums the statistics of its block (float64 sums in another order,
    # rounded to float32). ae (no training noise): the same global batches split over
    # two ranks with gradients averaged by DDP are the same steps up to float summation
    # order (measured: 3e-8; 0.011 for the denoising cae, whose ranks draw their own
    # corruption noise, with pixel AUROC equal to 1e-5). simplenet: the ranks gather every
    # tile's features in rank order (the single run's order) and train the same heads;
    # reverse_distillation the same, with the bottleneck and the student as the heads.
    tolerance = {
        "padim": 1e-6,
        "ae": 1e-5,
        "simplenet": 1e-5,
        "reverse_distillation": 1e-5,
        "ensemble": 1e-5,
    }[model]
    for name, tensor in single_state.items():
        torch.testing.assert_close(ddp_state[name], tensor, rtol=1e-4, atol=tolerance)
    for key in ("image.auroc", "pixel.auroc"):
        assert abs(ddp_metrics[key] - single_metrics[key]) <= 1e-3, key
    assert np.isfinite(ddp_metrics["image.auroc"])


def test_a_failing_worker_stops_the_run_with_one_line(project):
    """Divergence on one rank: every rank stops at the same epoch (the NaN check is
    summed over ranks), the launcher reports it in one line, no traceback."""
    _prepare(
        project,
        model="ae",
        train={"epochs": 2, "batch_size": 16, "processes": 2, "lr": 1.0e12},
    )
    before = sorted(p.name for p in project.glob("models/*"))
    result = _train_in_subprocess(project, distributed=True)
    assert result.returncode == 2, result.stderr
    assert "error: train: loss became" in result.stderr
    assert "error: train: worker rank" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in project.glob("models/*")) == before
    assert _left_in_temp(project) == []

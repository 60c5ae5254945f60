"""`model: ensemble`: members trained as if alone, standardised, combined, reproduced."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from anomaly import pipeline
from anomaly.errors import DataError, ParamsError
from anomaly.models.registry import load_checkpoint, model_config, save_checkpoint
from anomaly.params import ScoreConfig, load_params
from conftest import tiny_params, write_params
from test_models import TINY, stripes, train_tiny, with_blobs

MEMBERS = {"padim": TINY["padim"], "cae": TINY["cae"]}


def ensemble_params(**block) -> dict:
    return tiny_params(
        model="ensemble",
        models={
            "ensemble": {"members": list(MEMBERS), "overrides": MEMBERS, **block},
            **MEMBERS,
        },
    )


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"members": ["cae"]}, r"models\.ensemble\.members must name at least 2 models"),
        ({"members": ["cae", "cae"]}, r"models\.ensemble\.members must not name a model twice"),
        ({"members": ["cae", "ensemble"]}, r"models\.ensemble\.members cannot hold an ensemble"),
        ({"members": ["cae", "nope"]}, r"model is 'nope', not a known model"),
        (
            {"members": ["cae", "padim"], "overrides": {"vae": {}}},
            r"models\.ensemble\.overrides\.vae names no member",
        ),
        (
            {"members": ["cae", "padim"], "overrides": {"cae": {"depthx": 1}}},
            r"unknown key models\.ensemble\.overrides\.cae\.depthx",
        ),
        (
            {"members": ["cae", "padim"], "overrides": {"cae": {"depth": 0}}},
            r"models\.ensemble\.overrides\.cae\.depth",
        ),
    ],
)
def test_bad_ensemble_blocks_name_the_key(block, message):
    with pytest.raises(ParamsError, match=message):
        model_config("ensemble", block)


def test_members_are_standardised_on_reference_tiles_and_combined():
    model, rng = train_tiny("ensemble")
    cfg = ScoreConfig(smooth_sigma=1.0, patch_reduce="topk_mean")
    stats = model.prepare_scoring(cfg)
    # Stripes are not k / 255 values: kept as float32 (image tiles as uint8, below).
    reference = model.reference
    assert reference.dtype == torch.float32 and len(reference) == 32
    # Each member's tile scores on the reference tiles: mean 0, spread 1 once standardised.
    for i, member in enumerate(model.members):
        s, m = member.score(reference, cfg)
        z = (s - stats[i, 0]) / stats[i, 1]
        assert abs(float(z.mean())) < 1e-4 and abs(float(z.std(unbiased=False)) - 1) < 1e-3
        zm = (m - stats[i, 2]) / stats[i, 3]
        assert abs(float(zm.mean())) < 1e-3
    # The members' raw scales differ by orders of magnitude; the combination does not care.
    assert float(stats[:, 1].max() / stats[:, 1].min()) > 10
    tiles = torch.cat([stripes(20, rng), with_blobs(stripes(20, rng))])
    mean_scores, mean_maps = model.score(tiles, cfg)
    parts = [
        (mem.score(tiles, cfg)[0] - stats[i, 0]) / stats[i, 1]
        for i, mem in enumerate(model.members)
    ]
    torch.testing.assert_close(mean_scores, torch.stack(parts).mean(0))
    model.config.combine = "max"
    max_scores, max_maps = model.score(tiles, cfg)
    torch.testing.assert_close(max_scores, torch.stack(parts).amax(0))
    assert (max_maps >= mean_maps - 1e-6).all()
    # Another score setting gets its own statistics, exactly.
    other = ScoreConfig(smooth_sigma=0.0, patch_reduce="max")
    assert not torch.equal(model.prepare_scoring(other), stats)


def test_checkpoint_round_trip_keeps_reference_and_memory(tmp_path):
    model, rng = train_tiny("ensemble")
    cfg = ScoreConfig(smooth_sigma=1.0, patch_reduce="topk_mean")
    tiles = with_blobs(stripes(8, rng))
    expected, _ = model.score(tiles, cfg)
    save_checkpoint(model, tmp_path / "model.pt", {"member_code": model.code_fingerprint()})
    loaded, payload = load_checkpoint(tmp_path / "model.pt")
    assert torch.equal(loaded.reference, model.reference)
    assert loaded.stale_member_code(payload["member_code"]) == []
    assert loaded.stale_member_code({"padim": "0" * 64, "cae": payload["member_code"]["cae"]}) == [
        "padim"
    ]
    again, _ = loaded.score(tiles, cfg)
    torch.testing.assert_close(again, expected)


def _run(root, names, params_data):
    write_params(root / "params.yaml", params_data)
    params = load_params(root / "params.yaml")
    for name in names:
        pipeline.STAGES[name](params)
    return params


def test_ensemble_runs_through_the_pipeline_and_predict(project):
    """Train (members as if alone), score, threshold, export, evaluate; the bundle's
    detector gives the score stage's image scores; a member whose code changed since
    training is refused by the score stage."""
    from anomaly import load_detector

    stages = ("download", "patchify", "split", "train", "score", "threshold", "export", "evaluate")
    _run(project, stages, ensemble_params())
    metrics = json.loads((project / "metrics/eval.json").read_text())
    assert metrics["model"] == "ensemble" and np.isfinite(metrics["image.auroc"])
    assert 0 <= metrics["val_synthetic.image.auroc_ci_low"] <= metrics["val_synthetic.image.auroc"]
    summary = json.loads((project / "models/ensemble/train_summary.json").read_text())
    assert set(summary["members"]) == {"padim", "cae"} and summary["reference_tiles"] > 0

    # The padim member is the padim a single run fits (same data, seed and settings).
    ensemble, payload = load_checkpoint(project / "models/ensemble/model.pt")
    assert set(payload["member_code"]) == {"padim", "cae"}
    assert ensemble.reference.dtype == torch.uint8  # image tiles: k / 255 exactly
    _run(project, ("train",), tiny_params(model="padim", models=MEMBERS))
    alone, _ = load_checkpoint(project / "models/padim/model.pt")
    assert torch.equal(ensemble.members[0].mean, alone.mean)
    assert torch.equal(ensemble.members[0].channel_index, alone.channel_index)

    images = pd.read_csv(project / "scores/ensemble/test_images.csv", dtype={"group": str})
    detector = load_detector(project / "models/ensemble.bundle", device="cpu")
    row = images.iloc[0]
    path = project / "data/raw/synthetic_fabric" / row["image_path"]
    got = detector.predict(path, group=str(row["group"]))[0]
    assert got.score == pytest.approx(float(row["score"]), rel=1e-4, abs=1e-4)

    payload["member_code"]["cae"] = "0" * 64
    torch.save(payload, project / "models/ensemble/model.pt")
    with pytest.raises(DataError, match=r"member cae changed since it was trained.*-s train"):
        _run(project, ("score",), ensemble_params())

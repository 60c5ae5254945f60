"""A trained model anywhere: the export stage's bundle, load_detector, predict, ONNX.

The pipeline runs once per module (tiny data); every test reads its outputs.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from anomaly.cli import main
from conftest import run_tiny_pipeline

# How closely predict reproduces the pipeline's scores. On the CPU the same float32
# arithmetic gives the same bits; on CUDA, cuDNN picks its convolution algorithm by batch
# shape, so predict's batches differ from the score stage's in the last bits (measured
# on an H100: 3.5e-6 relative), which is not a different result.
SCORE_RTOL = 1e-4 if torch.cuda.is_available() else 1e-6
# Maps (stored as float16 on both sides) differ more there: cuDNN's convolutions run in
# TF32 with an algorithm chosen by batch shape (measured on an H100: 17 of 16,384 pixels
# off by up to 0.006 on values near 1.6, i.e. after dividing by the group's scale).
MAP_ATOL, MAP_RTOL = (2e-2, 1e-2) if torch.cuda.is_available() else (2e-3, 0.0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A project after the whole pipeline (cae, tiny fabric set)."""
    return run_tiny_pipeline(tmp_path_factory.mktemp("project"))


def _test_images(root) -> pd.DataFrame:
    return pd.read_csv(root / "scores/cae/test_images.csv", dtype={"group": str})


def test_predict_reproduces_the_pipeline_on_its_own_test_images(trained, tmp_path, monkeypatch):
    """The CLI with its defaults (the active model's bundle, groups read from the AITEX
    file names) gives every test image the pipeline's score, call and anomaly map."""
    monkeypatch.chdir(trained)
    test = _test_images(trained)
    raw = trained / "data/raw/synthetic_fabric"
    for rel in test["image_path"]:  # the pipeline's test images in their own folders
        (tmp_path / "in" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(raw / rel, tmp_path / "in" / rel)
    out = tmp_path / "out"
    assert main(["predict", str(tmp_path / "in"), "--out", str(out)]) == 0
    predicted = pd.read_csv(out / "predictions.csv", dtype={"group": str})
    merged = test.merge(predicted, left_on="image_path", right_on="image", suffixes=("", "_new"))
    assert len(merged) == len(test)
    np.testing.assert_allclose(merged["score_new"], merged["score"], rtol=SCORE_RTOL, atol=1e-9)
    threshold = json.loads((trained / "metrics/threshold.json").read_text())["image_threshold"]
    assert list(merged["defect"]) == list((merged["score"] >= threshold).astype(int))
    assert list(merged["group_new"]) == list(merged["group"])
    with np.load(trained / "scores/cae/test_maps.npz") as maps:
        for row in merged.itertuples():
            mine = np.load(out / (row.image_path[: -len(".png")] + "_map.npy"))
            np.testing.assert_allclose(
                mine.astype(np.float32),
                maps[f"img_{row.image_id}"].astype(np.float32),
                atol=MAP_ATOL,
                rtol=MAP_RTOL,
            )
    first = test["image_path"].iloc[0][: -len(".png")]
    assert (out / f"{first}_mask.png").is_file() and (out / f"{first}_overlay.png").is_file()


def test_bundle_loads_with_weights_only_and_works_without_project_files(
    trained, tmp_path, monkeypatch
):
    from PIL import Image

    from anomaly import load_detector

    bundle = tmp_path / "model.bundle"
    shutil.copy(trained / "models/cae.bundle", bundle)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    monkeypatch.chdir(empty)  # no params.yaml, metrics/, scores/ or models/ here
    payload = torch.load(bundle, weights_only=True)
    assert payload["model"] == "cae" and payload["pixel_threshold"] is not None
    assert payload["preprocessing"]["patch"]["blank_std"] == 1.0
    detector = load_detector(bundle)
    test = _test_images(trained)
    rows = test.head(3)
    images = [
        np.asarray(Image.open(trained / "data/raw/synthetic_fabric" / p))
        for p in rows["image_path"]
    ]
    results = detector.predict(images[:1], group=rows["group"].iloc[0])
    assert results[0].score == pytest.approx(rows["score"].iloc[0], rel=SCORE_RTOL)
    assert results[0].anomaly_map.shape == images[0].shape
    assert results[0].mask.dtype == bool and results[0].mask.shape == images[0].shape
    # Files keep their group in the name; arrays need it (several fabrics here).
    paths = [trained / "data/raw/synthetic_fabric" / p for p in rows["image_path"]]
    assert [r.score for r in detector.predict(paths)] == pytest.approx(
        list(rows["score"]), rel=SCORE_RTOL
    )
    from anomaly.errors import DataError

    with pytest.raises(DataError, match="pass a group"):
        detector.predict(images[0])


def test_predict_refuses_instead_of_guessing(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(trained)
    test = _test_images(trained)
    source = trained / "data/raw/synthetic_fabric" / test["image_path"].iloc[0]
    folder = tmp_path / "new"
    folder.mkdir()
    shutil.copy(source, folder / "a.png")  # a name that does not say the fabric
    groups = sorted(json.loads((trained / "scores/cae/normalization.json").read_text())["groups"])
    cases = [
        ([str(folder)], "pass a group (one of: " + ", ".join(groups)),
        ([str(folder), "--group", "zz"], "group zz is not one the model was scored on"),
        ([str(folder), "--model", "nowhere.bundle"], "nowhere.bundle: bundle not found"),
        ([str(folder), "--model", "models/cae/model.pt"], "not a model bundle"),
        (["missing_dir"], "missing_dir: not found"),
    ]
    for args, message in cases:
        assert main(["predict", *args, "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    # Same file name in two folders: outputs keep the relative path, no overwrite.
    for sub in ("x", "y"):
        (tmp_path / "two" / sub).mkdir(parents=True)
        shutil.copy(source, tmp_path / "two" / sub / source.name)
    assert main(["predict", str(tmp_path / "two"), "--out", str(tmp_path / "o2")]) == 0
    stem = source.name[: -len(".png")]
    assert (tmp_path / "o2/x" / f"{stem}_map.npy").is_file()
    assert (tmp_path / "o2/y" / f"{stem}_map.npy").is_file()
    # ... and two inputs whose relative names clash are refused.
    assert main(["predict", *(str(tmp_path / "two" / s) for s in "xy"), "--out", "o3"]) == 2
    assert "same relative name" in capsys.readouterr().err


def test_predict_drops_blank_tiles_like_split(trained, monkeypatch):
    """A roll with flat padding: the flat tiles are left out, as split leaves them out
    of scoring, so the score equals that of the textured part alone."""
    from anomaly import load_detector

    monkeypatch.chdir(trained)
    detector = load_detector("models/cae.bundle")
    test = _test_images(trained)
    row = test[test["label"] == 0].iloc[0]
    from PIL import Image

    image = np.asarray(Image.open(trained / "data/raw/synthetic_fabric" / row["image_path"]))
    padded = np.concatenate([image, np.full((image.shape[0], 64), 255, np.uint8)], axis=1)
    plain, with_pad = detector.predict([image, padded], group=row["group"])
    assert with_pad.score == pytest.approx(plain.score, rel=1e-6)
    assert not with_pad.blank
    flat = detector.predict(np.full((64, 64), 200, np.uint8), group=row["group"])[0]
    assert flat.blank  # scored anyway, and said so


def test_pixel_threshold_masks_and_exact_pixel_metrics(trained):
    threshold = json.loads((trained / "metrics/threshold.json").read_text())
    metrics = json.loads((trained / "metrics/eval.json").read_text())
    assert "percentile 99.9" in threshold["pixel_rule"]
    assert metrics["pixel.threshold"] == threshold["pixel_threshold"]
    for key in ("pixel.f1", "pixel.iou", "pixel.precision", "pixel.recall"):
        assert 0 <= metrics[key] <= 1, key
    assert metrics["pixel.iou"] <= metrics["pixel.f1"]


def test_export_stage_output_and_onnx_equal_to_eager(trained, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    import onnx
    import onnxruntime

    from anomaly.inference.detector import load_detector

    monkeypatch.chdir(trained)
    out = tmp_path / "cae.onnx"
    assert main(["export", "--format", "onnx", "--out", str(out)]) == 0
    meta = json.loads(
        {p.key: p.value for p in onnx.load(str(out)).metadata_props}["anomaly_bundle"]
    )
    assert meta["model"] == "cae" and meta["image_threshold"] > 0
    detector = load_detector("models/cae.bundle", "cpu")
    tiles = torch.rand(5, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        scores, maps = detector.model.score(tiles, detector.score_cfg)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got_scores, got_maps = session.run(None, {"tiles": tiles.numpy()})
    np.testing.assert_allclose(got_scores, scores.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_maps, maps.numpy(), rtol=1e-4, atol=1e-6)
    # A bundle written elsewhere is the same bundle.
    copy = tmp_path / "copy.bundle"
    assert main(["export", "--out", str(copy)]) == 0
    assert torch.load(copy, weights_only=True)["image_threshold"] == pytest.approx(
        meta["image_threshold"]
    )

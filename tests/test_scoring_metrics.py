from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from anomaly.errors import ParamsError
from anomaly.evaluation.metrics import classification_metrics
from anomaly.evaluation.pixel_metrics import aupro, pixel_auroc
from anomaly.evaluation.thresholds import choose_threshold
from anomaly.params import ThresholdConfig
from anomaly.scoring import (
    aggregate_images,
    fit_group_normalizer,
    gaussian_blur,
    group_affine,
    reduce_maps,
    ssim_map,
    stitch,
)


def test_blur_keeps_constants_and_mass():
    x = torch.full((2, 1, 16, 16), 3.0)
    assert torch.allclose(gaussian_blur(x, 2.0), x)
    spike = torch.zeros(1, 1, 33, 33)
    spike[0, 0, 16, 16] = 1
    blurred = gaussian_blur(spike, 1.5)
    assert blurred.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert blurred[0, 0, 16, 16] < 1


def test_ssim_is_one_for_identical_and_lower_for_noise():
    x = torch.rand(1, 1, 32, 32)
    assert torch.allclose(ssim_map(x, x), torch.ones_like(x), atol=1e-4)
    assert ssim_map(x, torch.rand_like(x)).mean() < 0.5


def test_ssim_and_blur_keep_float32_inside_mixed_precision():
    """Training runs under ``torch.autocast`` on CUDA (``train.amp``). SSIM there used to
    run its blurs in bfloat16, where var = E[x^2] - E[x]^2 cancels to noise; DRAEM's SSIM
    loss then trained nothing useful (one-class digit 0 on an H100: image AUROC 0.32,
    0.93 with ``train.amp=false``). CPU autocast casts convolutions the same way."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 28, 28, generator=g)
    y = (x + 0.05 * torch.randn(4, 1, 28, 28, generator=g)).clamp(0, 1)
    exact_ssim, exact_blur = ssim_map(x, y), gaussian_blur(x, 1.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed_ssim, mixed_blur = ssim_map(x, y), gaussian_blur(x, 1.5)
        same = ssim_map(x, x)
    assert mixed_ssim.dtype == torch.float32 and mixed_blur.dtype == torch.float32
    torch.testing.assert_close(mixed_ssim, exact_ssim)
    torch.testing.assert_close(mixed_blur, exact_blur)
    assert torch.allclose(same, torch.ones_like(same), atol=1e-4)


def test_reduce_maps():
    maps = torch.zeros(2, 10, 10)
    maps[1, :1, :] = 1.0
    assert reduce_maps(maps, "max").tolist() == [0, 1]
    assert reduce_maps(maps, "mean")[1].item() == pytest.approx(0.1)
    assert reduce_maps(maps, "topk_mean", 0.05)[1].item() == pytest.approx(1.0)


def test_aggregate_images():
    tiles = pd.DataFrame({"image_id": [0, 0, 0, 1], "score": [1.0, 5.0, 3.0, 2.0]})
    assert aggregate_images(tiles, "max")["score"].tolist() == [5.0, 2.0]
    assert aggregate_images(tiles, "mean")["score"].tolist() == [3.0, 2.0]
    assert aggregate_images(tiles, "topk_mean", 2)["score"].tolist() == [4.0, 2.0]


def test_stitch_places_and_averages_tiles():
    tiles = pd.DataFrame({"x": [0, 4, 0], "y": [0, 0, 4], "w": [8, 8, 8], "h": [8, 8, 8]})
    maps = np.stack([np.full((8, 8), 1.0), np.full((8, 8), 3.0), np.full((8, 8), 5.0)])
    full = stitch(maps, tiles, 12, 12)
    assert full[0, 0] == 1 and full[0, 11] == 3 and full[0, 5] == 2
    assert full[11, 0] == 5 and full[6, 1] == 3  # (1 + 5) / 2 where two tiles overlap
    assert full[11, 11] == 1  # uncovered pixels get the lowest covered score
    small = stitch(np.full((1, 4, 4), 7.0), tiles.iloc[:1], 8, 8)  # a map at 1/2 resolution
    assert small.shape == (8, 8) and np.allclose(small, 7.0)


def test_group_normalizer_puts_groups_on_one_scale():
    tiles = pd.DataFrame(
        {
            "group": ["a"] * 4 + ["b"] * 4,
            "label": 0,
            "score": [1.0, 2.0, 1.0, 2.0, 10.0, 20.0, 10.0, 20.0],
        }
    )
    norm = fit_group_normalizer(tiles)
    shift, scale = group_affine(tiles["group"], norm)
    z = (tiles["score"] - shift) / scale
    assert np.allclose(z[:4], z[4:])
    shift, _ = group_affine(pd.Series(["unseen"]), norm)
    assert shift[0] == pytest.approx(8.25)  # unseen group: overall statistics


def test_classification_metrics_by_hand():
    m = classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.6, 0.4, 0.9]), 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (1, 1, 1, 1)
    assert m["auroc"] == pytest.approx(0.75)
    assert m["precision"] == m["recall"] == m["f1"] == 0.5
    assert m["f1_max"] == pytest.approx(0.8)


def test_aupro_and_pixel_auroc_extremes():
    rng = np.random.default_rng(0)
    masks = [np.zeros((32, 32), bool) for _ in range(3)]
    masks[0][4:10, 4:10] = True
    masks[1][20:22, 3:30] = True
    perfect = [m.astype(float) + 0.01 * rng.random(m.shape) for m in masks]
    assert aupro(perfect, masks) == pytest.approx(1.0, abs=0.01)
    assert pixel_auroc(perfect, masks) == pytest.approx(1.0)
    noise = [rng.random(m.shape) for m in masks]
    assert aupro(noise, masks) == pytest.approx(0.15, abs=0.05)  # chance: mean FPR over [0, .3]
    assert pixel_auroc(noise, masks) == pytest.approx(0.5, abs=0.05)


def test_thresholds():
    scores = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 11.0])
    labels = np.array([0, 0, 0, 0, 1, 1])
    assert choose_threshold(ThresholdConfig("percentile", 50), scores, labels) == 2.5
    mean_std = choose_threshold(ThresholdConfig("mean_std", k=2), scores, labels)
    assert mean_std == pytest.approx(2.5 + 2 * np.std([1, 2, 3, 4]))
    assert choose_threshold(ThresholdConfig("f1_optimal"), scores, labels) == 10.0
    assert choose_threshold(ThresholdConfig("manual", value=7.0), scores, labels) == 7.0
    with pytest.raises(ParamsError, match="labeled_val_fraction"):
        choose_threshold(ThresholdConfig("f1_optimal"), scores[:4], labels[:4])


def test_bootstrap_intervals_cover_the_value_and_shrink_with_data():
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from anomaly.evaluation.metrics import _auc_from_samples, bootstrap_auroc_ci
    from anomaly.evaluation.pixel_metrics import pixel_auroc_ci

    rng = np.random.default_rng(0)
    small_y = np.r_[np.zeros(20), np.ones(20)].astype(int)
    small_s = np.r_[rng.normal(0, 1, 20), rng.normal(1, 1, 20)]
    big_y = np.r_[np.zeros(400), np.ones(400)].astype(int)
    big_s = np.r_[rng.normal(0, 1, 400), rng.normal(1, 1, 400)]
    assert _auc_from_samples(small_s[small_y == 1], small_s[small_y == 0]) == pytest.approx(
        roc_auc_score(small_y, small_s)
    )
    lo, hi = bootstrap_auroc_ci(small_y, small_s, seed=0)
    assert lo < roc_auc_score(small_y, small_s) < hi
    blo, bhi = bootstrap_auroc_ci(big_y, big_s, seed=0)
    assert (bhi - blo) < (hi - lo) / 2
    assert bootstrap_auroc_ci(np.zeros(5, int), np.arange(5.0), seed=0) is None
    assert bootstrap_auroc_ci(small_y, small_s, seed=0) == (lo, hi)  # seeded

    maps = [rng.random((16, 16)) for _ in range(8)]
    masks = [np.zeros((16, 16), bool) for _ in range(8)]
    for m, k in zip(maps[:4], masks[:4], strict=True):
        k[4:8, 4:8] = True
        m[k] += 0.5
    labels = np.concatenate([k.ravel() for k in masks])
    scores = np.concatenate([m.ravel() for m in maps])
    lo, hi = pixel_auroc_ci(maps, masks, seed=0)
    assert lo <= roc_auc_score(labels, scores) <= hi and hi - lo < 0.2


def test_exact_pixel_metrics_from_float16_counts_match_full_computation():
    """Counting float16 values gives sklearn's AUROC on every pixel, numpy's percentile
    and the brute-force F1-optimal threshold: exact, no subsample."""
    from sklearn.metrics import roc_auc_score

    from anomaly.evaluation.pixel_metrics import pixel_counts
    from anomaly.evaluation.thresholds import counts_f1_optimal, counts_percentile
    from anomaly.evaluation.value_counts import float16_counts

    rng = np.random.default_rng(4)
    masks = [rng.random((40, 50)) < 0.05 for _ in range(4)]
    maps = [(rng.normal(size=k.shape) + 1.5 * k).astype(np.float16) for k in masks]
    maps[0][:5] = np.float16(0.5)  # ties across good and defect pixels
    scores = np.concatenate([m.ravel() for m in maps]).astype(np.float32)
    labels = np.concatenate([k.ravel() for k in masks])
    assert pixel_auroc(maps, masks) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    values, counts = float16_counts(scores)
    for q in (50, 99, 99.9):
        want = np.percentile(scores, q, method="inverted_cdf")
        assert counts_percentile(values, counts, q) == pytest.approx(want)
    (good_v, good_c), (bad_v, bad_c) = pixel_counts(maps, masks)
    best = counts_f1_optimal(good_v, good_c, bad_v, bad_c)
    f1 = {
        t: 2 * ((scores >= t) & labels).sum() / ((scores >= t).sum() + labels.sum())
        for t in np.unique(scores)
    }
    assert best == pytest.approx(max(f1, key=f1.get))


def test_pixel_decisions_f1_and_iou():
    from anomaly.evaluation.pixel_metrics import pixel_decisions

    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True  # 4 defect pixels
    score_map = np.zeros((4, 4), np.float32)
    score_map[:2, :3] = 1.0  # 6 predicted: 4 right, 2 wrong
    out = pixel_decisions([score_map], [mask], 0.5)
    assert out["f1"] == pytest.approx(2 * 4 / (2 * 4 + 2)) and out["iou"] == pytest.approx(4 / 6)
    assert pixel_decisions([score_map], [np.zeros_like(mask)], 0.5)["f1"] is None


def test_auto_score_settings_resolve_per_dataset_family():
    from anomaly.data.families.registry import get_family
    from anomaly.params import ScoreConfig
    from anomaly.scoring import resolve_score

    digits = get_family("mnist").score_defaults
    resolved, origin = resolve_score(ScoreConfig(), digits)
    assert (resolved.patch_reduce, resolved.smooth_sigma) == ("mean", 0.0)
    assert origin == {"patch_reduce": "dataset family", "smooth_sigma": "dataset family"}
    fabric = get_family("synthetic_fabric").score_defaults
    resolved, origin = resolve_score(ScoreConfig(), fabric)
    assert (resolved.patch_reduce, resolved.smooth_sigma) == ("topk_mean", 4.0)
    assert origin["smooth_sigma"] == "fallback"
    explicit, origin = resolve_score(ScoreConfig(smooth_sigma=2.0, patch_reduce="max"), digits)
    assert (explicit.patch_reduce, explicit.smooth_sigma) == ("max", 2.0)
    assert set(origin.values()) == {"params"}
    with pytest.raises(ValueError, match="unresolved"):
        reduce_maps(torch.zeros(2, 4, 4), "auto")


def test_histogram_switches_to_a_log_axis_only_when_scores_span_decades():
    from anomaly.reporting.plots import spans_decades

    rng = np.random.default_rng(0)
    good = rng.normal(2.0, 1.0, 12)
    assert spans_decades(np.r_[good, [8, 30, 120, 500]])  # the default data's shape
    assert not spans_decades(rng.normal(0.0, 1.0, 200))  # z-scores around zero
    assert not spans_decades(np.r_[good, [4, 6, 9]])


def test_map_stitcher_writes_what_savez_wrote_without_holding_the_maps(tmp_path):
    """The score stage streams test maps into test_maps.npz image by image; the file is
    the one np.savez wrote from all stitched maps at once, byte for byte, even when the
    tiles of two images arrive interleaved."""
    from anomaly.scoring import stitch
    from anomaly.stages.score import MapStitcher

    rng = np.random.default_rng(0)
    tiles = pd.DataFrame(
        {
            "image_id": [3, 3, 1, 3, 1, 1, 3, 1],
            "x": [0, 8, 0, 0, 8, 0, 8, 8],
            "y": [0, 0, 0, 8, 0, 8, 8, 8],
            "w": [8] * 8,
            "h": [8] * 8,
            "group": ["a"] * 8,
        }
    )
    images = pd.DataFrame({"image_id": [1, 3], "height": [16, 16], "width": [16, 16]})
    maps = rng.random((8, 8, 8)).astype(np.float16)
    shift, scale = np.full(8, 0.5), np.full(8, 2.0)
    stitcher = MapStitcher(tmp_path / "streamed.npz", tiles, images, shift, scale)
    for start in range(0, 8, 3):
        stitcher.add(maps[start : start + 3])
    stitcher.close()
    expected = {}
    for image_id, group in tiles.groupby("image_id", sort=True):
        rows = group.index.to_numpy()
        normalised = (maps[rows].astype(np.float32) - 0.5) / 2.0
        expected[f"img_{image_id}"] = stitch(normalised, group, 16, 16).astype(np.float16)
    np.savez(tmp_path / "direct.npz", **expected)
    assert (tmp_path / "streamed.npz").read_bytes() == (tmp_path / "direct.npz").read_bytes()


class _HugeMaps(torch.nn.Module):
    """A model whose maps exceed float16's range (FastFlow on random features did:
    0.5 z^2 above 65,504), with finite, well-ordered scores."""

    def score(self, x, cfg):
        maps = x[:, 0] * 1e6
        return maps.flatten(1).mean(1), maps

    def latent_codes(self, x):
        return None


def test_maps_beyond_float16_range_are_stored_finite(caplog):
    """Found by compare_anomalib.py: maps above 65,504 became inf in float16 and the pixel
    metrics then computed inf - inf = NaN. Now every map stored as float16 is clipped to
    its finite range, with one warning naming the largest value."""
    from anomaly.scoring import score_tiles, to_float16

    class Store:
        def batches(self, ids, batch):
            data = torch.linspace(0, 1, len(ids) * 16).reshape(len(ids), 1, 4, 4)
            for start in range(0, len(ids), batch):
                yield data[start : start + batch]

    cfg = SimpleNamespace(batch_size=2)
    with caplog.at_level("WARNING"):
        scores, maps, _ = score_tiles(
            _HugeMaps(), Store(), np.arange(4), cfg, "cpu", keep_maps=True
        )
    assert np.isfinite(maps).all() and maps.dtype == np.float16
    assert maps.max() == np.finfo(np.float16).max
    assert np.isfinite(scores).all()
    assert "float16" in caplog.text and "65504" in caplog.text
    # values inside the range are cast exactly as before (byte-identical outputs)
    inside = np.array([0.1, -3.5, 65000.0], dtype=np.float32)
    assert to_float16(inside).tobytes() == inside.astype(np.float16).tobytes()

"""The label-free quality figure: simulated defects on good validation tiles."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from anomaly import pipeline
from anomaly.errors import ParamsError
from anomaly.evaluation.label_free import label_free_metrics
from anomaly.evaluation.synthetic import (
    GRAY_KINDS,
    RGB_KINDS,
    _resample,
    defect_geometry,
    make_variants,
    paint,
    plan_variants,
)
from anomaly.params import load_params
from conftest import tiny_params, write_params


def _texture(channels: int, side: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = 0.5 + 0.15 * np.sin(np.arange(side) / 2.0)[None, :] * np.ones((side, 1))
    tile = base[None] + rng.normal(0, 0.03, (channels, side, side))
    return (np.round(np.clip(tile, 0, 1) * 255) / 255).astype(np.float32)


@pytest.mark.parametrize("channels,kinds", [(1, GRAY_KINDS), (3, RGB_KINDS)])
def test_every_kind_changes_only_its_exact_mask(channels, kinds):
    tile, donor = _texture(channels, 64, 0), _texture(channels, 64, 1)
    for seed in range(20):
        for kind in kinds:
            out, mask = paint(tile, donor, kind, np.random.default_rng([seed, len(kind)]))
            assert out.shape == tile.shape and out.dtype == np.float32 and mask.any(), kind
            # exact masks: nothing outside changes, bit for bit
            np.testing.assert_array_equal(out[:, ~mask], tile[:, ~mask])
            # the defect is really there (a smear on this texture still moves pixels)
            assert np.abs(out[:, mask] - tile[:, mask]).max() > 0.02, kind
            # stored tiles are 8-bit: so are the painted copies
            np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-4)


def test_colour_defect_keeps_luminance_and_needs_rgb():
    tile = _texture(3, 64, 0)
    out, mask = paint(tile, tile, "colour", np.random.default_rng(3))
    shift = (out - tile)[:, mask]
    assert np.abs(shift).max() > 0.05
    assert abs(shift.mean()) < 0.01  # chroma, not brightness
    with pytest.raises(ValueError, match="RGB"):
        paint(_texture(1, 64, 0), _texture(1, 64, 0), "colour", np.random.default_rng(0))


@pytest.mark.parametrize(
    "box,image,image_size,tile_side,reference,upsampling",
    [
        ((64, 64), (128, 512), None, 64, 64.0, 1.0),  # the default fabric: the tile side
        ((28, 28), (28, 28), None, 28, 28.0, 1.0),  # a whole-image tile at its own size
        ((28, 28), (28, 28), None, 64, 64.0, 64 / 28),  # a digit stored as a 64-px tile
        ((256, 256), (1024, 1024), 256, 64, 64.0, 1.0),  # MVTec at 256: 64-px tiles kept
        ((128, 128), (128, 128), None, 128, 64.0, 1.0),  # a whole 128-px crop: 64 of its px
        ((128, 128), (128, 128), 256, 256, 128.0, 2.0),  # upsampled 2x: drawn at 128, resampled
        ((128, 128), (128, 512), None, 64, 32.0, 1.0),  # 128-px tiles stored at 64 (resize)
        ((32, 32), (128, 128), None, 32, 32.0, 1.0),  # a tile under 64 px: never past the tile
        ((40, 40), (40, 40), 160, 160, 160.0, 4.0),  # capped at the working image's short side
    ],
)
def test_defects_are_sized_in_image_pixels(
    box, image, image_size, tile_side, reference, upsampling
):
    got = defect_geometry(np.array([box]), np.array([image]), image_size, tile_side)
    assert got[0].tolist() == [reference] and got[1].tolist() == [upsampling]


@pytest.mark.parametrize(
    "box,image,image_size,tile_side,resolution,reference",
    [
        # the whole 512-px image shrunk to 256, sized at the images' own resolution:
        # 64 image px = 32 working px, as 64-px tiles at full resolution see them
        ((512, 512), (512, 512), 256, 256, "native", 32.0),
        ((64, 64), (512, 512), None, 64, "native", 64.0),
        # at the working resolution (the default, auto): 64 working px = 128 image px
        ((512, 512), (512, 512), 256, 256, "auto", 64.0),
        ((512, 512), (512, 512), 256, 256, 256, 64.0),
        # MVTec 1024 px at 256 graded at full resolution: 16 working px
        ((256, 256), (1024, 1024), 256, 64, "native", 16.0),
        # a reference coarser than the tiles: 64 px at 256 = 128 image px, capped at the tile
        ((64, 64), (512, 512), None, 64, 256, 64.0),
        # upsampled crops keep 64 of their own pixels at any reference
        ((128, 128), (128, 128), 256, 256, "native", 128.0),
    ],
)
def test_the_reference_resolution_sets_the_defects_size(
    box, image, image_size, tile_side, resolution, reference
):
    got = defect_geometry(np.array([box]), np.array([image]), image_size, tile_side, resolution)
    assert got[0].tolist() == [reference]


def test_synthetic_resolution_param_is_checked(tmp_path):
    for bad in ("fine", 4, True):
        data = tiny_params()
        data["score"]["synthetic_resolution"] = bad
        write_params(tmp_path / "params.yaml", data)
        with pytest.raises(ParamsError, match=r"score\.synthetic_resolution"):
            load_params(tmp_path / "params.yaml")


@pytest.mark.parametrize("kind", ["foreign", "smear", "hole", "scratch", "stain"])
def test_a_bigger_tile_gets_the_same_defect_in_image_pixels(kind):
    """The bias this guards against: sized from the tile, a whole 128-px crop got defects
    four times the area of a 64-px tile's, and the figure favoured bigger tiles."""
    small, large = _texture(1, 64, 0), _texture(1, 128, 0)
    upsampled = _resample(small, 128).astype(np.float32)
    ratios_native, ratios_up, ratios_old = [], [], []
    for seed in range(40):
        _, m64 = paint(small, small, kind, np.random.default_rng(seed))
        _, m128 = paint(large, large, kind, np.random.default_rng(seed), reference=64)
        _, m_up = paint(upsampled, upsampled, kind, np.random.default_rng(seed), 128, 2.0)
        _, m_old = paint(large, large, kind, np.random.default_rng(seed))
        ratios_native.append(m128.sum() / m64.sum())
        ratios_up.append(m_up.sum() / m64.sum())
        ratios_old.append(m_old.sum() / m64.sum())
    # same image pixels at the image's resolution; four times the pixels when upsampled
    # 2x, plus the rim the resampling reaches (a 1-px scratch becomes about 4 px wide)
    assert 0.6 < np.median(ratios_native) < 1.5, kind
    assert 2.8 < np.median(ratios_up) < (10 if kind == "scratch" else 6.5), kind
    assert np.median(ratios_old) > 1.6, kind  # what tile-relative sizes did


def _upsample_like_patchify(image: np.ndarray, side: int) -> np.ndarray:
    as_bytes = Image.fromarray(np.round(image[0] * 255).astype(np.uint8))
    return (np.asarray(as_bytes.resize((side, side), Image.BILINEAR), np.float32) / 255)[None]


@pytest.mark.parametrize("image_side,tile_side", [(128, 256), (28, 64), (100, 256)])
def test_on_an_upsampled_tile_the_defect_is_what_the_image_would_show(image_side, tile_side):
    """A defect drawn on a crop of a real photograph and the crop then upsampled as
    patchify upsamples it, against the defect drawn on the upsampled tile: they agree to
    about one 8-bit level inside the mask (drawn at the tile's resolution, a defect's
    edges are sharper than anything an upsampled image holds; drawn on a blurred
    estimate of the image, the texture shows through it)."""
    from skimage import data

    photo = data.grass().astype(np.float32) / 255
    factor = tile_side / image_side
    for seed in range(15):
        kind = GRAY_KINDS[seed % len(GRAY_KINDS)]
        at = np.random.default_rng(seed).integers(0, photo.shape[0] - image_side, 4)
        crop = photo[at[0] : at[0] + image_side, at[1] : at[1] + image_side][None]
        donor = photo[at[2] : at[2] + image_side, at[3] : at[3] + image_side][None]
        reference = min(64.0, image_side)
        drawn, small_mask = paint(crop, donor, kind, np.random.default_rng(seed), reference)
        truth = _upsample_like_patchify(drawn, tile_side)
        tile = _upsample_like_patchify(crop, tile_side)
        got, mask = paint(
            tile,
            _upsample_like_patchify(donor, tile_side),
            kind,
            np.random.default_rng(seed),
            reference * factor,
            factor,
        )
        np.testing.assert_array_equal(got[:, ~mask], tile[:, ~mask])  # exact masks
        region = _resample(small_mask[None].astype(np.float64), tile_side)[0] > 0
        assert np.abs(got - truth)[:, region].mean() < 0.005, kind
        assert np.abs(tile - truth)[:, region].mean() > 0.015, kind  # a real defect


def test_the_tile_side_as_reference_paints_what_it_always_did():
    tile, donor = _texture(1, 64, 0), _texture(1, 64, 1)
    for kind in GRAY_KINDS:
        a = paint(tile, donor, kind, np.random.default_rng(5))
        b = paint(tile, donor, kind, np.random.default_rng(5), reference=64.0, upsampling=1.0)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def _val_tiles(n_images: int, tiles_per_image: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "patch_id": np.arange(n_images * tiles_per_image) + 100,
            "image_id": np.repeat(np.arange(n_images) * 3, tiles_per_image),
        }
    )


def test_plan_and_variants_are_deterministic_and_seeded():
    tiles = _val_tiles(5, 4)
    plan = plan_variants(tiles, 6, GRAY_KINDS, seed=0)
    assert len(plan) == 30 and (plan.groupby("image_id").size() == 6).all()
    # kinds in equal shares; the donor always comes from another image
    assert plan["kind"].value_counts().nunique() == 1
    own = dict(zip(tiles["patch_id"], tiles["image_id"], strict=True))
    assert all(own[d] != i for d, i in zip(plan["donor_patch_id"], plan["image_id"], strict=True))
    pd.testing.assert_frame_equal(plan, plan_variants(tiles, 6, GRAY_KINDS, seed=0))
    assert not plan.equals(plan_variants(tiles, 6, GRAY_KINDS, seed=1))

    clean = np.stack([_texture(1, 32, i) for i in range(len(plan))])
    a, masks_a = make_variants(plan, clean, clean[::-1], 0, tabular=False)
    b, masks_b = make_variants(plan, clean, clean[::-1], 0, tabular=False)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(masks_a, masks_b)
    c, _ = make_variants(plan, clean, clean[::-1], 1, tabular=False)
    assert not np.array_equal(a, c)
    # a variant does not depend on which others are made with it (batching, order)
    one, mask_one = make_variants(plan.iloc[7:8], clean[7:8], clean[::-1][7:8], 0, False)
    np.testing.assert_array_equal(one[0], a[7])
    np.testing.assert_array_equal(mask_one[0], masks_a[7])


def test_table_rows_get_feature_shifts():
    tiles = _val_tiles(4, 1)
    plan = plan_variants(tiles, 3, ("shift",), seed=0)
    rows = np.zeros((len(plan), 1, 1, 10), dtype=np.float32)
    shifted, masks = make_variants(plan, rows, rows, 0, tabular=True)
    assert masks is None
    moved = np.abs(shifted).reshape(len(plan), -1)
    assert ((moved >= 3).sum(1) >= 1).all() and ((moved > 0).sum(1) <= 3).all()


def _write_npz(path, good, bad, kinds, maps=None):
    arrays = {"good_scores": good, "defect_scores": bad, "kinds": np.array(kinds)}
    if maps is not None:
        arrays.update(maps)
    np.savez(path, **arrays)


def test_metrics_from_scores_and_maps(tmp_path):
    rng = np.random.default_rng(0)
    good, bad = rng.normal(0, 1, 40), rng.normal(3, 1, 60)
    masks = np.zeros((60, 16, 16), bool)
    masks[:, 4:8, 4:8] = True
    clean = rng.normal(0, 1, (60, 16, 16)).astype(np.float16)
    painted = clean + 4 * masks
    kinds = ["stain", "scratch"] * 30
    path = tmp_path / "v.npz"
    _write_npz(
        path, good, bad, kinds, {"clean_maps": clean, "defect_maps": painted, "masks": masks}
    )
    flat = label_free_metrics(path, seed=0, aupro_max_fpr=0.3)
    assert flat["val_synthetic.image.auroc"] > 0.95
    assert (
        flat["val_synthetic.image.auroc_ci_low"]
        <= flat["val_synthetic.image.auroc"]
        <= flat["val_synthetic.image.auroc_ci_high"]
    )
    assert flat["val_synthetic.pixel.auroc"] > 0.95
    assert flat["val_synthetic.pixel.auroc_ci_low"] is not None
    assert set(k for k in flat if "by_kind" in k) == {
        "val_synthetic.by_kind.scratch.auroc",
        "val_synthetic.by_kind.stain.auroc",
    }
    assert flat["val_synthetic.n_good"] == 40 and flat["val_synthetic.n_defect"] == 60
    # constant scores: chance, not a figure that looks real
    _write_npz(path, np.zeros(40), np.zeros(60), kinds)
    flat = label_free_metrics(path, seed=0, aupro_max_fpr=0.3)
    assert flat["val_synthetic.image.auroc"] == 0.5 and flat["val_synthetic.pixel.auroc"] is None
    # nothing to compare: None, never NaN
    _write_npz(path, np.zeros(0), np.zeros(0), np.zeros(0, dtype="<U1"))
    flat = label_free_metrics(path, seed=0, aupro_max_fpr=0.3)
    assert flat["val_synthetic.image.auroc"] is None
    json.dumps(flat, allow_nan=False)


def test_every_run_writes_the_label_free_figure(project):
    write_params(project / "params.yaml", tiny_params(model="padim"))
    params = load_params(project / "params.yaml")
    for name in ("download", "patchify", "split", "train", "score", "threshold", "evaluate"):
        pipeline.STAGES[name](params)
    metrics = json.loads((project / "metrics/eval.json").read_text())
    val = pd.read_csv(project / "data/splits/val.csv")
    assert metrics["val_synthetic.n_good"] == val["image_id"].nunique()
    assert metrics["val_synthetic.n_defect"] == 6 * val["image_id"].nunique()
    for key in ("image.auroc", "image.auroc_ci_low", "image.auroc_ci_high", "pixel.auroc"):
        assert metrics[f"val_synthetic.{key}"] is not None, key
    # pretrained features find painted defects on fabric far above chance
    assert metrics["val_synthetic.pixel.auroc"] > 0.8
    assert metrics["val_synthetic.image.auroc"] > 0.7
    first = (project / "scores/padim/val_synthetic.npz").read_bytes()
    pipeline.STAGES["score"](params)
    assert (project / "scores/padim/val_synthetic.npz").read_bytes() == first

    # 128-px tiles of the same images: the painted defects cover as many image pixels
    # as on 64-px tiles (sized from the tile, they covered about four times as many)
    with np.load(project / "scores/padim/val_synthetic.npz") as stored:
        area_64 = np.median(stored["masks"].sum(axis=(1, 2)))
    data = tiny_params(model="padim")
    data["patch"].update(side=128, stride=128)
    write_params(project / "params.yaml", data)
    params = load_params(project / "params.yaml")
    for name in ("patchify", "split", "train", "score"):
        pipeline.STAGES[name](params)
    with np.load(project / "scores/padim/val_synthetic.npz") as stored:
        assert stored["masks"].shape[-1] == 128
        area_128 = np.median(stored["masks"].sum(axis=(1, 2)))
    assert 0.6 < area_128 / area_64 < 1.6

import numpy as np
import pandas as pd
import pytest

from anomaly.data.download import download
from anomaly.data.manifest import read_manifest
from anomaly.data.patching import patchify, tile_origins
from anomaly.data.splitting import make_splits
from anomaly.errors import DataError
from anomaly.io import save_png
from anomaly.params import PatchConfig, SplitConfig, load_params


def test_tile_origins_cover_the_edge():
    assert tile_origins(100, 32, 32) == [0, 32, 64, 68]
    assert tile_origins(64, 32, 16) == [0, 16, 32]
    assert tile_origins(20, 32, 32) == []


@pytest.fixture
def manifest(project):
    params = load_params()
    return read_manifest(download(params, project / "data/raw"))


def test_patchify_labels_tiles_from_masks(project, manifest):
    meta = patchify(
        manifest, PatchConfig(side=32, stride=32, min_defect_pixels=4), project / "patches"
    )
    tiles = np.load(project / "patches/patches.npy", mmap_mode="r")
    masks = np.load(project / "patches/masks.npy", mmap_mode="r")
    table = pd.read_csv(project / "patches/patches.csv")
    assert tiles.shape == (meta["n_patches"], 1, 32, 32) == (len(table), 1, 32, 32)
    assert len(table) == len(manifest) * 2 * 8
    defect = table["label"] == 1
    assert defect.any()
    assert (table.loc[defect, "defect_pixels"] >= 4).all()
    assert (table.loc[table["label"] == 0, "defect_pixels"] == 0).all()
    assert masks[defect.to_numpy()].any(axis=(1, 2)).all()
    good_images = manifest.loc[manifest["label"] == 0, "image_id"]
    assert (table[table["image_id"].isin(good_images)]["label"] == 0).all()


def test_patchify_resizes(project, manifest):
    patchify(manifest, PatchConfig(side=32, stride=32, resize=16), project / "p")
    assert np.load(project / "p/patches.npy").shape[-1] == 16


def test_mask_of_wrong_size_stops_patchify(project, manifest):
    row = manifest[manifest["label"] == 1].iloc[0]
    save_png(project / "data/raw/synthetic_fabric" / row["mask_path"], np.zeros((10, 10), np.uint8))
    with pytest.raises(DataError, match=r"_mask\.png: mask is 10x10 but its image is 256x64"):
        patchify(manifest, PatchConfig(side=32, stride=32), project / "patches")
    assert not (project / "patches").exists()


def test_corrupt_png_stops_patchify(project, manifest):
    path = project / "data/raw/synthetic_fabric" / manifest.iloc[2]["image_path"]
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match=f"{path.name}: corrupt or unreadable image"):
        patchify(manifest, PatchConfig(side=32, stride=32), project / "patches")


def _images(labels, groups=None):
    return pd.DataFrame(
        {
            "image_id": range(len(labels)),
            "label": labels,
            "group": groups or ["a"] * len(labels),
            "defect_type": ["good" if v == 0 else "x" for v in labels],
        }
    )


def test_split_is_grouped_and_train_is_good_only():
    images = _images([0] * 10 + [1] * 5)
    patches = pd.DataFrame(
        {
            "patch_id": range(60),
            "image_id": np.repeat(np.arange(15), 4),
            "label": [0] * 40 + [1, 0, 0, -1] * 5,
        }
    )
    parts, summary = make_splits(patches, images, SplitConfig(0.2, 0.3, 0.4), seed=0)
    owners = [set(parts[n]["image_id"]) for n in ("train", "val", "test")]
    assert not (owners[0] & owners[1] or owners[0] & owners[2] or owners[1] & owners[2])
    assert (parts["train"]["label"] == 0).all()
    assert summary["val"]["defect_images"] == 2 and summary["test"]["defect_images"] == 3
    assert summary["train"]["good_images"] == 5
    again, _ = make_splits(patches, images, SplitConfig(0.2, 0.3, 0.4), seed=0)
    assert again["test"].equals(parts["test"])


def test_split_without_good_images_fails():
    images = _images([1, 1, 1])
    patches = pd.DataFrame({"patch_id": range(3), "image_id": range(3), "label": [1, 1, 1]})
    with pytest.raises(DataError, match="good-only training set would be empty"):
        make_splits(patches, images, SplitConfig(), seed=0)


def test_manifest_keeps_fabric_codes_as_text(manifest):
    assert set(manifest["group"]) == {"01", "02", "03"}
    assert set(manifest.loc[manifest["label"] == 0, "defect_type"]) == {"good"}


@pytest.mark.parametrize(
    ("config", "sizes", "expected"),
    [
        # small square images: one whole-image tile at their own resolution
        (PatchConfig(side="auto", stride="auto"), [(128, 128), (128, 128)], (128, 64)),
        # rolls: the largest square that fits, overlapping by half along the roll
        (PatchConfig(side="auto", stride="auto"), [(128, 512), (130, 600)], (128, 64)),
        # large photographs: capped tiles, overlapping by half
        (PatchConfig(side="auto", stride="auto"), [(1024, 1024)], (256, 128)),
        (PatchConfig(side="auto", stride="auto", auto_side_max=96), [(300, 200)], (96, 48)),
        # image_size decides the working size, whatever the files' sizes
        (PatchConfig(side="auto", stride="auto", image_size=192), [(1024, 900)], (192, 96)),
        # a fixed side with stride auto: no overlap, as before
        (PatchConfig(side=64, stride="auto"), [(1024, 1024)], (64, 64)),
        (PatchConfig(side=64, stride=16), [(1024, 1024)], (64, 16)),
    ],
)
def test_resolve_tiling(config, sizes, expected):
    resolved = config.resolve_tiling(sizes)
    assert (resolved.side, resolved.stride) == expected
    assert resolved.out_size == (resolved.resize or expected[0])


def test_patchify_auto_side_cuts_overlapping_tiles_and_records_the_numbers(project, manifest):
    """Tiny fabric rolls are 256 x 64: auto tiles are 64 px, 32 apart, so every roll
    is 7 tiles that together cover each pixel; meta.json records the numbers that the
    later stages and predict cut with, and what params.yaml asked for."""
    meta = patchify(manifest, PatchConfig(side="auto", stride="auto"), project / "patches")
    assert meta["patch"]["side"] == 64 and meta["patch"]["stride"] == 32
    assert meta["patch_requested"] == {"side": "auto", "stride": "auto", "auto_side_max": 256}
    table = pd.read_csv(project / "patches/patches.csv")
    assert len(table) == len(manifest) * 7
    assert sorted(table.loc[table["image_id"] == 0, "x"]) == list(range(0, 193, 32))
    assert np.load(project / "patches/patches.npy", mmap_mode="r").shape[1:] == (1, 64, 64)
    fixed = patchify(manifest, PatchConfig(side=64, stride="auto"), project / "fixed")
    assert fixed["patch"]["stride"] == 64 and "patch_requested" not in fixed

import numpy as np

from anomaly.data.aitex import read_aitex
from anomaly.data.synthetic_fabric import generate, make_roll
from anomaly.image_reader import read_image
from anomaly.params import DEFECT_KINDS, SyntheticFabricConfig


def test_rolls_are_deterministic_and_masks_exact():
    cfg = SyntheticFabricConfig(width=256, height=64)
    for i, kind in enumerate(DEFECT_KINDS):
        a, mask_a = make_roll(cfg, 3, i, "twill", kind)
        b, mask_b = make_roll(cfg, 3, i, "twill", kind)
        assert np.array_equal(a, b) and np.array_equal(mask_a, mask_b)
        assert mask_a.any(), kind
        clean, _ = make_roll(cfg, 3, i, "twill", None)
        change = np.abs(a.astype(int) - clean.astype(int))
        # the defect changes the pixels under its mask, and nothing outside it much
        assert change[mask_a].mean() > 10, kind
        assert np.quantile(change[~mask_a], 0.999) < 0.3 * change.max(), kind


def test_different_seeds_give_different_fabric():
    cfg = SyntheticFabricConfig(width=128, height=64)
    a, _ = make_roll(cfg, 0, 0, "plain", None)
    b, _ = make_roll(cfg, 1, 0, "plain", None)
    assert not np.array_equal(a, b)


def test_generated_folder_has_aitex_layout(tmp_path):
    cfg = SyntheticFabricConfig(n_good=4, n_defect=3, width=128, height=64)
    root = generate(cfg, 0, tmp_path / "aitex")
    assert sorted(p.name for p in root.iterdir()) == [
        "Defect_images",
        "Mask_images",
        "NODefect_images",
    ]
    frame = read_aitex(root)
    assert (frame["label"] == 0).sum() == 4 and (frame["label"] == 1).sum() == 3
    defects = frame[frame["label"] == 1]
    assert all(m.endswith("_mask.png") for m in defects["mask_path"])
    assert set(defects["defect_type"]) <= set(DEFECT_KINDS)
    image = read_image(root / defects.iloc[0]["image_path"])
    assert image.shape == (64, 128)
    only_fabric_2 = read_aitex(root, ["02"])
    assert set(only_fabric_2["group"]) == {"02"}

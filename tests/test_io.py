import numpy as np
import pytest

from anomaly.errors import DataError
from anomaly.image_reader import read_image, read_mask
from anomaly.io import atomic_dir, atomic_path, save_png, write_json


def test_atomic_path_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_dir_replaces_whole_directory(tmp_path):
    target = tmp_path / "d"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(KeyboardInterrupt), atomic_dir(target) as tmp:
        (tmp / "b").write_text("2")
        raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_corrupt_png_raises_data_error_naming_file(tmp_path):
    good = tmp_path / "good.png"
    save_png(good, np.zeros((8, 8), np.uint8))
    broken = tmp_path / "broken.png"
    broken.write_bytes(good.read_bytes()[:40])
    with pytest.raises(DataError, match=r"broken\.png: corrupt or unreadable image"):
        read_image(broken)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="junk.png"):
        read_image(junk)


def test_mask_of_wrong_size(tmp_path):
    path = tmp_path / "m.png"
    save_png(path, np.full((10, 12), 255, np.uint8))
    assert read_mask(path, (10, 12)).all()
    with pytest.raises(DataError, match=r"m\.png: mask is 12x10 but its image is 16x10"):
        read_mask(path, (10, 16))


def test_atomic_outputs_get_ordinary_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"v": 1})
        with atomic_dir(tmp_path / "d") as tmp:
            (tmp / "x").write_text("1")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_grey_mask_is_binarised_with_a_warning(tmp_path, caplog):
    import logging

    path = tmp_path / "m.png"
    save_png(path, np.array([[0, 100], [200, 255]], np.uint8))
    with caplog.at_level(logging.WARNING):
        mask = read_mask(path)
    assert mask.tolist() == [[False, False], [True, True]]
    assert "not binary" in caplog.text

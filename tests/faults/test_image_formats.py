"""Camera image formats through the one image reader (issue 28, scope 2).

The reported fault: a 16-bit PNG was read as an all-white image (Pillow clips 16-bit
values at 255 when converting to 8 bits), so a 16-bit copy of a good roll scored 2329
and "defective", silently. And a JPEG's EXIF orientation was ignored, so its mask,
drawn on the displayed picture, no longer lined up.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from anomaly.cli import main
from anomaly.data.download import download
from anomaly.errors import DataError
from anomaly.image_reader import image_size, read_image, read_mask
from anomaly.inference.detector import load_detector
from anomaly.params import load_params
from conftest import TO_BUNDLE, run_tiny_pipeline, tiny_params, write_params


def _gradient(h: int = 40, w: int = 60) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w), dtype=np.uint8)


def test_16_bit_png_reads_like_its_8_bit_twin(tmp_path):
    gray = _gradient()
    Image.fromarray(gray).save(tmp_path / "8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "16.png")
    assert Image.open(tmp_path / "16.png").mode == "I;16"
    # the fault: Pillow's own conversion is all white
    assert (np.asarray(Image.open(tmp_path / "16.png").convert("L")) == 255).mean() > 0.9
    np.testing.assert_array_equal(read_image(tmp_path / "16.png"), gray)
    np.testing.assert_array_equal(read_image(tmp_path / "16.png", "RGB")[..., 1], gray)
    # 16-bit TIFF too (big- and little-endian files decode to the same values)
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "16.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "16.tif"), gray)


def test_intensity_range_for_12_bit_data_in_16_bit_files(tmp_path):
    gray = _gradient()
    twelve = np.round(gray.astype(np.float64) * 4095 / 255).astype(np.uint16)
    Image.fromarray(twelve).save(tmp_path / "12.png")
    dark = read_image(tmp_path / "12.png")  # by the file's depth: 1/16 of the range
    assert dark.max() <= 16
    np.testing.assert_array_equal(read_image(tmp_path / "12.png", "L", [0, 4095]), gray)


def _png48(values: np.ndarray) -> bytes:
    """A 48-bit RGB PNG of (H, W, 3) 16-bit ``values``, written by hand (Pillow cannot
    write it)."""
    deep = values.astype(">u2")
    h, w = values.shape[:2]
    raw = b"".join(b"\x00" + deep[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
    return png + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_48_bit_rgb_png_reads_as_8_bit_rgb(tmp_path):
    rgb = np.stack([_gradient(), _gradient()[::-1], 255 - _gradient()], axis=2)
    (tmp_path / "48.png").write_bytes(_png48(rgb.astype(np.uint16) * 257))
    np.testing.assert_array_equal(read_image(tmp_path / "48.png", "RGB"), rgb)


def test_float_tiff_rule(tmp_path):
    gray = _gradient()
    Image.fromarray(gray.astype(np.float32) / 255).save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif"), gray)
    Image.fromarray(gray.astype(np.float32)).save(tmp_path / "f255.tif")
    with pytest.raises(DataError, match=r"f255.tif: floating-point .*patch.intensity_range"):
        read_image(tmp_path / "f255.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f255.tif", "L", [0, 255]), gray)
    nan = gray.astype(np.float32) / 255
    nan[3, 4] = np.nan
    Image.fromarray(nan).save(tmp_path / "nan.tif")
    with pytest.raises(DataError, match="nan.tif: image has NaN"):
        read_image(tmp_path / "nan.tif")


def test_32_bit_integer_images(tmp_path):
    gray = _gradient()
    full = gray.astype(np.int64) * (2**31 - 1) // 255  # Pillow's int32: top 2^31 - 1
    Image.fromarray(full.astype(np.int32)).save(tmp_path / "32.tif")
    assert np.abs(read_image(tmp_path / "32.tif").astype(int) - gray).max() <= 1
    # 16-bit data saved as 32-bit: by the declared depth it would be black; refused
    Image.fromarray(gray.astype(np.int32) * 257).save(tmp_path / "16in32.tif")
    with pytest.raises(DataError, match=r"16in32.tif: 32-bit .*patch.intensity_range"):
        read_image(tmp_path / "16in32.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "16in32.tif", "L", [0, 65535]), gray)


def test_exif_orientation_applies_to_image_mask_and_size(tmp_path):
    shown = np.zeros((100, 60), np.uint8)  # what a viewer shows: portrait, mark at top
    shown[5:15, 20:40] = 255
    stored = np.rot90(shown, 1)  # the camera stored it landscape; EXIF 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif, quality=100)
    Image.fromarray(stored).save(tmp_path / "phone_mask.png", exif=exif)
    assert Image.open(tmp_path / "phone.jpg").size == (100, 60)  # unrotated, as stored
    image = read_image(tmp_path / "phone.jpg")
    assert image.shape == (100, 60) == image_size(tmp_path / "phone.jpg")
    assert image[5:15, 20:40].mean() > 200 and image[50:].mean() < 20
    mask = read_mask(tmp_path / "phone_mask.png", expected_shape=image.shape)
    np.testing.assert_array_equal(mask, shown > 127)


def test_multi_page_tiff_is_refused_in_one_line(tmp_path):
    pages = [Image.fromarray(_gradient()), Image.fromarray(255 - _gradient())]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(DataError, match=r"stack.tif: has 2 pages or frames; one image per file"):
        read_image(tmp_path / "stack.tif")


def test_modes_convert_as_documented(tmp_path):
    rgb = np.stack([_gradient(), _gradient()[::-1], 255 - _gradient()], axis=2)
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "p.png")
    palette = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "p.png", "RGB"), palette)
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png", "RGB"), rgb)  # alpha dropped
    np.testing.assert_array_equal(read_image(tmp_path / "a.png", "L"), luma)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.tif")
    cmyk = read_image(tmp_path / "c.tif", "RGB")
    assert cmyk.shape == rgb.shape and np.abs(cmyk.astype(int) - rgb).mean() < 2
    assert read_image(tmp_path / "c.tif", "L").shape == luma.shape
    gray = _gradient()
    np.testing.assert_array_equal(
        read_image(_save(Image.fromarray(gray), tmp_path / "g.png"), "RGB"),
        np.repeat(gray[..., None], 3, axis=2),
    )


def _save(img: Image.Image, path):
    img.save(path)
    return path


@pytest.fixture(scope="module")
def fabric_bundle(tmp_path_factory):
    return run_tiny_pipeline(tmp_path_factory.mktemp("project"), TO_BUNDLE)


def test_a_16_bit_copy_scores_like_its_8_bit_original(fabric_bundle, tmp_path, monkeypatch):
    """The reported fault, end to end: predict (CLI and load_detector) on a 16-bit copy."""
    monkeypatch.chdir(fabric_bundle)
    raw = fabric_bundle / "data/raw/synthetic_fabric"
    manifest = pd.read_csv(raw / "manifest.csv")
    original = raw / manifest.loc[manifest["label"] == 0, "image_path"].iloc[0]
    gray = np.asarray(Image.open(original))
    deep = tmp_path / "in16" / original.name
    deep.parent.mkdir()
    Image.fromarray(gray.astype(np.uint16) * 257).save(deep)
    detector = load_detector(fabric_bundle / "models/cae.bundle")
    want, got = detector.predict_one(original), detector.predict_one(deep)
    assert got.score == pytest.approx(want.score, rel=1e-6)
    assert got.defect == want.defect and not got.blank
    same = detector.predict_one(gray.astype(np.uint16) * 257, group=want.group)  # an array too
    assert same.score == pytest.approx(want.score, rel=1e-6)
    assert main(["predict", str(deep.parent), "--out", str(tmp_path / "out")]) == 0
    predicted = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert predicted["score"].iloc[0] == pytest.approx(want.score, rel=1e-6)


def test_download_check_names_a_multi_page_file(tmp_path, monkeypatch):
    folder = tmp_path / "mine"
    (folder / "good").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(_gradient()).save(folder / "good" / f"{i}.png")
    pages = [Image.fromarray(_gradient())] * 2
    pages[0].save(folder / "good" / "stack.tif", save_all=True, append_images=pages[1:])
    monkeypatch.chdir(tmp_path)
    params = tiny_params(dataset={"name": "folder", "source": str(folder)})
    write_params(tmp_path / "params.yaml", params)
    with pytest.raises(DataError, match=r"stack.tif: has 2 pages.*dataset.on_bad_file"):
        download(load_params(tmp_path / "params.yaml"), tmp_path / "raw")


def _camera_folder(root, peak: int, dark_frame: bool = False):
    """A folder dataset of 16-bit single-band PNGs whose values reach ``peak`` (4095: a
    12-bit camera), with one all-but-black frame when ``dark_frame``."""
    folder = root / "camera"
    (folder / "good").mkdir(parents=True)
    for i in range(6):
        values = np.round(_gradient(32, 32).astype(np.float64) * peak / 255).astype(np.uint16)
        Image.fromarray(values).save(folder / "good" / f"{i}.png")
    if dark_frame:
        Image.fromarray(np.full((32, 32), 40, np.uint16)).save(folder / "good" / "dark.png")
    return folder


def _run_patchify(root, monkeypatch, folder, intensity_range=None) -> int:
    monkeypatch.chdir(root)
    patch = {"side": 16, "stride": 16, "intensity_range": intensity_range}
    params = tiny_params(dataset={"name": "folder", "source": str(folder)}, patch=patch)
    write_params(root / "params.yaml", params)
    assert main(["download"]) == 0
    return main(["patchify"])


def test_a_12_bit_camera_in_16_bit_files_is_refused_until_its_range_is_named(
    tmp_path, monkeypatch, capsys
):
    """Read by their 16-bit container, a 12-bit camera's images keep 17 grey levels and
    look black: a model would train on them without a word. Patchify refuses the dataset
    in one line naming the key and the 12-bit range, before any tile is written."""
    folder = _camera_folder(tmp_path, 4095)
    capsys.readouterr()
    assert _run_patchify(tmp_path, monkeypatch, folder) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "reach only 4095 of 65535 (at most 12 bits)" in err
    assert "17 of 256 grey levels" in err
    assert "patch.intensity_range: [0, 4095]" in err
    assert not (tmp_path / "data/patches").exists()
    # naming the range reads them like the 8-bit images they stand for
    assert _run_patchify(tmp_path, monkeypatch, folder, [0, 4095]) == 0
    tiles = np.load(tmp_path / "data/patches/patches.npy")
    assert tiles.max() > 200
    # [0, 65535] says "these are 16-bit data": accepted as asked, dark
    assert _run_patchify(tmp_path, monkeypatch, folder, [0, 65535]) == 0
    assert np.load(tmp_path / "data/patches/patches.npy").max() <= 16


def test_real_16_bit_data_with_a_dark_frame_is_read_as_16_bit(tmp_path, monkeypatch):
    """The check is on the dataset, not each file: a dark frame among real 16-bit images
    is not a 12-bit camera."""
    folder = _camera_folder(tmp_path, 65535, dark_frame=True)
    assert _run_patchify(tmp_path, monkeypatch, folder) == 0
    assert np.load(tmp_path / "data/patches/patches.npy").max() > 200


def test_a_12_bit_colour_camera_in_48_bit_pngs_is_refused(tmp_path, monkeypatch, capsys):
    """Colour at 16 bits per channel is read by its high byte (Pillow): 12-bit values
    become 16 grey levels, and no patch.intensity_range can restore the low bits, so
    the refusal asks for full-range files whatever the range says; full-range ones
    pass."""
    folder = tmp_path / "colour"
    (folder / "good").mkdir(parents=True)
    for i in range(6):
        rgb = np.stack([_gradient(32, 32)] * 3, axis=2).astype(np.float64)
        (folder / "good" / f"{i}.png").write_bytes(_png48(np.round(rgb * 4095 / 255)))
    capsys.readouterr()
    assert _run_patchify(tmp_path, monkeypatch, folder, [0, 4095]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "colour images reach at most 4095 of 65535 (at most 12 bits)" in err
    assert "16 of 256 grey levels" in err and "save them scaled to the full 16-bit" in err
    for i in range(6):
        rgb = np.stack([_gradient(32, 32)] * 3, axis=2).astype(np.uint16) * 257
        (folder / "good" / f"{i}.png").write_bytes(_png48(rgb))
    assert _run_patchify(tmp_path, monkeypatch, folder) == 0
    assert np.load(tmp_path / "data/patches/patches.npy").max() > 200


def test_a_real_scan_stored_in_16_bits_is_refused_then_read_by_its_range(
    tmp_path, monkeypatch, capsys
):
    """Real data: matplotlib's sample MRI slice (s1045.ima, 256 x 256 big-endian 16-bit,
    values 0..215) saved as 16-bit PNGs. Read by the container it would be black; the
    refusal names the 8 bits its values use, and that range reads it at full contrast."""
    import gzip

    import matplotlib.cbook

    with gzip.open(matplotlib.cbook.get_sample_data("s1045.ima.gz", asfileobj=False)) as f:
        scan = np.frombuffer(f.read(), ">u2").reshape(256, 256).astype(np.uint16)
    assert scan.max() == 215
    folder = tmp_path / "mri"
    (folder / "good").mkdir(parents=True)
    for i in range(6):  # six overlapping 128-px views of the slice
        view = scan[64 + 8 * i : 192 + 8 * i, 64:192]
        Image.fromarray(np.ascontiguousarray(view)).save(folder / "good" / f"{i}.png")
    capsys.readouterr()
    assert _run_patchify(tmp_path, monkeypatch, folder) == 2
    err = capsys.readouterr().err
    assert "(at most 8 bits)" in err and "patch.intensity_range: [0, 255]" in err
    assert _run_patchify(tmp_path, monkeypatch, folder, [0, 255]) == 0
    tiles = np.load(tmp_path / "data/patches/patches.npy")
    assert tiles.max() == scan[64:232, 64:192].max()  # 215: each value as it is


def test_the_range_check_knows_16_bit_pngs_in_either_pillow_mode(tmp_path):
    """Pillow 13 opens a 16-bit grey PNG as "I;16"; other versions open it as "I" (32-bit
    signed). Either is a 16-bit image to the check; a real 32-bit TIFF is not."""
    from anomaly.image_reader import _deep_kind

    Image.fromarray(np.full((8, 8), 4095, np.uint16)).save(tmp_path / "16.png")
    with Image.open(tmp_path / "16.png") as img:
        assert _deep_kind(img) == "gray"
        as_int32 = img.convert("I")
        as_int32.format = "PNG"  # what such a Pillow hands over
        assert as_int32.mode == "I" and _deep_kind(as_int32) == "gray"
    Image.fromarray(np.zeros((8, 8), np.int32)).save(tmp_path / "32.tif")
    with Image.open(tmp_path / "32.tif") as img:
        assert img.mode == "I" and _deep_kind(img) is None


def test_a_range_that_clips_the_data_is_said(tmp_path, monkeypatch, caplog):
    """[0, 4095] set for a 14-bit camera turns everything above 4095 white: patchify
    goes on (a narrower window can be meant) but says so, naming the key and how far
    the values reach; a range that fits says nothing."""
    folder = _camera_folder(tmp_path, 16383)
    with caplog.at_level("WARNING", logger="anomaly.image_reader"):
        assert _run_patchify(tmp_path, monkeypatch, folder, [0, 4095]) == 0
    said = [r.getMessage() for r in caplog.records if r.name == "anomaly.image_reader"]
    assert len(said) == 1
    assert "patch.intensity_range [0, 4095] clips 6 of the first 6 images" in said[0]
    assert "values reach 0 to 16383" in said[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="anomaly.image_reader"):
        assert _run_patchify(tmp_path, monkeypatch, folder, [0, 16383]) == 0
    assert not [r for r in caplog.records if r.name == "anomaly.image_reader"]

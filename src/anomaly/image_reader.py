"""The one image reader: every path that turns a file into pixels goes through here
(the download check, patchify, predict, DRAEM's texture source), so a camera's file
means the same thing in training and in production.

Why not ``Image.open(path).convert("L")``: Pillow clips 16-bit values at 255 when it
converts ``I;16`` to ``L``, so a 16-bit PNG became an all-white image, silently; and it
ignores the EXIF orientation a phone writes, so a mask drawn on the displayed picture
no longer lined up. The rules, applied in this order:

1. **One picture per file.** A multi-page TIFF or an animated GIF/PNG is refused with
   one line (which page would be meant?); save each page as its own file.
2. **EXIF orientation** is applied (``ImageOps.exif_transpose``), to images and masks
   alike, so both are what a viewer shows.
3. **Bit depth.** 8-bit modes are read as they are. Integer images of more bits (16-bit
   ``I;16*``; 32-bit ``I``) are scaled by their real bit depth: the file's declared bits
   per sample (a TIFF's BitsPerSample, 16 for PNG), so 65535 in a 16-bit file is 255
   (32-bit: Pillow's signed int32, top 2^31 - 1);
   a 32-bit image whose values stay below 2^24 (16-bit data in a 32-bit file) would
   read as black and is refused, naming ``patch.intensity_range``.
   Float images (``F``) are intensities in [0, 1]; any other range, or NaN, is refused
   naming the file. ``patch.intensity_range: [low, high]`` overrides both rules for data
   whose values use only part of the container (12-bit cameras writing 16-bit files:
   ``[0, 4095]``): values are mapped linearly from [low, high] to [0, 255] and clipped.
   8-bit images ignore it (their range is their container's).
   Pillow reads 16-bit-per-channel RGB PNGs as 8-bit RGB itself (the high byte).
   A dataset of 16-bit images whose values all stay below a quarter of the range (a
   12-bit camera's 0..4095) would keep 64 grey levels or fewer and look almost black:
   :func:`check_deep_range` refuses it, naming ``patch.intensity_range`` and the bits
   its values use for single-band images, and asking for full-range (or 8-bit) files
   for colour ones, whose lost low bits no range can restore (patchify runs it on the
   whole dataset, so one dark frame of real 16-bit data is not a 12-bit camera).
4. **Modes.** Palette images are expanded through their palette; alpha is dropped (the
   stored colour is kept, not composited); CMYK and YCbCr are converted to RGB by Pillow;
   colour becomes grayscale by ITU-R 601 luma (Pillow's ``L``); grayscale becomes RGB by
   repeating the channel.

Every image is decoded completely, so a truncated file fails here, at the line that
names it, not deep inside a training loop.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import DataError

log = logging.getLogger(__name__)

SINGLE_BAND_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
_EXIF_ORIENTATION = 0x0112
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # a quarter turn: width and height trade places
_FLOAT_TOLERANCE = 1e-6
# 16-bit data that never reaches a quarter of its range uses 14 bits or fewer: read by
# the container's depth it loses two bits or more (12-bit: 17 grey levels of 256)
DEEP_PEAK_MIN = 1 << 14
# patch.intensity_range's clipping warning: images sampled, share of pixels cut off
CLIP_SAMPLE, CLIP_SHARE = 20, 0.01

IntensityRange = Sequence[float] | None


def _is_deep(mode: str) -> bool:
    """Single-band 16-bit, 32-bit or float: scaled by bit depth or ``intensity_range``."""
    return mode in ("I", "F") or mode.startswith("I;16")


def is_single_channel(mode: str) -> bool:
    """Whether a Pillow mode holds one band (grayscale, possibly with alpha or deep)."""
    return mode in SINGLE_BAND_MODES


def _bit_depth(img: Image.Image) -> int:
    """Declared bits per sample of a deep integer image."""
    if img.mode.startswith("I;16"):
        return 16
    tags = getattr(img, "tag_v2", None)
    if tags is not None and 258 in tags:  # TIFF BitsPerSample
        bits = tags[258]
        bits = bits[0] if isinstance(bits, tuple) else bits
        return int(bits)
    if img.format == "PNG":
        return 16  # PNG integer images deeper than 8 bits are 16-bit
    return 32


def _scale_deep(img: Image.Image, name: str, intensity_range: IntensityRange) -> np.ndarray:
    """A uint8 (H, W) array from a 16-bit, 32-bit or float single-band image."""
    values = np.asarray(img).astype(np.float64)  # any byte order (I;16B) to native
    if not np.isfinite(values).all():
        raise DataError(f"{name}: image has NaN or infinite values")
    if intensity_range is not None:
        low, high = float(intensity_range[0]), float(intensity_range[1])
    elif img.mode == "F":
        low, high = 0.0, 1.0
        vmin, vmax = float(values.min()), float(values.max())
        if vmin < -_FLOAT_TOLERANCE or vmax > 1 + _FLOAT_TOLERANCE:
            raise DataError(
                f"{name}: floating-point image with values in [{vmin:.6g}, {vmax:.6g}]; "
                "float images are read as intensities in [0, 1]: set "
                "patch.intensity_range: [low, high] to say what its values mean"
            )
    else:
        if values.min() < 0:
            raise DataError(
                f"{name}: signed integer image with negative values; set "
                "patch.intensity_range: [low, high] to say what its values mean"
            )
        bits = _bit_depth(img)
        # Pillow holds 32-bit integer images as signed int32: their top is 2^31 - 1
        low, high = 0.0, float(2 ** min(bits, 31) - 1)
        if bits > 16 and 0 < values.max() < 2 ** (bits - 8):
            # e.g. 16-bit data saved as a 32-bit TIFF: by its declared depth every pixel
            # would read as black, a silent wrong result; the user must say the range
            raise DataError(
                f"{name}: {bits}-bit integer image whose values reach only "
                f"{int(values.max())}: read by its declared depth it would be black; set "
                "patch.intensity_range: [low, high] (e.g. [0, 65535] for 16-bit data)"
            )
    scaled = (values - low) / (high - low) * 255.0
    return np.round(np.clip(scaled, 0.0, 255.0)).astype(np.uint8)


def check_decodes(img: Image.Image, name: str) -> None:
    """The structural rules alone (one page, decodes completely), without reading values:
    the download stage's check of every file."""
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        raise DataError(
            f"{name}: has {frames} pages or frames; one image per file is read (save "
            "each page as its own file)"
        )
    img.load()


def decode(
    img: Image.Image, mode: str, name: str, intensity_range: IntensityRange = None
) -> np.ndarray:
    """An opened Pillow image as a uint8 array in ``mode`` ("L": H x W, "RGB": H x W x 3),
    by the rules in this module's docstring. ``name`` is what errors call the image."""
    check_decodes(img, name)
    img = ImageOps.exif_transpose(img) or img
    if _is_deep(img.mode):
        gray = _scale_deep(img, name, intensity_range)
        return gray if mode == "L" else np.repeat(gray[..., None], 3, axis=2)
    if img.mode not in ("1", "L", "P", "RGB") and not is_single_channel(img.mode):
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBA...: colour first
    return np.asarray(img.convert(mode), dtype=np.uint8)


def read_image(
    path: str | Path, mode: str = "L", intensity_range: IntensityRange = None
) -> np.ndarray:
    """Read an image file into a uint8 array (see :func:`decode`); any decoding failure
    becomes a DataError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image not found")
    return _open_and_decode(path, mode, str(path), intensity_range)


def read_image_bytes(
    data: bytes, name: str, mode: str = "L", intensity_range: IntensityRange = None
) -> np.ndarray:
    """An encoded image held in memory (an upload to ``anomaly serve``), by the same rules
    as a file; ``name`` (the upload's file name) is what errors call it."""
    if not data:
        raise DataError(f"{name}: empty file, not an image")
    return _open_and_decode(io.BytesIO(data), mode, name, intensity_range)


def _open_and_decode(
    source: Path | io.BytesIO, mode: str, name: str, intensity_range: IntensityRange
) -> np.ndarray:
    try:
        with Image.open(source) as img:
            return decode(img, mode, name, intensity_range)
    except UnidentifiedImageError:  # its message names a BytesIO object for uploads
        raise DataError(
            f"{name}: corrupt or unreadable image (not a format Pillow can read)"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{name}: corrupt or unreadable image ({exc})") from exc


@contextmanager
def _opened(path: Path) -> Iterator[Image.Image]:
    """``Image.open(path)`` for a header or values read in the ``with`` body; a missing or
    unreadable file, there or in the body, is a DataError naming it."""
    try:
        with Image.open(path) as img:
            yield img
    except FileNotFoundError as exc:
        raise DataError(f"{path}: image not found") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: corrupt or unreadable image ({exc})") from exc


def _deep_kind(img: Image.Image) -> str | None:
    """ "gray" for a 16-bit single-band image, "colour" for 16 bits per colour channel
    (which Pillow decodes to 8 bits, keeping the high byte), None for anything else
    (8-bit, 32-bit, float, or a TIFF that declares fewer bits and is scaled by them)."""
    if img.mode == "I" or img.mode.startswith("I;16"):  # some Pillow versions: "I"
        return "gray" if _bit_depth(img) == 16 else None
    if img.mode not in ("RGB", "RGBA") or not img.tile:
        return None
    args = img.tile[0][3]  # the decoder's raw mode: "RGB;16B" for 48-bit PNG
    rawmode = args[0] if isinstance(args, tuple) and args else args
    return "colour" if isinstance(rawmode, str) and ";16" in rawmode else None


def _warn_clipping(
    window: tuple[float, ...], clipped: list[tuple[float, float, float]], sampled: int
) -> None:
    """Say that ``patch.intensity_range`` (``window``) cut off a real share of some of the ``sampled``
    images it applies to; ``clipped``: (share outside, min, max) of each such image. A
    warning, not a refusal: a narrower window can be meant (contrast where it matters)."""
    log.warning(
        "patch.intensity_range [%g, %g] clips %d of the first %d images it applies to "
        "(up to %.0f%% of an image's pixels; values reach %g to %g): what lies outside "
        "turns black or white; widen the range unless that window is meant",
        window[0],
        window[1],
        len(clipped),
        sampled,
        100 * max(share for share, _, _ in clipped),
        min(low for _, low, _ in clipped),
        max(high for _, _, high in clipped),
    )


def _refuse_low_range(
    peaks: dict[str, int], counts: dict[str, int], first: dict[str, Path]
) -> None:
    """The refusal of :func:`check_deep_range` for the first kind whose peak stayed
    below ``DEEP_PEAK_MIN``, if any."""
    for kind, peak in peaks.items():
        if peak >= DEEP_PEAK_MIN:
            continue
        bits = max(8, peak.bit_length())
        # levels read: 16-bit values scaled to 8 bits (gray), or the high byte (colour)
        levels = (round(peak * 255 / 65535) if kind == "gray" else peak >> 8) + 1
        what = "single-band images reach only" if kind == "gray" else "colour images reach at most"
        said = (
            f"{first[kind]}: the dataset's {counts[kind]} 16-bit {what} "
            f"{peak} of 65535 (at most {bits} bits): read as 16-bit data they keep "
            f"{levels} of 256 grey levels and look almost black; "
        )
        if kind == "gray":
            raise DataError(
                said + f"set patch.intensity_range: [0, {2**bits - 1}] for a {bits}-bit "
                "camera, or [0, 65535] to read them as 16-bit data"
            )
        raise DataError(
            said + "colour images are read by their high byte, which "
            "patch.intensity_range cannot rescale: save them scaled to the full 16-bit "
            "range, or as 8-bit images"
        )


def check_deep_range(paths: Iterable[str | Path], intensity_range: IntensityRange) -> None:
    """Refuse a dataset whose 16-bit images all stay below ``DEEP_PEAK_MIN``: a 12-bit
    camera's files read by their 16-bit container would train on near-black images,
    silently. Single-band images pass when ``patch.intensity_range`` says what their
    values mean; colour ones always need the full range, since Pillow reads them by
    their high byte and no range can bring the lost bits back. With a range set, warn
    when it cuts off more than ``CLIP_SHARE`` of any of the first ``CLIP_SAMPLE`` images
    it applies to (e.g. [0, 4095] on a 14-bit camera: everything brighter turns white).

    One pass, one open per file: values are read only for the clipping sample and, per
    kind, until one image reaches the bound, so real 16-bit data costs a read or two."""
    peaks: dict[str, int] = {}  # per kind: the largest value seen (colour: its bound)
    counts: dict[str, int] = {}
    first: dict[str, Path] = {}
    clipped: list[tuple[float, float, float]] = []
    sampled = 0
    window = None if intensity_range is None else tuple(map(float, intensity_range))
    for path in map(Path, paths):
        with _opened(path) as img:
            if window is not None and sampled < CLIP_SAMPLE and _is_deep(img.mode):
                values = np.asarray(img)
                sampled += 1
                share = float(((values < window[0]) | (values > window[1])).mean())
                if share > CLIP_SHARE:
                    clipped.append((share, float(values.min()), float(values.max())))
            kind = _deep_kind(img)
            if kind is None or (kind == "gray" and intensity_range is not None):
                continue
            if peaks.get(kind, 0) >= DEEP_PEAK_MIN:
                continue
            peak = int(np.asarray(img).max())
        # colour: the largest value its 8-bit reading can stand for (high byte, low ones)
        peak = peak if kind == "gray" else (peak << 8) | 0xFF
        counts[kind] = counts.get(kind, 0) + 1
        first.setdefault(kind, path)
        peaks[kind] = max(peaks.get(kind, 0), peak)
    if clipped:
        _warn_clipping(window, clipped, sampled)
    _refuse_low_range(peaks, counts, first)


def read_mask(path: str | Path, expected_shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a defect mask as a boolean array: pixels of 128 and more are defect (of any
    bit depth, after the same orientation rule as images).

    Masks saved with anti-aliasing or JPEG artefacts have grey values; they are
    binarised with a warning rather than silently, since it changes pixel labels.
    """
    gray = read_image(path, mode="L")
    if np.any((gray != 0) & (gray != 255)):
        log.warning("%s: mask is not binary (values other than 0 and 255); binarised at 128", path)
    mask = gray > 127
    if expected_shape is not None and mask.shape != tuple(expected_shape):
        h, w = expected_shape
        raise DataError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {w}x{h}")
    return mask


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed: swapped when the EXIF orientation turns the image a
    quarter turn. Reads only the header."""
    width, height = img.size
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION)
    except (AttributeError, OSError, SyntaxError, ValueError):
        orientation = None
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file as displayed, from its header."""
    with _opened(Path(path)) as img:
        width, height = oriented_size(img)
    return height, width

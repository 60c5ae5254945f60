"""Atomic writes and safe image reading.

DVC caches whatever a stage leaves at its output paths, so every artefact is
written to a temporary sibling first and renamed into place: an interrupted
stage leaves either the old file or none, never a truncated one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import DataError

log = logging.getLogger(__name__)


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: Path, mode: int) -> None:
    """Give a temp file or dir the permissions a plain open()/mkdir() would have had."""
    os.chmod(tmp, mode & ~_current_umask())


def _temp_prefix(path: Path) -> str:
    # The writer's PID is part of every temp name, so that the next run can tell the
    # leftovers of a killed run (their process is gone) from a live writer's files.
    return f".{path.name}.pid{os.getpid()}."


_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.pid(?P<pid>\d+)\.[^.]+\.(tmp|old)$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete temp siblings of ``path`` left by a run that was killed (kill -9, power loss,
    disk full): they are named ``.<name>.pid<PID>.<random>.tmp`` and their PID is gone.

    Called before every atomic write, so a rerun of the stage cleans up after the
    killed one; files of a writer that is still running are left alone.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for sibling in path.parent.iterdir():
        match = _TEMP_NAME.match(sibling.name)
        if not match or match["name"] != path.name or _alive(int(match["pid"])):
            continue
        if sibling.is_dir() and not sibling.is_symlink():
            shutil.rmtree(sibling, ignore_errors=True)
        else:
            sibling.unlink(missing_ok=True)
        log.warning("removed %s, left by an interrupted run", sibling)
        removed.append(sibling)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp_name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _publish(tmp, 0o666)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``path`` as a whole on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _publish(tmp, 0o777)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".old", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def finite_or_none(value: Any) -> Any:
    """``value``, or None where it is a float that is NaN or infinite (JSON has neither)."""
    if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
        return None
    return value


def write_json(path: str | Path, data: Any) -> None:
    """Strict JSON: a NaN or infinity anywhere is a bug upstream and raises here, instead
    of writing a file that `dvc metrics` and other JSON readers reject or misread."""
    try:
        text = json.dumps(data, indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"{path}: refusing to write NaN or infinity ({exc})") from exc
    write_text(path, text + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__} to JSON")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (run the stage that writes it first)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def write_csv(path: str | Path, frame: Any) -> None:
    """Write a pandas DataFrame atomically, without its index."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


# Columns that hold names, never numbers: fabric code "01" must not become 1.
TEXT_COLUMNS = ("group", "defect_type", "image_path", "mask_path", "source_split", "model")


def read_csv(path: str | Path, required: list[str] | None = None) -> Any:
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (run the stage that writes it first)")
    try:
        frame = pd.read_csv(
            path, keep_default_na=False, na_values=[""], dtype={c: str for c in TEXT_COLUMNS}
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc
    missing = [c for c in (required or []) if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    return frame


def save_png(path: str | Path, array: np.ndarray) -> None:
    """Save a uint8 HxW or HxWxC array as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


class NpyWriter:
    """A ``.npy`` file of known shape written front to back, one block at a time.

    Why not ``np.lib.format.open_memmap``: every page written through a memory map stays
    in the writing process's resident set until unmapped, so the tile store's RSS grew
    with the dataset (4x the images: +99% peak RSS); plain writes go to the page
    cache, which the kernel reclaims, and a full disk raises ENOSPC instead of SIGBUS.
    """

    def __init__(self, path: str | Path, dtype: Any, shape: tuple[int, ...]) -> None:
        self.path, self.dtype, self.shape = Path(path), np.dtype(dtype), tuple(shape)
        self.rows = 0
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False}
        np.lib.format.write_array_header_1_0(self._file, {**header, "shape": self.shape})

    def write(self, block: np.ndarray) -> None:
        """Append ``block`` (rows of the array's row shape)."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.shape[1:] or self.rows + len(block) > self.shape[0]:
            raise ValueError(f"{self.path}: block {block.shape} does not fit {self.shape}")
        self._file.write(block.tobytes())
        self.rows += len(block)

    def close(self) -> None:
        self._file.close()
        if self.rows != self.shape[0]:
            raise ValueError(f"{self.path}: {self.rows} of {self.shape[0]} rows written")

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._file.close()


def check_free_space(target: str | Path, needed: int, what: str) -> None:
    """Refuse, in one line, to start writing ``needed`` bytes where they do not fit.

    Memory-mapped writes that run out of disk do not raise an error: the process dies
    of SIGBUS. So stages that write large arrays check the space before they start.
    """
    target = Path(target)
    probe = target if target.exists() else target.parent
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise DataError(
            f"{target}: {what} needs {needed / 2**20:.1f} MiB but only "
            f"{free / 2**20:.1f} MiB is free there; free some space and rerun"
        )


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def load_torch_file(path: str | Path, device: Any, what: str, missing: str) -> Any:
    """``torch.load(path, weights_only=True)``: plain types and tensors only, so opening
    a file never runs code from it. A missing file is ``missing`` (the hint to make it),
    an unreadable one is one DataError naming ``what`` it should have been."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {missing}")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise DataError(f"{path}: not a readable {what} ({exc})") from exc

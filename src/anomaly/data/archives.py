"""Safe extraction of tar (gz/xz/bz2), zip and 7z archives.

Every member is checked before anything is written: absolute paths, ``..``
components, links (tar symlinks and hard links, zip symlinks) pointing outside
the target and device or FIFO files are refused. Extraction goes to a
temporary sibling folder that is renamed into place at the end, so an
interrupted extraction leaves nothing that looks complete. Free disk space is
checked against the archive's declared size first.

Compressed tar streams are read to their end before anything is extracted:
gzip, xz and bzip2 check their CRC only there, so a corrupt byte in the middle
would otherwise extract silently into a wrong image. Every codec error, of any
library, becomes one ``DownloadError`` line naming the archive.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from ..errors import DownloadError
from ..io import atomic_dir

Select = Callable[[str], bool]

# What the codecs raise on corrupt data (a gzip CRC mismatch is BadGzipFile, xz's is
# LZMAError, a truncated stream EOFError). Plain OSError is not among them: a full disk
# or a permission problem must not be reported as a corrupt archive.
CODEC_ERRORS = (
    tarfile.TarError,
    zipfile.BadZipFile,
    gzip.BadGzipFile,
    EOFError,
    lzma.LZMAError,
    zlib.error,
)
STREAMS = {
    (".tar.gz", ".tgz"): gzip.open,
    (".tar.xz", ".txz"): lzma.open,
    (".tar.bz2", ".tbz2"): bz2.open,
}


def _py7zr_errors() -> tuple[type[BaseException], ...]:
    try:
        from py7zr.exceptions import AbsolutePathError, ArchiveError, PasswordRequired
    except ImportError:  # pragma: no cover - py7zr is a dependency
        return ()
    return (ArchiveError, AbsolutePathError, PasswordRequired)


def verify_stream(archive: Path) -> None:
    """Decompress a compressed tar to its end so its checksum is checked (CRC32/CRC64)."""
    name = archive.name.lower()
    for suffixes, opener in STREAMS.items():
        if name.endswith(suffixes):
            try:
                with opener(archive, "rb") as stream:
                    while stream.read(1 << 20):
                        pass
            except CODEC_ERRORS as exc:
                raise DownloadError(
                    f"{archive}: corrupt archive, its compressed stream fails its check "
                    f"({type(exc).__name__}: {exc}); download it again"
                ) from exc


def _check_name(archive: Path, name: str) -> str:
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise DownloadError(f"{archive}: refusing absolute path {name!r} in archive")
    if ".." in pure.parts:
        raise DownloadError(f"{archive}: refusing path with '..' {name!r} in archive")
    return str(pure)


def _check_link(archive: Path, name: str, target: str) -> None:
    resolved = PurePosixPath(name).parent / target
    if (
        PurePosixPath(target).is_absolute()
        or ".." in PurePosixPath(*_normalise(resolved.parts)).parts
    ):
        raise DownloadError(f"{archive}: refusing link {name!r} -> {target!r} outside the archive")


def _normalise(parts: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for part in parts:
        if part == "..":
            if not out:
                return [".."]
            out.pop()
        elif part not in (".", ""):
            out.append(part)
    return out or ["."]


def _check_space(archive: Path, target: Path, needed: int) -> None:
    free = shutil.disk_usage(target.parent if not target.exists() else target).free
    if needed > free:
        raise DownloadError(
            f"{archive}: extracting needs {needed / 2**30:.2f} GiB but only "
            f"{free / 2**30:.2f} GiB is free at {target.parent}"
        )


def archive_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")):
        return "tar"
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(".7z"):
        return "7z"
    raise DownloadError(f"{path}: unknown archive type (expected .tar[.gz|.xz|.bz2], .zip, .7z)")


def extract(archive: str | Path, target: str | Path, select: Select | None = None) -> Path:
    """Extract ``archive`` (only members for which ``select(name)`` holds) into ``target``."""
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise DownloadError(f"{archive}: archive not found")
    kind = archive_kind(archive)
    target.parent.mkdir(parents=True, exist_ok=True)
    keep = select or (lambda _name: True)
    if kind == "tar":
        verify_stream(archive)
    with atomic_dir(target) as tmp:
        try:
            if kind == "tar":
                _extract_tar(archive, tmp, keep)
            elif kind == "zip":
                _extract_zip(archive, tmp, keep)
            else:
                _extract_7z(archive, tmp, keep)
        except DownloadError:
            raise
        except (*CODEC_ERRORS, *_py7zr_errors()) as exc:
            raise DownloadError(
                f"{archive}: corrupt {kind} archive ({type(exc).__name__}: {exc})"
            ) from exc
    return target


def _extract_tar(archive: Path, dest: Path, keep: Select) -> None:
    try:
        with tarfile.open(archive) as tar:
            members = []
            for member in tar.getmembers():
                name = _check_name(archive, member.name)
                if member.isdev() or member.isfifo():
                    raise DownloadError(f"{archive}: refusing device or FIFO {member.name!r}")
                if member.issym() or member.islnk():
                    _check_link(archive, name, member.linkname)
                if keep(name):
                    members.append(member)
            _check_space(archive, dest, sum(m.size for m in members))
            for member in members:
                tar.extract(member, dest, filter="data")
    except (tarfile.TarError, EOFError, lzma.LZMAError, zlib.error) as exc:
        raise DownloadError(f"{archive}: corrupt tar archive ({exc})") from exc


def _extract_zip(archive: Path, dest: Path, keep: Select) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = []
            for info in zf.infolist():
                name = _check_name(archive, info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    raise DownloadError(f"{archive}: refusing symbolic link {info.filename!r}")
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                    raise DownloadError(f"{archive}: refusing device or FIFO {info.filename!r}")
                if keep(name):
                    members.append(info)
            _check_space(archive, dest, sum(m.file_size for m in members))
            for info in members:
                zf.extract(info, dest)
    except zipfile.BadZipFile as exc:
        raise DownloadError(f"{archive}: corrupt zip archive ({exc})") from exc


def _extract_7z(archive: Path, dest: Path, keep: Select) -> None:
    try:
        import py7zr
    except ImportError as exc:  # pragma: no cover - py7zr is a dependency
        raise DownloadError("7z archives need py7zr (pip install py7zr)") from exc
    try:
        with py7zr.SevenZipFile(archive, "r") as zf:
            infos = zf.list()
            names = []
            for info in infos:
                name = _check_name(archive, info.filename)
                if getattr(info, "is_symlink", False):
                    raise DownloadError(f"{archive}: refusing symbolic link {info.filename!r}")
                if keep(name):
                    names.append(info.filename)
            _check_space(
                archive, dest, sum(i.uncompressed or 0 for i in infos if i.filename in set(names))
            )
            zf.reset()
            zf.extract(path=dest, targets=names)
    except _py7zr_errors() as exc:
        raise DownloadError(f"{archive}: corrupt 7z archive ({exc})") from exc

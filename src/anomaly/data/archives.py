"""Safe extraction of tar (gz/xz/bz2), zip and 7z archives.

Every member is checked before anything is written: absolute paths, ``..``
components, links (tar symlinks and hard links, zip symlinks) pointing outside
the target and device or FIFO files are refused. Extraction goes to a
temporary sibling folder that is renamed into place at the end, so an
interrupted extraction leaves nothing that looks complete. Free disk space is
checked against the archive's declared size first.
"""

from __future__ import annotations

import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from ..errors import DownloadError
from ..io import atomic_dir

Select = Callable[[str], bool]


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
    with atomic_dir(target) as tmp:
        if kind == "tar":
            _extract_tar(archive, tmp, keep)
        elif kind == "zip":
            _extract_zip(archive, tmp, keep)
        else:
            _extract_7z(archive, tmp, keep)
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
    except (tarfile.TarError, EOFError) as exc:
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
    except py7zr.exceptions.ArchiveError as exc:
        raise DownloadError(f"{archive}: corrupt 7z archive ({exc})") from exc

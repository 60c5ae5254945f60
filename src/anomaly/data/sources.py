"""Turn ``dataset.source`` (a URL, a local archive, a folder, or nothing) into a local folder.

- a folder is used where it is, never copied;
- a local archive is extracted once into the cache, keyed by its name, size and mtime;
- a URL, or the publisher's official files when ``source`` is null, is downloaded into
  the cache (resumable, verified) and extracted there.

Where the publisher gives no checksum, the first verified download's sha256 is
recorded in ``<cache>/checksums.json`` and later downloads must match it; the
log says so, so the user knows the trust comes from their first download.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DownloadError
from ..io import sha256_file, write_json
from .archives import archive_kind, extract
from .fetch import download_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resource:
    """One published file: where it is and what it should hash to (None when unpublished)."""

    url: str
    checksum: str | None = None

    @property
    def filename(self) -> str:
        return self.url.rstrip("/").rsplit("/", 1)[-1]


def cache_root(configured: str | None) -> Path:
    """``dataset.cache_dir``, else $ANOMALY_CACHE, else ~/.cache/anomaly-pipeline."""
    if configured:
        return Path(configured).expanduser()
    env = os.environ.get("ANOMALY_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "anomaly-pipeline"


def fetch_resource(resource: Resource, cache: Path, hint: str, retries: int = 4) -> Path:
    """Download one resource into ``cache``, verifying its checksum (published or recorded)."""
    record_file = cache / "checksums.json"
    recorded = json.loads(record_file.read_text()) if record_file.is_file() else {}
    checksum = resource.checksum or recorded.get(resource.url)
    path = download_file(
        resource.url, cache / resource.filename, checksum, retries=retries, manual_hint=hint
    )
    if checksum is None:
        digest = f"sha256:{sha256_file(path)}"
        recorded[resource.url] = digest
        write_json(record_file, recorded)
        log.warning(
            "%s: the publisher gives no checksum; recorded %s from this first download "
            "in %s, later downloads must match it",
            resource.url,
            digest,
            record_file,
        )
    return path


def extracted(
    archive: Path, cache: Path, select: Callable[[str], bool] | None = None, key: str = ""
) -> Path:
    """Extract ``archive`` into the cache once; reuse the folder afterwards."""
    stat = archive.stat()
    stem = archive.name.split(".")[0]
    target = cache / "extracted" / f"{stem}-{stat.st_size}-{int(stat.st_mtime)}{key}"
    if target.is_dir():  # extraction renames into place only when complete
        return target
    log.info("extracting %s to %s", archive, target)
    return extract(archive, target, select)


def local_folder(
    source: str | None,
    official: list[Resource],
    cache: Path,
    hint: str,
    select: Callable[[str], bool] | None = None,
    key: str = "",
) -> Path:
    """The folder holding the dataset, downloading and extracting as needed."""
    if source and not source.startswith(("http://", "https://")):
        path = Path(source).expanduser().resolve()
        if path.is_dir():
            return path
        if path.is_file():
            archive_kind(path)  # clear error for an unknown file type
            return extracted(path, cache, select, key)
        raise DownloadError(f"dataset.source: {path} does not exist")
    resources = [Resource(source)] if source else official
    if not resources:
        raise DownloadError(f"dataset.source: nothing to download. {hint}")
    folders = []
    for resource in resources:
        path = fetch_resource(resource, cache, hint)
        try:
            archive_kind(path)
        except DownloadError:
            folders.append(path.parent)
            continue
        folders.append(extracted(path, cache, select, key))
    if len(folders) == 1:
        return folders[0]
    return merge_folders(folders, cache / "merged" / "-".join(p.name for p in folders))


def merge_folders(folders: list[Path], target: Path) -> Path:
    """A folder of symlinks joining several extracted archives (AITEX ships three)."""
    if target.is_dir():
        return target
    from ..io import atomic_dir

    with atomic_dir(target) as tmp:
        for folder in folders:
            for child in folder.iterdir():
                link = tmp / child.name
                if not link.exists():
                    link.symlink_to(child.resolve())
    return target

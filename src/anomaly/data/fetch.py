"""Download a file over HTTP(S) with resume, retries and checksum verification.

Why hand-written on urllib: the needs are small and exact (Range resume of a
``.part`` file, bounded retries with backoff, sha256 verification, a clear
offline message) and adding requests would not remove any of that logic.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from ..errors import DownloadError
from ..io import is_disk_full, sha256_file

log = logging.getLogger(__name__)

CHUNK = 1 << 16


def _open(url: str, offset: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "anomaly-pipeline/0.1"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http/https only)


def file_digest(path: str | Path, algorithm: str) -> str:
    if algorithm == "sha256":
        return sha256_file(path)
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _matches(path: Path, checksum: str | None) -> bool:
    if checksum is None:
        return True
    algorithm, _, expected = checksum.partition(":")
    return file_digest(path, algorithm) == expected


def download_file(
    url: str,
    dest: str | Path,
    checksum: str | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 60.0,
    manual_hint: str = "",
) -> Path:
    """Fetch ``url`` to ``dest``; resume a partial ``dest.part``; verify ``checksum``.

    ``checksum`` is ``"sha256:<hex>"`` or ``"md5:<hex>"`` (what the publisher gives).

    A file already at ``dest`` with the right checksum is reused without any
    network access. On a checksum mismatch the download is deleted, so a bad
    file never sits in the cache looking complete.
    """
    if not url.startswith(("http://", "https://")):
        raise DownloadError(f"{url}: only http(s) URLs can be downloaded")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        if _matches(dest, checksum):
            return dest
        log.warning("%s: cached file has the wrong checksum; downloading again", dest)
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff * 2 ** (attempt - 1)
            log.warning(
                "download of %s failed (%s); retry %d/%d in %.1fs",
                url,
                last_error,
                attempt,
                retries,
                delay,
            )
            time.sleep(delay)
        try:
            _fetch_into(url, part, timeout)
            break
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and part.exists():
                # "Range not satisfiable": the .part already holds the whole file (a run
                # killed between the last byte and the rename), or more than the server has.
                if _part_is_complete(part, exc.headers.get("Content-Range"), checksum):
                    log.info("%s: already complete; verifying it", part)
                    break
                log.warning("%s: does not match the server's file; starting over", part)
                part.unlink()
                last_error = exc
                continue
            if exc.code in (401, 403, 404, 410):
                raise DownloadError(
                    f"{url}: HTTP {exc.code} {exc.reason}. {manual_hint}".strip()
                ) from exc
            last_error = exc
        except (urllib.error.URLError, OSError, ConnectionError, TimeoutError) as exc:
            if is_disk_full(exc):
                raise
            last_error = exc
    else:
        raise DownloadError(
            f"{url}: download failed after {retries + 1} attempts ({last_error}); offline? "
            f"{manual_hint or 'Download it by hand and set dataset.source to the file.'}"
        )
    if not _matches(part, checksum):
        algorithm, _, expected = (checksum or "").partition(":")
        actual = file_digest(part, algorithm)
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{url}: {algorithm} {actual} does not match the expected {expected}; "
            "the download was deleted"
        )
    os.replace(part, dest)
    return dest


def _part_is_complete(part: Path, content_range: str | None, checksum: str | None) -> bool:
    """Whether a ``.part`` the server will not extend is the whole file: its size equals the
    total in ``Content-Range: bytes */N``, or (no total given) it matches the checksum."""
    total = None
    if content_range and "/" in content_range:
        tail = content_range.rsplit("/", 1)[1].strip()
        total = int(tail) if tail.isdigit() else None
    if total is not None:
        return part.stat().st_size == total
    return checksum is not None and _matches(part, checksum)


def _fetch_into(url: str, part: Path, timeout: float) -> None:
    offset = part.stat().st_size if part.exists() else 0
    with _open(url, offset, timeout) as response:
        status = getattr(response, "status", 200)
        if offset and status != 206:
            offset = 0  # the server ignored Range: start over
        length = response.headers.get("Content-Length")
        total = int(length) + offset if length is not None else None
        if total is not None and offset == total:
            return
        mode = "ab" if offset else "wb"
        received = offset
        with (
            open(part, mode) as handle,
            tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, desc=part.stem, disable=None
            ) as bar,
        ):
            while chunk := response.read(CHUNK):
                handle.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received < total:
            raise ConnectionError(f"connection closed after {received} of {total} bytes")

"""Fetching files over HTTP(S) into a folder: the cache root, sha256, and staged downloads.

A download goes to a temporary file inside its destination folder and is moved into place by
the caller (`os.replace`) once checked; on any failure, Ctrl-C included, the temporary files
are removed, and so are the folders the download created, if left empty.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from vocoder.errors import InputError
from vocoder.files import plain_file_mode

logger = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The download cache: `cache_dir`, else `$VOCODER_CACHE`, else `~/.cache/vocoder`."""
    env = os.environ.get("VOCODER_CACHE")
    root = Path(cache_dir if cache_dir is not None else env or Path.home() / ".cache" / "vocoder")
    if root.exists() and not root.is_dir():  # else said only once something is downloaded
        raise InputError(root, "is a file, not a cache folder")
    return root


class Staging:
    """Temporary download files inside one folder (see `staged_downloads`)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.temps: list[Path] = []

    def fetch(self, url: str | None, name: str, limit: int | None = None) -> Path:
        """Download `url` into a new temporary file named after `name`; its path.

        More than `limit` bytes is an `InputError`. The file gets the mode a plain `open`
        would give it (mkstemp makes it 0600).
        """
        fd, tmp_name = tempfile.mkstemp(dir=self.folder, prefix=f".{name}.", suffix=".part")
        tmp = Path(tmp_name)
        self.temps.append(tmp)
        with os.fdopen(fd, "wb") as out:
            _fetch(url, out, limit)
        os.chmod(tmp, plain_file_mode())
        return tmp


def file_in_the_way(folder: Path) -> Path | None:
    """The file at `folder` or at one of its parents, if any: it keeps `folder` from being
    made or used as a folder."""
    nearest = next((p for p in (folder, *folder.parents) if p.exists()), None)
    return nearest if nearest is not None and not nearest.is_dir() else None


@contextlib.contextmanager
def staged_downloads(folder: Path) -> Iterator[Staging]:
    """Temporary download files in `folder` (created if need be), for the caller to check
    and `os.replace` into place; on any failure the temporary files are removed, and so is
    every folder this call created (`folder` and its new parents) that is left empty.
    A file where `folder` or a parent should be is an `InputError`.
    """
    if (blocker := file_in_the_way(folder)) is not None:
        raise InputError(blocker, "a file, not a folder to download into")
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    staging = Staging(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        yield staging
    except BaseException:
        for tmp in staging.temps:
            tmp.unlink(missing_ok=True)
        for made in created:
            try:
                made.rmdir()  # only if empty: something else may have written there since
            except OSError:
                break
        raise


def _fetch(url: str | None, out, limit: int | None = None) -> int:
    """Copy `url`'s body into `out`; returns the number of bytes.

    More than `limit` bytes, fewer than the server's Content-Length (a cut connection) or any
    transport error is an `InputError` naming the URL.
    """
    if limit is None:
        logger.info("downloading %s", url)
    else:
        logger.info("downloading %s (%.1f MB)", url, limit / 1e6)
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            declared = response.headers.get("Content-Length")
            copied = 0
            while chunk := response.read(_CHUNK):
                copied += len(chunk)
                if limit is not None and copied > limit:
                    raise InputError(url, f"sends more than the registry's {limit} bytes")
                out.write(chunk)
    except urllib.error.HTTPError as e:
        raise InputError(url, f"download failed (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", None) or e
        raise InputError(url, f"download failed ({reason})") from None
    if declared is not None and declared.isdigit() and copied < int(declared):
        raise InputError(
            url, f"download failed (the connection closed after {copied} of {declared} bytes)"
        )
    return copied

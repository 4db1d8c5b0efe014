"""Files on disk: atomic writes and checked reads of PyTorch files.

Every write of the toolkit goes through `atomic_output` (a temporary file in the same
folder, then `os.replace`), so a kill or a full disk leaves either the old file or the new
one, never half a file, and a failed write is one `InputError` naming the file. PyTorch
files are read with `load_torch_file`: no unpickling of code, and the zip CRC of every
record checked first (torch itself does not), so a flipped byte is an error, not weights.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import pickle
import re
import socket
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from vocoder.errors import InputError, first_line, remedy

# errno values that mean "no room": the disk, a quota, or the process's file size limit
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


# How the text files users write (file lists, id lists, metadata.csv) are read: UTF-8, a
# byte-order mark at the start (Windows editors write one) skipped, not part of the first line
TEXT_ENCODING = "utf-8-sig"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def plain_file_mode(status: Path = Path("/proc/self/status")) -> int:
    """The mode a plain `open` gives a new file: 0o666 less the process's umask.

    The umask is read from `status` where the system has it (Linux): `os.umask` reads it
    only by setting it, which for that moment gives every thread of the process (the
    demo's, say) a umask of 0.
    """
    try:
        for line in status.read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o22)
    os.umask(umask)
    return 0o666 & ~umask


def refuse_existing(paths: Iterable[str | Path], option: str = "overwrite") -> None:
    """`InputError` naming the first of `paths` that exists (and how many more do), with
    the remedy of setting `option` (the keyword that replaces them) to True."""
    existing = [Path(p) for p in paths if Path(p).exists()]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise InputError(
            existing[0],
            f"already exists{more}; refusing to overwrite it",
            [remedy("to replace it", **{option: True})],
        )


def _writer_tag() -> str:
    """Who writes a temporary file: this host and process (`host-pid`)."""
    host = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:40]
    return f"{host}-{os.getpid()}"


def remove_orphaned_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files `atomic_output` left in `folder` when a writer on this
    host was killed outright (SIGKILL, the OOM killer); returns them. Their names hold the
    writer's host and process id: a live writer's, or another host's, are kept."""
    host, _ = _writer_tag().rsplit("-", 1)
    pattern = re.compile(r"\.(.+)\.([A-Za-z0-9]*)-(\d+)\.[a-z0-9_]{8}(.*)")
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None or match.group(2) != host:
            continue
        name, pid, suffix = match.group(1), int(match.group(3)), match.group(4)
        if suffix != Path(name).suffix or _process_alive(pid):
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's (or not ours to judge)
    return True


@contextlib.contextmanager
def atomic_output(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success move it onto `path` atomically.

    Raises `InputError` up front when `path` exists and `overwrite` is False. The
    destination is never half-written: on an exception (Ctrl-C, and a SIGTERM the caller
    turns into one, included) the temporary file is removed at once; one that a SIGKILL
    leaves is named after its writer, for `remove_orphaned_temporaries`. A failed write
    (a full disk, say) becomes an `InputError` naming `path`.
    """
    path = Path(path)
    if not overwrite:
        refuse_existing([path])
    if path.is_dir():
        raise InputError(path, "is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{_writer_tag()}.", suffix=path.suffix
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp creates 0600; give the result the usual umask permissions
            os.chmod(tmp, plain_file_mode())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        # soundfile and torch report a failed write as a RuntimeError without the errno
        tmp.unlink(missing_ok=True)
        raise InputError(path, f"could not be written: {write_problem(e)}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_problem(error: Exception) -> str:
    """Why a write failed, in words (a full disk named as such)."""
    if isinstance(error, OSError) and error.errno is not None and error.strerror:
        text = error.strerror[0].lower() + error.strerror[1:]
        if error.errno in _NO_ROOM:
            text += " (out of disk space, quota or file size limit)"
        return text
    return f"{first_line(error)} (is the disk full?)"


# what torch.save'd checkpoints are named: ours (.pt) and the published codebases'
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")


def read_export_json(weights: Path) -> tuple[Path, dict[str, Any]]:
    """The JSON object an export keeps beside its weights (`x.safetensors` -> `x.json`), and
    its path; `InputError` for a missing, non-UTF-8 or invalid one."""
    meta = weights.with_suffix(".json")
    if not meta.is_file():
        raise InputError(weights, f"expected its config beside it in {meta.name}")
    try:
        document = json.loads(meta.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(meta, f"not a text file (byte {e.start} is not UTF-8)") from None
    except json.JSONDecodeError as e:
        raise InputError(meta, f"not valid JSON ({first_line(e)})") from None
    except OSError as e:
        raise InputError(meta, f"cannot be read ({(e.strerror or str(e)).lower()})") from None
    if not isinstance(document, dict):
        raise InputError(meta, "expected a JSON object")
    return meta, document


def load_torch_file(
    path: str | Path, what: str = "PyTorch file", map_location: str | torch.device = "cpu"
) -> Any:
    """`torch.load` of tensors and plain data only, after checking the zip CRCs.

    Raises `InputError(path, ...)` for a corrupt, truncated or foreign file, and for one
    holding objects other than tensors and plain data (never unpickled).
    """
    path = Path(path)
    _check_zip_crcs(path, what)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message suggests weights_only=False, which would run code from the file
        detail = str(e).partition("WeightsUnpickler error:")[2].strip().split("\n")[0]
        raise InputError(
            path,
            f"not a readable {what}: not a PyTorch file, corrupt, or holding objects other "
            "than tensors and plain data, which are never unpickled"
            + (f" ({detail})" if detail else ""),
        ) from None
    except Exception as e:  # torch raises many kinds for truncated or foreign files
        raise InputError(path, f"not a readable {what} ({first_line(e)})") from None


def _check_zip_crcs(path: Path, what: str) -> None:
    """Files saved by `torch.save` are zip archives with a CRC-32 per record; check them
    all. Legacy files (a pickle) have none and are left to torch; a cut-short zip or a file
    that is neither is refused here, in fewer words than torch's."""
    if not zipfile.is_zipfile(path):
        try:
            with path.open("rb") as f:
                start = f.read(2)
        except OSError:
            return  # torch.load words what is wrong
        if start == b"PK":  # torch's own words for it are a paragraph about miniz
            raise InputError(path, f"not a readable {what}: a truncated or damaged zip archive")
        if start[:1] != b"\x80":  # a pickle (legacy torch files) starts with 0x80
            raise InputError(path, f"not a {what}: neither a zip nor a pickle")
        return
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise InputError(path, f"corrupt {what} ({first_line(e)})") from None
    if bad is not None:
        raise InputError(path, f"corrupt {what}: record {bad} fails its CRC check")


__all__ = [
    "TEXT_ENCODING",
    "TORCH_SUFFIXES",
    "atomic_output",
    "load_torch_file",
    "plain_file_mode",
    "read_export_json",
    "refuse_existing",
    "remove_orphaned_temporaries",
    "sha256_file",
    "write_problem",
]

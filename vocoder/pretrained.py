"""The registry of pretrained models: shipped with the source tree, or hosted and cached.

`pretrained/registry.json` (beside the `vocoder` package in a source checkout) lists each
model: its name, a description, its files (`<stem>.safetensors` weights and the `<stem>.json`
config beside them, each with its sha256 and size), an optional `url` where the files are
hosted, whether it is the default model, its model card and a few summary figures.

Where a registry name resolves (`resolve_model_path`), in this order:

1. shipped: `pretrained/<file>` in the source tree. A source checkout or an editable install
   (`pip install -e .`) finds it at `Path(vocoder.__file__).parents[1] / "pretrained"`.
2. cached: `<cache>/<name>/<file>`, where `<cache>` is the `cache_dir` argument, else
   `$VOCODER_CACHE`, else `~/.cache/vocoder`.
3. remote: downloaded from the entry's `url` into the cache, then as 2. This is the path a
   non-editable (wheel) install takes, since the wheel carries no `pretrained/` folder: the
   wheel needs the registry file itself (`$VOCODER_REGISTRY`) and entries with a `url`.

Every file is checked against its sha256 each time it is resolved; a mismatch is an
`InputError` naming the file. Downloads go to a temporary file inside the cache folder, are
checked, then moved into place with `os.replace`; on any failure nothing is left behind.

The same file may list `published` weights: files the original authors publish elsewhere
(Google Drive, NVIDIA NGC), with what is known about them and the `vocoder import` line that
turns each into a model (`PublishedWeights`, `load_published`). Those on a plain HTTPS host can
be fetched with `download_published`; the others are downloaded by hand.

This module depends on the standard library only, so that any layer may resolve a name.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import logging
import os
import shlex
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vocoder.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

PRETRAINED_DIR = Path(__file__).resolve().parents[1] / "pretrained"
"""The shipped models' folder in a source checkout or editable install."""

REGISTRY_FILE = "registry.json"
REGISTRY_FORMAT = 1
WEIGHTS_SUFFIX = ".safetensors"
DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 20

Location = Literal["shipped", "cached", "remote", "missing"]
Download = Literal["direct", "manual"]
MANUAL_HOSTS = ("drive.google.com", "docs.google.com")
"""Hosts that need a browser (confirmation pages): their files are downloaded by hand."""


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: its name (no folders), sha256 (hex) and size in bytes."""

    name: str
    sha256: str
    size: int
    url: str | None = None  # where this file is hosted; default: the entry's url + "/" + name


@dataclass(frozen=True)
class ModelEntry:
    """One model of the registry."""

    name: str
    description: str
    family: str
    parameters: int  # inference form (weight norm folded)
    data: str  # what it was trained on, in a few words
    files: tuple[ModelFile, ...]
    default: bool = False
    url: str | None = None  # base URL of the hosted files
    card: str | None = None  # model card, relative to the registry's folder
    hardware: str = ""  # what it was trained on, in a few words
    summary: dict[str, Any] = field(default_factory=dict)  # test-split figures, see the card

    @property
    def weights(self) -> ModelFile:
        """The `.safetensors` file (its `.json` config has the same stem)."""
        return next(f for f in self.files if f.name.endswith(WEIGHTS_SUFFIX))

    def file_url(self, file: ModelFile) -> str | None:
        if file.url:
            return file.url
        if self.url:
            return self.url.rstrip("/") + "/" + urllib.parse.quote(file.name)
        return None


@dataclass(frozen=True)
class PublishedWeights:
    """Weights published by their authors elsewhere (not shipped), and how to import them."""

    name: str
    family: str
    description: str
    source: str  # the publishing project, in a few words
    licence: str  # as far as known
    page: str  # where the authors publish the file
    urls: tuple[str, ...]  # download URL(s), as published
    file: str  # the name to save it under; the import line reads this name
    download: Download  # "direct": plain HTTPS; "manual": by hand (Google Drive)
    import_command: str  # the `vocoder import ...` line that makes a model of the file
    data: str = ""
    size: int | None = None  # approximate, in bytes; None: unknown
    sha256: str | None = None  # None: the source publishes no checksum (unverified)
    ll: float | None = None  # published test LL, nats per sample
    parameters_m: float | None = None  # published parameter count, millions
    config: str | None = None  # the reference config the import needs (file name)
    config_source: str | None = None  # where to get that config
    notes: str = ""

    def import_line(self, path: str | Path | None = None) -> str:
        """The import command, reading the file from `path` instead of its bare name."""
        if path is None:
            return self.import_command
        words = shlex.split(self.import_command)
        words[2] = str(path)
        return shlex.join(words)


# ---- the registry file ----


def registry_path() -> Path:
    """`$VOCODER_REGISTRY` if set, else `pretrained/registry.json` of the source tree."""
    env = os.environ.get("VOCODER_REGISTRY")
    return Path(env) if env else PRETRAINED_DIR / REGISTRY_FILE


def _read_registry(path: str | Path | None) -> tuple[Any, Path]:
    path = Path(path) if path is not None else registry_path()
    if not path.is_file():
        raise ConfigError(
            f"{path}: no model registry there (a wheel install needs VOCODER_REGISTRY set to "
            "a registry.json; a source checkout has it in pretrained/)"
        )
    try:
        return json.loads(path.read_text()), path
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None


def load_registry(path: str | Path | None = None) -> list[ModelEntry]:
    """The entries of a registry file (default: `registry_path()`), checked."""
    return _parse_registry(*_read_registry(path))


def _parse_registry(data: Any, source: Path) -> list[ModelEntry]:
    def fail(problem: str) -> None:
        raise ConfigError(f"{source}: {problem}")

    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        fail("expected an object with a 'models' list")
    if data.get("format", REGISTRY_FORMAT) != REGISTRY_FORMAT:
        fail(f"registry format {data.get('format')!r}; this version reads {REGISTRY_FORMAT}")
    entries: list[ModelEntry] = []
    for i, item in enumerate(data["models"]):
        where = f"models[{i}]"
        if not isinstance(item, dict):
            fail(f"{where}: expected an object")
        for key in ("name", "description", "family", "parameters", "data", "files"):
            if key not in item:
                fail(f"{where}: missing '{key}'")
        files = []
        for j, f in enumerate(item["files"]):
            if not isinstance(f, dict) or not {"name", "sha256", "size"} <= set(f):
                fail(f"{where}.files[{j}]: needs name, sha256 and size")
            name = str(f["name"])
            if Path(name).name != name or name in ("", ".", ".."):
                fail(f"{where}.files[{j}]: {name!r} must be a plain file name")
            sha = str(f["sha256"]).lower()
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                fail(f"{where}.files[{j}]: sha256 must be 64 hex digits")
            files.append(ModelFile(name, sha, int(f["size"]), f.get("url")))
        if sum(f.name.endswith(WEIGHTS_SUFFIX) for f in files) != 1:
            fail(f"{where}: needs exactly one {WEIGHTS_SUFFIX} file")
        known = {
            "name", "description", "family", "parameters", "data", "files", "default", "url",
            "card", "hardware", "summary",
        }  # fmt: skip
        unknown = sorted(set(item) - known)
        if unknown:
            fail(f"{where}: unknown key(s) {', '.join(unknown)}")
        entries.append(
            ModelEntry(
                name=str(item["name"]),
                description=str(item["description"]),
                family=str(item["family"]),
                parameters=int(item["parameters"]),
                data=str(item["data"]),
                files=tuple(files),
                default=bool(item.get("default", False)),
                url=item.get("url"),
                card=item.get("card"),
                hardware=str(item.get("hardware", "")),
                summary=dict(item.get("summary") or {}),
            )
        )
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        fail("model names must be unique")
    if sum(e.default for e in entries) > 1:
        fail("more than one model is marked default")
    return entries


# ---- published weights (the registry's `published` list) ----

_PUBLISHED_REQUIRED = (
    "name", "family", "description", "source", "licence", "page", "urls", "file", "download",
    "import_command",
)  # fmt: skip
_PUBLISHED_OPTIONAL = (
    "data", "size", "sha256", "ll", "parameters_m", "config", "config_source", "notes",
)  # fmt: skip


def load_published(path: str | Path | None = None) -> list[PublishedWeights]:
    """The registry's `published` list (default file: `registry_path()`), checked."""
    data, path = _read_registry(path)
    models = _parse_registry(data, path)
    return _parse_published(data.get("published", []), path, {e.name for e in models})


def _parse_published(items: Any, source: Path, shipped: set[str]) -> list[PublishedWeights]:
    def fail(where: str, problem: str) -> None:
        raise ConfigError(f"{source}: {where}: {problem}")

    if not isinstance(items, list):
        fail("published", "expected a list")
    entries: list[PublishedWeights] = []
    for i, item in enumerate(items):
        where = f"published[{i}]"
        if not isinstance(item, dict):
            fail(where, "expected an object")
        for key in _PUBLISHED_REQUIRED:
            if key not in item:
                fail(where, f"missing '{key}'")
        unknown = sorted(set(item) - set(_PUBLISHED_REQUIRED) - set(_PUBLISHED_OPTIONAL))
        if unknown:
            fail(where, f"unknown key(s) {', '.join(unknown)}")
        where = f"published[{i}] ({item['name']})"
        for key in ("name", "family", "description", "source", "licence", "page", "file",
                    "import_command"):  # fmt: skip
            if not isinstance(item[key], str) or not item[key].strip():
                fail(f"{where}.{key}", "expected a non-empty string")
        for key in ("data", "config_source", "notes"):
            if not isinstance(item.get(key, ""), str | None):
                fail(f"{where}.{key}", "expected a string")
        name, file = item["name"], item["file"]
        if name in shipped:
            fail(f"{where}.name", "is already a shipped model's name")
        if Path(file).name != file or file in (".", ".."):
            fail(f"{where}.file", f"{file!r} must be a plain file name")
        urls = item["urls"]
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            fail(f"{where}.urls", "expected a non-empty list of URLs")
        for j, url in enumerate(urls):
            if urllib.parse.urlsplit(url).scheme not in ("https", "http", "file"):
                fail(f"{where}.urls[{j}]", f"{url!r} is not an https, http or file URL")
        download = item["download"]
        if download not in ("direct", "manual"):
            fail(f"{where}.download", f"{download!r}: expected 'direct' or 'manual'")
        host = urllib.parse.urlsplit(urls[0]).hostname or ""
        if download == "direct" and host in MANUAL_HOSTS:
            fail(f"{where}.download", f"'direct', but {host} needs a browser: use 'manual'")
        size = item.get("size")
        if size is not None and (type(size) is not int or size <= 0):
            fail(f"{where}.size", "expected a positive whole number of bytes, or null")
        for key in ("ll", "parameters_m"):
            if item.get(key) is not None and type(item[key]) not in (int, float):
                fail(f"{where}.{key}", "expected a number, or null")
        sha = item.get("sha256")
        if sha is not None and not (
            isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)
        ):
            fail(f"{where}.sha256", "expected 64 lower-case hex digits, or null")
        config = item.get("config")
        if config is not None and (not isinstance(config, str) or Path(config).name != config):
            fail(f"{where}.config", "expected a plain file name, or null")
        try:
            words = shlex.split(item["import_command"])
        except ValueError as e:
            fail(f"{where}.import_command", f"not a shell command line ({e})")
        if words[:3] != ["vocoder", "import", file] or "--out" not in words[3:-1]:
            fail(f"{where}.import_command", f"expected 'vocoder import {file} ... --out DST'")
        if config is not None and not any(
            words[k : k + 2] == ["--config", config] for k in range(3, len(words))
        ):
            fail(f"{where}.import_command", f"expected '--config {config}' in it")
        entries.append(
            PublishedWeights(
                name=name,
                family=item["family"],
                description=item["description"],
                source=item["source"],
                licence=item["licence"],
                page=item["page"],
                urls=tuple(urls),
                file=file,
                download=download,
                import_command=item["import_command"],
                data=item.get("data") or "",
                size=size,
                sha256=sha,
                ll=None if item.get("ll") is None else float(item["ll"]),
                parameters_m=(
                    None if item.get("parameters_m") is None else float(item["parameters_m"])
                ),
                config=config,
                config_source=item.get("config_source"),
                notes=item.get("notes") or "",
            )
        )
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        fail("published", "names must be unique")
    return entries


def get_published(name: str, registry: str | Path | None = None) -> PublishedWeights | None:
    """The published entry called `name`, or None."""
    return next((e for e in load_published(registry) if e.name == name), None)


def list_models(registry: str | Path | None = None) -> list[ModelEntry]:
    """Every model in the registry, in its order."""
    return load_registry(registry)


def get_model(name: str, registry: str | Path | None = None) -> ModelEntry:
    """The entry called `name`; an unknown name is an `InputError` listing the known ones."""
    entries = load_registry(registry)
    for entry in entries:
        if entry.name == name:
            return entry
    known = ", ".join(e.name for e in entries) or "none"
    raise InputError(name, f"not a pretrained model (known: {known})")


def default_model_name(registry: str | Path | None = None) -> str:
    """The name of the model marked default (else the first one)."""
    entries = load_registry(registry)
    if not entries:
        raise ConfigError(f"{registry or registry_path()}: lists no models")
    return next((e.name for e in entries if e.default), entries[0].name)


# ---- locating, verifying and fetching ----


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The download cache: `cache_dir`, else `$VOCODER_CACHE`, else `~/.cache/vocoder`."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("VOCODER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vocoder"


def _shipped_dir(registry: str | Path | None) -> Path:
    return (Path(registry) if registry is not None else registry_path()).parent


def model_location(
    entry: ModelEntry, cache_dir: str | Path | None = None, registry: str | Path | None = None
) -> Location:
    """Where `entry`'s files are now: shipped, cached, remote (downloadable) or missing.

    Judged by presence and size only (no hashing); `resolve_model_path` verifies.
    """
    for place, folder in (
        ("shipped", _shipped_dir(registry)),
        ("cached", cache_root(cache_dir) / entry.name),
    ):
        if all(_present(folder / f.name, f.size) for f in entry.files):
            return place
    if all(entry.file_url(f) for f in entry.files):
        return "remote"
    return "missing"


def _present(path: Path, size: int) -> bool:
    try:
        return path.is_file() and path.stat().st_size == size
    except OSError:
        return False


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: str | Path, expected: ModelFile) -> Path:
    """`path`, after checking its size and sha256 against the registry's; else `InputError`."""
    path = Path(path)
    size = path.stat().st_size
    if size != expected.size:
        raise InputError(
            path,
            f"size {size} bytes, the registry expects {expected.size}: the file is damaged or "
            "not the registered one (delete it; a cached copy is downloaded again)",
        )
    actual = sha256_file(path)
    if actual != expected.sha256:
        raise InputError(
            path,
            f"sha256 {actual} does not match the registry's {expected.sha256}: the file is "
            "damaged or not the registered one (delete it; a cached copy is downloaded again)",
        )
    return path


def resolve_model_path(
    name_or_path: str | Path,
    cache_dir: str | Path | None = None,
    registry: str | Path | None = None,
) -> Path:
    """The `.safetensors` file behind a path or a registry name (its `.json` lies beside it).

    - an existing file passes through unchanged (no checksum: it is the user's own file);
    - a registry name resolves to the shipped files, else the cached download, else it is
      downloaded from its url into the cache (see the module docstring); every file is
      verified against the registry's sha256;
    - anything else is an `InputError` listing the known names.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path)
    if path.exists():  # a folder, say
        raise InputError(path, "is not a file")
    if not name or os.sep in name or "/" in name or path.suffix in (WEIGHTS_SUFFIX, ".json"):
        raise InputError(path, "no such file")
    entries = load_registry(registry)
    entry = next((e for e in entries if e.name == name), None)
    if entry is None:
        known = ", ".join(e.name for e in entries) or "none"
        raise InputError(name, f"no such file, and not a pretrained model (known: {known})")
    shipped = _shipped_dir(registry)
    if all((shipped / f.name).is_file() for f in entry.files):
        for f in entry.files:
            verify_file(shipped / f.name, f)
        return shipped / entry.weights.name
    folder = cache_root(cache_dir) / entry.name
    if all((folder / f.name).is_file() for f in entry.files):
        for f in entry.files:
            verify_file(folder / f.name, f)
        return folder / entry.weights.name
    missing = [f for f in entry.files if not entry.file_url(f)]
    if missing:
        raise InputError(
            entry.name,
            f"{missing[0].name} is not shipped in {shipped} nor cached in {folder}, and the "
            "registry gives no url to download it from",
        )
    download_model(entry, folder)
    return folder / entry.weights.name


def download_model(entry: ModelEntry, folder: Path) -> None:
    """Fetch `entry`'s files into `folder`, all verified before any is moved into place.

    Each file goes to a temporary file inside `folder`; when every one matches its size and
    sha256 they are moved into place with `os.replace`. On any failure the temporary files are
    removed, and `folder` too if this call created it and it is empty.
    """
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    temps: list[tuple[Path, Path]] = []
    try:
        for f in entry.files:
            target = folder / f.name
            if target.is_file():
                with contextlib.suppress(InputError):
                    verify_file(target, f)
                    continue  # already here and good (fetched by an earlier call)
            fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{f.name}.", suffix=".part")
            tmp = Path(tmp_name)
            temps.append((tmp, target))
            with os.fdopen(fd, "wb") as out:
                _fetch(entry.file_url(f), out, f.size)
            verify_file(tmp, f)
        for tmp, target in temps:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
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


def download_published(
    entry: PublishedWeights, folder: str | Path = ".", force: bool = False
) -> Path:
    """Fetch a published file whose host allows plain downloads into `folder`; its path.

    The file goes to a temporary file in `folder`, is checked against the entry's sha256 when
    one is known, then moved into place with `os.replace`; on any failure (Ctrl-C included)
    the temporary file is removed (and `folder`, if this call created it). An existing file
    is an `InputError` unless `force`.
    Google Drive entries (`download == "manual"`) are an `InputError` saying where to get
    the file by hand.
    """
    if entry.download != "direct":
        host = urllib.parse.urlsplit(entry.urls[0]).hostname or "its host"
        config = f" (and {entry.config} from {entry.config_source})" if entry.config else ""
        raise InputError(
            entry.name,
            f"{host} allows no plain download: get it by hand from {entry.urls[0]}, save it "
            f"as {entry.file}{config}, then run: {entry.import_command}",
        )
    folder = Path(folder)
    target = folder / entry.file
    if target.is_dir():
        raise InputError(target, "is a directory")
    if target.exists() and not force:
        raise InputError(target, "already exists; refusing to overwrite it (--force replaces it)")
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{entry.file}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            _fetch(entry.urls[0], out)
        if entry.sha256 is not None:
            actual = sha256_file(tmp)
            if actual != entry.sha256:
                raise InputError(
                    entry.urls[0],
                    f"sha256 {actual} does not match the registry's {entry.sha256}: not the "
                    "published file (nothing was saved)",
                )
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp made it 0600
        if target.exists() and not force:  # appeared while downloading
            raise InputError(target, "already exists; refusing to overwrite it")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
        raise
    return target


__all__ = [
    "ModelEntry",
    "ModelFile",
    "PRETRAINED_DIR",
    "PublishedWeights",
    "cache_root",
    "default_model_name",
    "download_model",
    "download_published",
    "get_model",
    "get_published",
    "list_models",
    "load_published",
    "load_registry",
    "model_location",
    "registry_path",
    "resolve_model_path",
    "sha256_file",
    "verify_file",
]

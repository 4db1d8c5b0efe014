"""Weights the original authors publish elsewhere (the registry's `published` list): what is
known about each, the `vocoder import` line that makes a model of it, and a download helper
for those on a plain HTTPS host.
"""

from __future__ import annotations

import os
import shlex
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vocoder.errors import ConfigError, InputError
from vocoder.files import refuse_existing, sha256_file
from vocoder.pretrained.download import staged_downloads
from vocoder.pretrained.registry import parse_registry, read_registry

Download = Literal["direct", "manual"]
MANUAL_HOSTS = ("drive.google.com", "docs.google.com")
"""Hosts that need a browser (confirmation pages): their files are downloaded by hand."""


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


_PUBLISHED_REQUIRED = (
    "name", "family", "description", "source", "licence", "page", "urls", "file", "download",
    "import_command",
)  # fmt: skip
_PUBLISHED_OPTIONAL = (
    "data", "size", "sha256", "ll", "parameters_m", "config", "config_source", "notes",
)  # fmt: skip


def load_published(path: str | Path | None = None) -> list[PublishedWeights]:
    """The registry's `published` list (default file: `registry_path()`), checked."""
    data, path = read_registry(path)
    models = parse_registry(data, path)
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


def download_published(
    entry: PublishedWeights, folder: str | Path = ".", force: bool = False
) -> Path:
    """Fetch a published file whose host allows plain downloads into `folder`; its path.

    The file goes to a temporary file in `folder`, is checked against the entry's sha256 when
    one is known, then moved into place with `os.replace`; on any failure (Ctrl-C included)
    the temporary file is removed (and the folders this call created). An existing file
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
    if not force:
        refuse_existing([target], "force")
    with staged_downloads(folder) as staging:
        tmp = staging.fetch(entry.urls[0], entry.file)
        if entry.sha256 is not None:
            actual = sha256_file(tmp)
            if actual != entry.sha256:
                raise InputError(
                    entry.urls[0],
                    f"sha256 {actual} does not match the registry's {entry.sha256}: not the "
                    "published file (nothing was saved)",
                )
        if not force:  # it may have appeared while downloading
            refuse_existing([target], "force")
        os.replace(tmp, target)
    return target

"""The registry of shipped and hosted models (the `models` of `pretrained/registry.json`):
reading it, and resolving a model name to its verified files (shipped, cached or downloaded).
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vocoder.errors import ConfigError, InputError
from vocoder.files import sha256_file
from vocoder.pretrained.download import cache_root, staged_downloads


def _shipped_folder() -> Path:
    """`vocoder/shipped` in a wheel install; `pretrained/` of a source tree (editable)."""
    installed = Path(__file__).resolve().parents[1] / "shipped"
    return installed if installed.is_dir() else Path(__file__).resolve().parents[2] / "pretrained"


PRETRAINED_DIR = _shipped_folder()
"""The shipped models' folder in a source checkout or editable install."""

REGISTRY_FILE = "registry.json"
REGISTRY_FORMAT = 1
WEIGHTS_SUFFIX = ".safetensors"

logger = logging.getLogger(__name__)

Location = Literal["shipped", "cached", "remote", "missing", "damaged"]


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


def registry_path() -> Path:
    """`$VOCODER_REGISTRY` if set, else the shipped `registry.json`."""
    env = os.environ.get("VOCODER_REGISTRY")
    return Path(env) if env else PRETRAINED_DIR / REGISTRY_FILE


def read_registry(path: str | Path | None) -> tuple[Any, Path]:
    path = Path(path) if path is not None else registry_path()
    if not path.is_file():
        raise ConfigError(
            f"{path}: no model registry there (VOCODER_REGISTRY names a registry.json; the "
            "package ships one)"
        )
    try:
        return json.loads(path.read_text()), path
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None


def load_registry(path: str | Path | None = None) -> list[ModelEntry]:
    """The entries of a registry file (default: `registry_path()`), checked."""
    return parse_registry(*read_registry(path))


def parse_registry(data: Any, source: Path) -> list[ModelEntry]:
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


# ---- locating and verifying ----


def _shipped_dir(registry: str | Path | None) -> Path:
    return (Path(registry) if registry is not None else registry_path()).parent


def _restore_hint(folder: Path, name: str) -> str:
    """How to put a shipped file back: deleting it does not help, nothing downloads it."""
    if folder == PRETRAINED_DIR:
        return (
            f"shipped, not downloaded: restore it with 'git checkout -- pretrained/{name}' in "
            "a source checkout, or reinstall the package"
        )
    return "shipped beside the registry, not downloaded: put the registered file back"


def _check(entry: ModelEntry, folder: Path, shipped: bool) -> InputError | None:
    """The first of `entry`'s files in `folder` that fails its size or sha256, as an error."""
    for f in entry.files:
        if shipped:
            fix = _restore_hint(folder, f.name)
        else:  # only raised when the model has no url (else it is downloaded again)
            fix = "the registry gives no url to download it again: put the registered file back"
        try:
            verify_file(folder / f.name, f, fix)
        except InputError as e:
            return e
    return None


def _locate(
    entry: ModelEntry, cache_dir: str | Path | None, registry: str | Path | None
) -> tuple[Location, Path, InputError | None]:
    """Where `resolve_model_path` takes `entry` from: the place, its folder, and for a
    damaged copy that cannot be downloaded again the error it raises."""
    shipped = _shipped_dir(registry)
    if all((shipped / f.name).is_file() for f in entry.files):
        error = _check(entry, shipped, shipped=True)
        return ("damaged", shipped, error) if error else ("shipped", shipped, None)
    folder = cache_root(cache_dir) / entry.name
    hosted = all(entry.file_url(f) for f in entry.files)
    if all((folder / f.name).is_file() for f in entry.files):
        error = _check(entry, folder, shipped=False)
        if error is None:
            return "cached", folder, None
        if not hosted:
            return "damaged", folder, error
        # a damaged cached copy of a hosted model is downloaded again on use
    return ("remote" if hosted else "missing"), folder, None


def model_location(
    entry: ModelEntry, cache_dir: str | Path | None = None, registry: str | Path | None = None
) -> Location:
    """Where `entry`'s files are now: shipped, cached, remote (downloaded on use: not cached,
    or a damaged cached copy), missing, or damaged (a shipped copy, or a cached one with no
    url, fails its size or sha256; `resolve_model_path` says which file and the fix).

    Hashes the local files, as `resolve_model_path` does, so the two always agree.
    """
    return _locate(entry, cache_dir, registry)[0]


def verify_file(path: str | Path, expected: ModelFile, fix: str | None = None) -> Path:
    """`path`, after checking its size and sha256 against the registry's; else `InputError`.

    `fix`: what the error tells the user to do, if anything.
    """
    path = Path(path)
    fix = f" ({fix})" if fix else ""
    size = path.stat().st_size
    if size != expected.size:
        raise InputError(
            path,
            f"size {size} bytes, the registry expects {expected.size}: the file is damaged or "
            f"not the registered one{fix}",
        )
    actual = sha256_file(path)
    if actual != expected.sha256:
        raise InputError(
            path,
            f"sha256 {actual} does not match the registry's {expected.sha256}: the file is "
            f"damaged or not the registered one{fix}",
        )
    return path


def names_a_path(value: str) -> bool:
    """Whether `value` is a path, never a registry name: something is there, or it has a
    folder in it, or a model file's suffix."""
    path = Path(value)
    in_folder = os.sep in value or "/" in value
    return path.exists() or in_folder or path.suffix in (WEIGHTS_SUFFIX, ".json")


def resolve_model_path(
    name_or_path: str | Path,
    cache_dir: str | Path | None = None,
    registry: str | Path | None = None,
) -> Path:
    """The `.safetensors` file behind a path or a registry name (its `.json` lies beside it).

    - an existing file passes through unchanged (no checksum: it is the user's own file);
    - a registry name resolves to the shipped files, else the cached download, else it is
      downloaded from its url into the cache (see the module docstring); every file is
      verified against the registry's sha256, and a damaged cached file is downloaded again;
    - anything else is an `InputError` listing the known names.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path)
    if path.exists():  # a folder, say
        raise InputError(path, "is not a file")
    if not name or names_a_path(name):
        raise InputError(path, "no such file")
    entries = load_registry(registry)
    entry = next((e for e in entries if e.name == name), None)
    if entry is None:
        known = ", ".join(e.name for e in entries) or "none"
        raise InputError(name, f"no such file, and not a pretrained model (known: {known})")
    where, folder, error = _locate(entry, cache_dir, registry)
    if error is not None:
        raise error
    if where == "missing":
        missing = next(f for f in entry.files if not entry.file_url(f))
        raise InputError(
            entry.name,
            f"{missing.name} is not shipped in {_shipped_dir(registry)} nor cached in {folder}, "
            "and the registry gives no url to download it from",
        )
    if where == "remote":
        download_model(entry, folder)
    return folder / entry.weights.name


def download_model(entry: ModelEntry, folder: Path) -> None:
    """Fetch `entry`'s files into `folder`, all verified before any is moved into place.

    Each file goes to a temporary file inside `folder`; when every one matches its size and
    sha256 they are moved into place with `os.replace`. On any failure the temporary files are
    removed, and `folder` too if this call created it and it is empty.
    """
    with staged_downloads(folder) as staging:
        moves: list[tuple[Path, Path]] = []
        for f in entry.files:
            target = folder / f.name
            if target.is_file():
                try:
                    verify_file(target, f)
                    continue  # already here and good (fetched by an earlier call)
                except InputError as e:
                    logger.warning("%s; downloading it again", e)
            url = entry.file_url(f)
            tmp = staging.fetch(url, f.name, f.size)
            try:
                verify_file(tmp, f, "nothing was saved")
            except InputError as e:
                raise InputError(url, e.problem) from None
            moves.append((tmp, target))
        for tmp, target in moves:
            os.replace(tmp, target)

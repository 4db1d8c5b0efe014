"""The registry of shipped and hosted models (the `models` of `pretrained/registry.json`):
reading it, and resolving a model name to its verified files (shipped, cached or downloaded).
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vocoder.errors import ConfigError, InputError
from vocoder.pretrained.download import cache_root, sha256_file, staged_downloads

PRETRAINED_DIR = Path(__file__).resolve().parents[2] / "pretrained"
"""The shipped models' folder in a source checkout or editable install."""

REGISTRY_FILE = "registry.json"
REGISTRY_FORMAT = 1
WEIGHTS_SUFFIX = ".safetensors"

Location = Literal["shipped", "cached", "remote", "missing"]


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
    """`$VOCODER_REGISTRY` if set, else `pretrained/registry.json` of the source tree."""
    env = os.environ.get("VOCODER_REGISTRY")
    return Path(env) if env else PRETRAINED_DIR / REGISTRY_FILE


def read_registry(path: str | Path | None) -> tuple[Any, Path]:
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
    with staged_downloads(folder) as staging:
        moves: list[tuple[Path, Path]] = []
        for f in entry.files:
            target = folder / f.name
            if target.is_file():
                with contextlib.suppress(InputError):
                    verify_file(target, f)
                    continue  # already here and good (fetched by an earlier call)
            tmp = staging.fetch(entry.file_url(f), f.name, f.size)
            verify_file(tmp, f)
            moves.append((tmp, target))
        for tmp, target in moves:
            os.replace(tmp, target)

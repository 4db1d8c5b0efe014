"""Reading foreign torch checkpoints without running any code from their pickle.

Some published checkpoints pickle a whole module object (NVIDIA's WaveGlow: `glow.WaveGlow`
holding `glow.WN`, torch's `Conv1d`, `WeightNorm` hooks, ...), which
`torch.load(weights_only=True)` refuses, and unrestricted unpickling would let the file run
any code it names. `load_foreign_checkpoint` reads such files with each known class
(`KNOWN_CLASSES`) replaced by an inert `ModuleRecord` that only stores its class name and
pickled state; every other global is refused before anything is called.

- zip checkpoints (torch >= 1.6) go through `torch.load(weights_only=True)`, with the known
  classes allow-listed as records (`torch.serialization.safe_globals`, `(record, name)` form);
- legacy checkpoints (pre-1.6, not zip: magic number, protocol, system info, the pickle, its
  storage keys, then the raw storages) are read here by a `pickle.Unpickler` whose
  `find_class` returns torch's weights-only allow-list, records, or refuses.

Plain data (state dicts, `{'state_dict': ..., 'config': ...}`) loads unchanged through both.
`module_state_dict` flattens a record into the keys `nn.Module.state_dict` would give.
"""

from __future__ import annotations

import _compat_pickle
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vocoder.errors import InputError, first_line

# Classes a module checkpoint may name; each becomes a `ModuleRecord`.
KNOWN_CLASSES = (
    "glow.WaveGlow",
    "glow.WN",
    "glow.Invertible1x1Conv",
    # NVIDIA's older code, kept in its repository to load old checkpoints (refused on import)
    "glow_old.WaveGlow",
    "glow_old.WN",
    "torch.nn.modules.conv.Conv1d",
    "torch.nn.modules.conv.ConvTranspose1d",
    "torch.nn.modules.container.ModuleList",
    "torch.nn.utils.weight_norm.WeightNorm",
    # modules pickled by torch <= 1.0 hold their backend, rebuilt by calling this function
    "torch.nn.backends.thnn._get_thnn_function_backend",
)

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class ModuleRecord:
    """An unpickled object of a known class: its class name and pickled state, nothing else."""

    class_name = ""

    def __new__(cls, *args: Any) -> ModuleRecord:
        record = object.__new__(cls)
        record.args = args
        record.state = {}
        return record

    def __init__(self, *args: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        if (
            isinstance(state, tuple)
            and len(state) == 2
            and all(isinstance(part, dict | None) for part in state)
        ):  # (dict state, slot state)
            state = {**(state[0] or {}), **(state[1] or {})}
        self.state = dict(state) if isinstance(state, dict) else {"__state__": state}

    def __repr__(self) -> str:
        return f"ModuleRecord({self.class_name})"


_RECORDS: dict[str, type[ModuleRecord]] = {
    name: type(name.rpartition(".")[2], (ModuleRecord,), {"class_name": name})
    for name in KNOWN_CLASSES
}


class _Refused(Exception):
    """A global the checkpoint names that is not allowed (raised before it is imported)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _python3_name(module: str, name: str) -> str:
    """`module.name` as Python 3's pickle resolves it (torch pickles with protocol 2, which
    writes Python 2 names: `subprocess.Popen` is stored as `commands.Popen`)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    return f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}"


def _refusal(path: Path, name: str) -> InputError:
    return InputError(
        path,
        f"refusing to unpickle global {name!r} (not a known checkpoint class); "
        "nothing was executed",
    )


def load_foreign_checkpoint(path: str | Path) -> Any:
    """A torch checkpoint's contents, module objects as `ModuleRecord`s; code never runs.

    `InputError` (one line, naming the file) when the file is missing, empty, truncated, not
    a torch checkpoint, or names a global that is neither plain data nor a known class.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such checkpoint")
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise InputError(path, f"cannot read it ({e.strerror})") from None
    if not head:
        raise InputError(path, "empty file, not a checkpoint")
    if head == b"PK\x03\x04":
        if not zipfile.is_zipfile(path):  # its end (the zip directory) is missing
            raise InputError(path, "not a readable PyTorch checkpoint: a truncated zip archive")
        return _load_zip(path)
    return _load_legacy(path)


def _load_zip(path: Path) -> Any:
    allowed = [(record, name) for name, record in _RECORDS.items()]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _weights_only_error(path, str(e)) from None
    except Exception as e:  # torch raises many kinds for truncated or foreign files
        raise InputError(path, f"not a readable PyTorch checkpoint ({_brief(e)})") from None


def _brief(error: Exception) -> str:
    """The first sentence of an error's first line (torch appends paragraphs of advice)."""
    return re.split(r"\. (?=[A-Z])", first_line(error))[0]


_GLOBAL_PATTERNS = (
    re.compile(r"Unsupported global: GLOBAL (\S+) was not an allowed global"),
    re.compile(r"unsupported GLOBAL (\S+) whose module"),
)


def _weights_only_error(path: Path, message: str) -> InputError:
    """One line from torch's multi-line weights-only error: the global it refused, if any."""
    for pattern in _GLOBAL_PATTERNS:
        match = pattern.search(message)
        if match:
            module, _, name = match.group(1).rpartition(".")
            # torch writes builtins.eval as "eval"
            return _refusal(path, _python3_name(module or "builtins", name))
    detail = message.partition("WeightsUnpickler error:")[2].strip().split("\n")[0]
    detail = detail or first_line(pickle.UnpicklingError(message))
    return InputError(path, f"refusing to unpickle it ({detail}); nothing was executed")


# ---- legacy (pre-1.6) serialization ----


# Left out of torch's weights-only list here: tensors that torch.load validates or builds
# specially afterwards (sparse, nested, quantized, ...), legacy tensor types and CUDA.
_EXOTIC = re.compile(
    r"sparse|nested|qtensor|wrapper_subclass|numpy|meta_tensor|device_tensor|^torch\.cuda\."
    r"|^torch\.\w+Tensor$"
)
# torch before 1.12 named a GPU tensor's storage by its class (`torch.cuda.FloatStorage`):
# so do the legacy files saved from a GPU, NVIDIA's published ones among them. Only its
# dtype is read (the storage is made on the CPU), so it stands for the CPU class.
_CUDA_STORAGE = re.compile(r"^torch\.cuda\.(\w+Storage)$")


def _allowed_globals() -> dict[str, Any]:
    """torch's weights-only allow-list (plain tensors, storages, dtypes, ...) and the records."""
    from torch._weights_only_unpickler import _get_allowed_globals

    known = _get_allowed_globals()
    plain = {k: v for k, v in known.items() if not _EXOTIC.search(k)}
    on_gpu = {
        name: plain[f"torch.{match[1]}"]
        for name in known
        if (match := _CUDA_STORAGE.match(name)) and f"torch.{match[1]}" in plain
    }
    return {**plain, **on_gpu, **_RECORDS}


class _RestrictedUnpickler(pickle.Unpickler):
    """`find_class` returns allow-listed objects or records, and refuses everything else."""

    def __init__(self, file, storages: dict[str, Any] | None = None, limit: int = 0):
        super().__init__(file, encoding="utf-8")
        self.allowed = _allowed_globals()
        self.storages = storages
        self.limit = limit  # no storage holds more bytes than the file

    def find_class(self, module: str, name: str) -> Any:
        full = _python3_name(module, name)
        if full in self.allowed:
            return self.allowed[full]
        raise _Refused(full)

    def persistent_load(self, pid: Any) -> Any:
        if self.storages is None or not isinstance(pid, tuple) or not pid:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        kind = _text(pid[0])
        if kind == "module":  # (module, class, source file, source): the class alone
            if not isinstance(pid[1], type) or not issubclass(pid[1], ModuleRecord):
                raise pickle.UnpicklingError("module persistent id without a known class")
            return pid[1]
        if kind == "storage" and len(pid) == 6:
            return self._storage(*pid[1:])
        raise pickle.UnpicklingError(f"unexpected persistent id of kind {kind!r}")

    def _storage(self, storage_type: Any, key: Any, location: Any, numel: Any, view: Any):
        """A storage of `numel` elements (filled after the pickle is read), or a view of one."""
        dtype = getattr(storage_type, "dtype", None)
        if not isinstance(dtype, torch.dtype) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError("malformed storage record")
        size = torch._utils._element_size(dtype)
        key = _text(key)
        if numel * size > self.limit:
            raise pickle.UnpicklingError(f"storage of {numel * size} bytes, more than the file")
        if key not in self.storages:
            self.storages[key] = torch.storage.TypedStorage(
                wrap_storage=torch.UntypedStorage(numel * size), dtype=dtype, _internal=True
            )
        root = self.storages[key]
        if view is None:
            return root
        view_key, offset, view_numel = view
        begin, end = offset * size, (offset + view_numel) * size
        if not 0 <= begin <= end <= root._untyped_storage.nbytes():
            raise pickle.UnpicklingError("storage view out of bounds")
        return torch.storage.TypedStorage(
            wrap_storage=root._untyped_storage[begin:end], dtype=dtype, _internal=True
        )


def _text(value: Any) -> Any:
    return value.decode("ascii") if isinstance(value, bytes) else value


def _load_legacy(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return _read_legacy(f, path.stat().st_size)
    except _Refused as e:
        raise _refusal(path, e.name) from None
    except _NotTorch:
        if _is_web_page(path):
            raise InputError(
                path, "a web page, not a checkpoint: the download failed (download it again)"
            ) from None
        raise InputError(path, "not a PyTorch checkpoint (no torch.save header)") from None
    except Exception as e:  # a truncated or corrupt file
        raise InputError(
            path, f"not a readable PyTorch checkpoint: truncated or corrupt ({_brief(e)})"
        ) from None


def _is_web_page(path: Path) -> bool:
    """Whether the file is HTML: what a failed download (Google Drive's warning) saves."""
    with open(path, "rb") as f:
        head = f.read(512).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return head.startswith((b"<!doctype html", b"<html"))


class _NotTorch(Exception):
    """The file does not start as `torch.save` files do."""


def _read_legacy(f, limit: int) -> Any:
    """magic number, protocol, system info, the pickle, its storage keys, the storages."""
    try:
        magic = _RestrictedUnpickler(f).load()
    except _Refused:
        raise
    except Exception:  # a text file, a wav, ...
        magic = None
    if magic != _LEGACY_MAGIC:
        raise _NotTorch
    if _RestrictedUnpickler(f).load() != _LEGACY_PROTOCOL:
        raise ValueError("unknown legacy serialization protocol")
    info = _RestrictedUnpickler(f).load()
    if not isinstance(info, dict) or not info.get("little_endian", True):
        raise ValueError("written on a big-endian machine")
    storages: dict[str, Any] = {}
    result = _RestrictedUnpickler(f, storages, limit).load()
    keys = _RestrictedUnpickler(f).load()
    if not isinstance(keys, list):
        raise ValueError("malformed storage list")
    for key in keys:
        storage = storages.get(_text(key))
        if storage is None:
            raise ValueError(f"storage {key!r} is never used")
        (count,) = struct.unpack("<q", _read_exactly(f, 8))
        nbytes = storage._untyped_storage.nbytes()
        if count * torch._utils._element_size(storage.dtype) != nbytes:
            raise ValueError(f"storage {key!r} has the wrong size")
        data = bytearray(_read_exactly(f, nbytes))
        if nbytes:
            target = torch.empty(0, dtype=torch.uint8).set_(storage._untyped_storage)
            target.copy_(torch.frombuffer(data, dtype=torch.uint8))
    return result


def _read_exactly(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise EOFError("truncated file")
    return data


# ---- records ----


def module_state_dict(record: ModuleRecord, source: str | Path = "checkpoint") -> dict[str, Tensor]:
    """A record's parameters and persistent buffers, with dotted keys as `state_dict` gives."""
    out: dict[str, Tensor] = {}
    _collect(record, "", out, source)
    return out


def _collect(record: Any, prefix: str, out: dict[str, Tensor], source: str | Path) -> None:
    if not isinstance(record, ModuleRecord):
        raise InputError(source, f"{prefix or 'the model'} is not a module record")
    state = record.state
    skip = state.get("_non_persistent_buffers_set") or set()
    tensors = [*(state.get("_parameters") or {}).items()]
    tensors += [(k, v) for k, v in (state.get("_buffers") or {}).items() if k not in skip]
    for name, value in tensors:
        if value is None:
            continue
        if not isinstance(value, Tensor):
            raise InputError(source, f"{prefix}{name} is not a tensor")
        out[f"{prefix}{name}"] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            _collect(child, f"{prefix}{name}.", out, source)


__all__ = ["KNOWN_CLASSES", "ModuleRecord", "load_foreign_checkpoint", "module_state_dict"]

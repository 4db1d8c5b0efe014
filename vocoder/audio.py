"""Audio files: load (any format libsndfile reads), inspect, save; mono mix-down, resampling.

Loaded audio is a float32 tensor `[samples]` in [-1, 1]. 16-bit PCM (wav or flac) is read as
int16 and divided by 32768, exactly as the Tacotron 2 / WaveGlow reference pipeline does, so
mels computed from it match reference mels; other encodings are read as float. Every problem
with a file raises `InputError(path, problem)`. Writes are atomic (a temporary file in the same
folder, then `os.replace`) and never replace an existing file unless asked to.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from vocoder.errors import InputError

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".mp3")
"""File name extensions treated as audio when scanning folders."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file's header says, read without decoding the samples."""

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate


def audio_info(path: str | Path) -> AudioInfo:
    """Sample rate, channels, frames and duration of an audio file, without decoding it."""
    path = _existing_file(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise InputError(path, f"not a readable audio file ({_reason(e)})") from None
    _check_complete(path, info.extra_info)
    return AudioInfo(
        sample_rate=int(info.samplerate),
        channels=int(info.channels),
        frames=int(info.frames),
        format=str(info.format),
        subtype=str(info.subtype),
    )


def load_audio(
    path: str | Path, sample_rate: int | None = None, mixdown: bool = True
) -> torch.Tensor:
    """Read an audio file as float32 `[samples]` in [-1, 1].

    `sample_rate`: resample to this rate when the file's differs (None keeps the file's).
    `mixdown`: average the channels of a multi-channel file; when False such a file is an
    error (the caller wanted mono input only).
    """
    path = _existing_file(path)
    try:
        with sf.SoundFile(str(path)) as f:
            _check_complete(path, f.extra_info)
            file_rate, channels, subtype = f.samplerate, f.channels, f.subtype
            # int16 / 32768 is what the reference pipeline feeds its STFT.
            dtype = "int16" if subtype == "PCM_16" else "float32"
            data = f.read(dtype=dtype, always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as e:
        raise InputError(path, f"not a readable audio file ({_reason(e)})") from None
    if data.shape[0] == 0:
        raise InputError(path, "empty audio (0 samples)")
    if channels > 1 and not mixdown:
        raise InputError(path, f"has {channels} channels; expected mono (or mix it down)")
    if dtype == "int16":
        audio = torch.from_numpy(data.astype(np.float32) / 32768.0)
    else:
        audio = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        if not torch.isfinite(audio).all():
            raise InputError(path, "contains NaN or infinite samples")
    audio = audio.mean(dim=1) if channels > 1 else audio[:, 0].contiguous()
    if sample_rate is not None and sample_rate != file_rate:
        audio = resample(audio, file_rate, sample_rate)
    return audio


def resample(audio: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """Band-limited resampling of `[..., samples]` (torchaudio's sinc interpolation)."""
    if orig_rate == new_rate:
        return audio
    return torchaudio.functional.resample(audio, orig_rate, new_rate)


def save_audio(
    path: str | Path,
    audio: torch.Tensor | np.ndarray,
    sample_rate: int,
    subtype: str = "PCM_16",
    overwrite: bool = False,
) -> Path:
    """Write `[samples]` (or `[channels, samples]`) audio atomically; returns the path.

    The format follows the extension (.wav, .flac, .ogg). `subtype` "PCM_16" clips to [-1, 1]
    and stores round(x * 32768), so audio read by `load_audio` writes back bit-exactly;
    "FLOAT" stores float32 unchanged. Refuses to replace an existing file unless `overwrite`.
    """
    path = Path(path)
    data = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if data.ndim == 2:
        data = data.T  # soundfile wants [samples, channels]
    elif data.ndim != 1:
        raise InputError(path, f"expected audio [samples] or [channels, samples], got {data.shape}")
    if data.shape[0] == 0:
        raise InputError(path, "refusing to write empty audio (0 samples)")
    data = data.astype(np.float32, copy=False)
    if not np.isfinite(data).all():
        raise InputError(path, "audio contains NaN or infinite samples")
    if subtype == "PCM_16":
        data = np.clip(np.round(data.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    elif subtype.startswith("PCM"):
        data = np.clip(data, -1.0, 1.0)
    if not sf.check_format(_format_of(path), subtype):
        raise InputError(path, f"cannot store subtype {subtype} in a {path.suffix} file")
    with atomic_output(path, overwrite=overwrite) as tmp:
        sf.write(str(tmp), data, int(sample_rate), subtype=subtype, format=_format_of(path))
    return path


@contextlib.contextmanager
def atomic_output(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success move it onto `path` atomically.

    Raises `InputError` up front when `path` exists and `overwrite` is False. On an
    exception (or a kill) the destination is untouched and the temporary file removed.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError(path, "already exists; refusing to overwrite it")
    if path.is_dir():
        raise InputError(path, "is a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():  # mkstemp creates 0600; give the result the usual umask permissions
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _format_of(path: Path) -> str:
    formats = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}
    try:
        return formats[path.suffix.lower()]
    except KeyError:
        raise InputError(
            path, f"unknown audio extension {path.suffix!r}; use one of {', '.join(formats)}"
        ) from None


# libsndfile reports a WAV whose data chunk is shorter than its header says as
# "data : <declared> (should be <actual>)" and then reads what is there.
_DATA_SIZE = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)
# Streaming writers (pipes) leave these placeholder sizes in the header: not truncation.
_UNKNOWN_SIZES = {0, 0xFFFFFFFF, 0x7FFFFFFF, 0x7FFFF000}


def _check_complete(path: Path, extra_info: str) -> None:
    match = _DATA_SIZE.search(extra_info or "")
    if match:
        declared, actual = int(match.group(1)), int(match.group(2))
        if declared > actual and declared not in _UNKNOWN_SIZES:
            raise InputError(
                path, f"truncated file: header declares {declared} data bytes, {actual} present"
            )


def _existing_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if not path.is_file():
        raise InputError(path, "not a file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    return path


def _reason(error: Exception) -> str:
    text = str(error)
    # libsndfile messages start with "Error opening '<path>': "; the path is said already.
    if ": " in text and text.startswith("Error opening"):
        text = text.split(": ", 1)[1]
    if text.startswith("File does not exist"):
        # What libsndfile says of an existing file whose format it cannot recognise (e.g. a
        # text file named .mp3); the path was checked to exist before opening it.
        return "unrecognised format or corrupt data"
    return text.strip().rstrip(".") or "decoding failed"

"""Audio files: load (any format libsndfile reads), inspect, save; mono mix-down, resampling.

Loaded audio is a float32 tensor `[samples]` in [-1, 1]. 16-bit PCM (wav or flac) is read as
int16 and divided by 32768, exactly as the Tacotron 2 / WaveGlow reference pipeline does, so
mels computed from it match reference mels; other encodings are read as float. Every problem
with a file raises `InputError(path, problem)`. A file whose header leaves its length open (a
streamed FLAC, total samples 0) is read by decoding it to the end. Writes are atomic (see
`vocoder.files.atomic_output`) and never replace an existing file unless asked to.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from vocoder.errors import InputError
from vocoder.files import atomic_output

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

    def changes_for(self, sample_rate: int) -> str:
        """What `load_audio(path, sample_rate)` does to this file, in words ("" if nothing):
        "2 channels mixed down to mono, resampled 44100 -> 22050 Hz"."""
        changes = []
        if self.channels > 1:
            changes.append(f"{self.channels} channels mixed down to mono")
        if self.sample_rate != sample_rate:
            changes.append(f"resampled {self.sample_rate} -> {sample_rate} Hz")
        return ", ".join(changes)


def audio_info(path: str | Path) -> AudioInfo:
    """Sample rate, channels, frames and duration of an audio file, without decoding it."""
    path = _existing_file(path)
    with open_audio(path) as f:
        _check_complete(path, f.extra_info)
        frames = int(f.frames)
        if frames >= _UNKNOWN_LENGTH:  # a streamed file: its length is known by decoding only
            frames = _read_blocks(f, "float32").shape[0]
        return AudioInfo(
            sample_rate=int(f.samplerate),
            channels=int(f.channels),
            frames=frames,
            format=str(f.format),
            subtype=str(f.subtype),
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
    with open_audio(path) as f:
        _check_complete(path, f.extra_info)
        file_rate, channels, subtype = f.samplerate, f.channels, f.subtype
        # int16 / 32768 is what the reference pipeline feeds its STFT.
        dtype = "int16" if subtype == "PCM_16" else "float32"
        if f.frames >= _UNKNOWN_LENGTH:
            data = _read_blocks(f, dtype)
        else:
            data = f.read(dtype=dtype, always_2d=True)
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


# 16-bit PCM stores round(x * 32768) in [-32768, 32767]: the levels it holds exactly
PCM16_MAX = 32767 / 32768


def pcm16_clipped(audio: torch.Tensor) -> torch.Tensor:
    """Where `audio` (in [-1, 1] full scale) lies beyond what 16-bit PCM stores (a mask)."""
    return (audio >= 32767.5 / 32768) | (audio < -32768.5 / 32768)


# The software tag (a WAV's ISFT, a FLAC's or Ogg's comment) of the audio this toolkit
# synthesizes: how a rerun tells its own earlier outputs from recordings beside them.
SYNTHESIZED_TAG = "vocoder synthesis"


def save_audio(
    path: str | Path,
    audio: torch.Tensor | np.ndarray,
    sample_rate: int,
    subtype: str = "PCM_16",
    overwrite: bool = False,
    synthesized: bool = False,
) -> Path:
    """Write `[samples]` (or `[channels, samples]`, mono or stereo) audio atomically; returns
    the path.

    The format follows the extension (.wav, .flac, .ogg). `subtype` "PCM_16" clips to [-1, 1]
    and stores round(x * 32768), so audio read by `load_audio` writes back bit-exactly;
    "FLOAT" stores float32 unchanged. Refuses to replace an existing file unless `overwrite`.
    `synthesized`: tag the file as this toolkit's synthesis (`is_synthesized`).
    """
    path = Path(path)
    data = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if data.ndim == 2 and (data.shape[0] > 2 or 0 < data.shape[1] < data.shape[0]):
        # [samples, channels] (soundfile's order) or a batch of utterances would be written
        # as one file of thousands of channels, or of one channel an utterance
        raise InputError(
            path,
            f"expected audio [samples] or [channels, samples] of 1 or 2 channels, got "
            f"{tuple(data.shape)}: transpose [samples, channels] audio; save a batch's "
            "utterances one by one",
        )
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
    # Encoded in memory, then written by Python: a failed write keeps its errno (a full disk
    # says so), where libsndfile reports any failed write as "System error."
    encoded = io.BytesIO()
    channels = 1 if data.ndim == 1 else data.shape[1]
    with sf.SoundFile(
        encoded, "w", int(sample_rate), channels, subtype=subtype, format=_format_of(path)
    ) as f:
        if synthesized:
            f.software = SYNTHESIZED_TAG
        f.write(data)
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(encoded.getbuffer())
    return path


def is_synthesized(path: str | Path) -> bool:
    """Whether `path` is audio that `save_audio(..., synthesized=True)` wrote (False for a
    file that cannot be read as audio)."""
    try:
        with open_audio(Path(path)) as f:
            return (f.software or "").startswith(SYNTHESIZED_TAG)
    except InputError:
        return False


# libsndfile's frame count of a file whose header leaves the length open (a FLAC streamed
# with total samples 0): SF_COUNT_MAX, which no real file reaches.
_UNKNOWN_LENGTH = 2**62
_BLOCK_FRAMES = 1 << 16


def _read_blocks(f: sf.SoundFile, dtype: str) -> np.ndarray:
    """Every frame of an open file, read block by block until the end of the stream.

    soundfile's `read` seeks after each block to keep its position, which libFLAC refuses
    in a stream of unknown length, so the blocks come from libsndfile's `sf_readf_*` itself.
    """
    ctype = {"int16": "short", "float32": "float"}[dtype]
    readf = getattr(sf._snd, f"sf_readf_{ctype}")
    blocks = []
    while True:
        block = np.empty((_BLOCK_FRAMES, f.channels), dtype=dtype)
        count = readf(f._file, sf._ffi.cast(f"{ctype} *", block.ctypes.data), _BLOCK_FRAMES)
        if count <= 0:
            break
        blocks.append(block[:count])
    if not blocks:
        return np.zeros((0, f.channels), dtype=dtype)
    return np.concatenate(blocks)


@contextlib.contextmanager
def open_audio(path: Path) -> Iterator[sf.SoundFile]:
    """`path` open for reading as audio; a failure to open or decode it is an `InputError`.

    Opened by Python, not by libsndfile from its name: soundfile cannot encode a name that
    is not valid UTF-8, and libsndfile reports a denied permission as "System error".
    """
    try:
        with open(path, "rb") as raw, sf.SoundFile(raw) as f:
            yield f
    except (sf.LibsndfileError, RuntimeError) as e:
        raise InputError(path, f"not a readable audio file ({_reason(e)})") from None
    except OSError as e:
        raise InputError(path, f"cannot read this file ({_strerror(e)})") from None


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
    try:  # a file in a folder that cannot be searched: exists() raises, as stat() does
        if not path.exists():
            raise InputError(path, "no such file")
        if not path.is_file():
            raise InputError(path, "not a file")
        size = path.stat().st_size
    except OSError as e:
        raise InputError(path, f"cannot read this file ({_strerror(e)})") from None
    if size == 0:
        raise InputError(path, "empty file (0 bytes)")
    return path


def _strerror(error: OSError) -> str:
    """ "permission denied": an `OSError`'s reason, lower-cased to follow a colon."""
    text = error.strerror or str(error)
    return text[:1].lower() + text[1:]


def _reason(error: Exception) -> str:
    # libsndfile's own message: soundfile's str() starts with "Error opening <file>: ",
    # and the file is said already
    text = getattr(error, "error_string", None) or str(error)
    if text.startswith(("File does not exist", "Format not recognised")):
        # libsndfile's words for a file whose format it cannot recognise (e.g. a text file
        # named .mp3); the path was checked to exist before opening it.
        return "unrecognised format or corrupt data"
    return text.strip().rstrip(".") or "decoding failed"

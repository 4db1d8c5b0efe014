"""Mel files: the on-disk layout, loading, saving and conversion from other TTS conventions.

Layout. A `.npy` file holds a float32 natural-log mel `[n_mels, frames]` (the layout this
toolkit writes). Also accepted on load: `[frames, n_mels]` when exactly one axis equals
`n_mels` (when both do, `[n_mels, frames]` is assumed), and a leading batch axis of 1
(`[1, n_mels, frames]` or `[1, frames, n_mels]`). A `.pt` file holds a tensor in the same
layouts, or a dict whose "mel" key holds one.

Conventions (`mel_format`), each converted to the natural log of the mel magnitude:

- "ln": natural log, as the Tacotron 2 / WaveGlow / WaveFlow pipeline writes (identity).
- "log10": base-10 log: `ln = x * ln(10)`.
- "db-normalized": Tacotron-style normalized dB (Rayhane-mamah's Tacotron 2, Coqui TTS;
  parameters in `DbNormalization`): x in [0, max_abs_value] (default [0, 1]) is first mapped
  to [0, 1] by `x / max_abs_value`, or with `symmetric=True` x in [-max_abs_value,
  max_abs_value] (default 4) by `(x + max_abs_value) / (2 * max_abs_value)`; then
  `S_db = x * (-min_level_db) + min_level_db + ref_level_db` and `mel = 10 ** (S_db / 20)`,
  so `ln = S_db * ln(10) / 20`.
- "meanvar": mean-variance normalized (ParallelWaveGAN, ESPnet's GlobalMVN):
  `log_mel = x * scale + mean` per bin, with the statistics from a `.npy` `[2, n_mels]` (row
  0 mean, row 1 scale, as ParallelWaveGAN's `stats.npy`), a `.npz` with "mean" and "scale"
  arrays, or ESPnet's `feats_stats.npz` ("count", "sum", "sum_square"). `stats_log_base`
  says which log those statistics describe: "log10" (both toolkits' default for TTS) or
  "ln".

Conversions are exact inverses of those formulas, then clamped at ln(1e-5), the floor of
this toolkit's convention (ParallelWaveGAN and ESPnet floor at 1e-10, which would read as
-23). Values that the source pipeline clipped stay at the corresponding floor. A conversion
changes the scale of the numbers, not the mel bands: ParallelWaveGAN's and ESPnet's default
80-7600 Hz mels need a model trained on those bands (`features.fmin`, `features.fmax`).
Every problem raises `InputError` naming the file.
"""

from __future__ import annotations

import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from vocoder.errors import InputError, Remedy, remedy, with_remedies
from vocoder.files import atomic_output, load_torch_file

MelFormat = Literal["ln", "log10", "db-normalized", "meanvar"]
log = logging.getLogger(__name__)

MEL_FORMATS: tuple[str, ...] = ("ln", "log10", "db-normalized", "meanvar")
LN10 = math.log(10.0)
LN_FLOOR = math.log(1e-5)  # the clamp of the tacotron2 / hifigan conventions: -11.513
STATS_REMEDY = remedy(stats="FILE")  # meanvar mels need their statistics
# below this many frames a stretch of a natural-log mel may span too little to be told from
# log10 or a symmetric dB-normalized mel by its spread (1 in 20 chunks of 20 LJ Speech frames
# was called log10)
SPREAD_FRAMES = 48


# the mel files read and written: numpy arrays, or tensors saved by torch.save
MEL_SUFFIXES = (".npy", ".pt")


@dataclass(frozen=True)
class DbNormalization:
    """Parameters of a normalized-dB mel (Tacotron style: Rayhane-mamah, Coqui TTS).

    `min_level_db` (default -100) and `ref_level_db` (default 20) as in those recipes;
    `symmetric` selects the [-max_abs_value, max_abs_value] variant instead of
    [0, max_abs_value]; `max_abs_value` defaults to 4 when symmetric, else 1.
    """

    min_level_db: float = -100.0
    ref_level_db: float = 20.0
    symmetric: bool = False
    max_abs_value: float | None = None

    @property
    def top(self) -> float:
        if self.max_abs_value is not None:
            return self.max_abs_value
        return 4.0 if self.symmetric else 1.0

    @classmethod
    def parse(cls, spec: str, source: str = "db_normalization") -> DbNormalization:
        """From `"symmetric=true,max_abs_value=4,ref_level_db=20"` (any of the fields)."""
        values: dict[str, object] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep or key not in cls.__dataclass_fields__:
                fields = ", ".join(cls.__dataclass_fields__)
                raise InputError(source, f"{item!r} is not KEY=VALUE with KEY one of {fields}")
            text = text.strip().lower()
            if key == "symmetric":
                if text not in ("true", "false"):
                    raise InputError(source, f"symmetric is true or false, got {text!r}")
                values[key] = text == "true"
                continue
            try:
                values[key] = float(text)
            except ValueError:
                raise InputError(source, f"{key} is a number, got {text!r}") from None
            if not math.isfinite(values[key]):
                raise InputError(source, f"{key} must be finite, got {text!r}")
        db = cls(**values)
        if db.min_level_db >= 0 or db.top <= 0:
            raise InputError(source, "min_level_db must be negative and max_abs_value positive")
        return db

    def to_ln(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized dB -> natural-log mel."""
        if self.symmetric:
            x = (x + self.top) / (2 * self.top)
        else:
            x = x / self.top
        s_db = x * (-self.min_level_db) + self.min_level_db + self.ref_level_db
        return s_db * (LN10 / 20.0)

    def from_ln(self, mel: torch.Tensor) -> torch.Tensor:
        """Natural-log mel -> normalized dB (unclipped); the inverse of `to_ln`."""
        s_db = mel * (20.0 / LN10)
        x = (s_db - self.ref_level_db - self.min_level_db) / (-self.min_level_db)
        return x * (2 * self.top) - self.top if self.symmetric else x * self.top


@dataclass(frozen=True)
class MeanVarStats:
    """Per-bin statistics of a mean-variance normalized log mel: `log_mel = x * scale + mean`."""

    mean: torch.Tensor  # [n_mels]
    scale: torch.Tensor  # [n_mels]
    log_base: Literal["log10", "ln"] = "log10"

    def to_ln(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized mel `[n_mels, frames]` -> natural-log mel."""
        log_mel = x * self.scale[:, None] + self.mean[:, None]
        return log_mel * LN10 if self.log_base == "log10" else log_mel

    def from_ln(self, mel: torch.Tensor) -> torch.Tensor:
        """Natural-log mel -> normalized mel; the inverse of `to_ln`."""
        log_mel = mel / LN10 if self.log_base == "log10" else mel
        return (log_mel - self.mean[:, None]) / self.scale[:, None]


def load_stats(path: str | Path, log_base: Literal["log10", "ln"] = "log10") -> MeanVarStats:
    """Read mean/scale statistics: `.npy` `[2, n_mels]`, `.npz` with "mean" and "scale",
    ESPnet's `.npz` with "count", "sum" and "sum_square" (its GlobalMVN's mean and std), or
    Kaldi's CMVN statistics as a `.npy` `[2, n_mels + 1]` (sums and sums of squares, the
    frame count last in the first row, 0 in the second)."""
    path = Path(path)
    if log_base not in ("log10", "ln"):
        raise InputError(path, f"stats log base must be 'log10' or 'ln', got {log_base!r}")
    if not path.is_file():
        raise InputError(path, "no such stats file")
    if path.suffix.lower() in (".h5", ".hdf5"):
        raise InputError(
            path,
            "an HDF5 file (ParallelWaveGAN's stats.h5) is not read: save its mean and scale "
            "as a .npy [2, n_mels] (with h5py: np.save(path, [f['mean'], f['scale']]))",
        )
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                if {"count", "sum", "sum_square"} <= set(data.files):
                    mean, scale = _espnet_mean_std(data, path)
                elif "mean" in data and "scale" in data:
                    mean, scale = np.asarray(data["mean"]), np.asarray(data["scale"])
                else:
                    raise InputError(
                        path,
                        "expected keys 'mean' and 'scale' (or ESPnet's 'count', 'sum', "
                        f"'sum_square'), got {data.files}",
                    )
        else:
            if data.ndim != 2 or data.shape[0] != 2:
                raise InputError(path, f"expected [2, n_mels] (mean, scale), got {data.shape}")
            if data[1, -1] == 0 and data[0, -1] >= 1:  # Kaldi's CMVN: sums, then the count
                mean, scale = _mean_std(data[0, -1], data[0, :-1], data[1, :-1], path)
            else:
                mean, scale = data[0], data[1]
    except ValueError as e:
        if "allow_pickle" not in str(e):
            raise InputError(path, f"not a readable stats file ({e})") from None
        raise InputError(
            path,
            "holds Python objects (a pickled dict, as Mozilla TTS's scale_stats.npy), never "
            "unpickled: save its mel mean and std as a .npz with keys 'mean' and 'scale'",
        ) from None
    except (OSError, EOFError) as e:
        raise InputError(path, f"not a readable stats file ({e})") from None
    mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
    scale = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
    if mean.shape != scale.shape:
        raise InputError(path, f"mean {tuple(mean.shape)} and scale {tuple(scale.shape)} differ")
    if not (torch.isfinite(mean).all() and torch.isfinite(scale).all()):
        raise InputError(path, "statistics contain NaN or infinite values")
    return MeanVarStats(mean=mean, scale=scale, log_base=log_base)


def _espnet_mean_std(data, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """ESPnet's GlobalMVN statistics (`count`, `sum`, `sum_square`) as mean and std."""
    count = np.asarray(data["count"], dtype=np.float64).reshape(-1)[0]
    return _mean_std(count, data["sum"], data["sum_square"], path)


def _mean_std(count, sums, squares, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """mean = sum / count, std = sqrt(max(sum_sq / count - mean², 1e-20)), as ESPnet's
    GlobalMVN and Kaldi's CMVN take them."""
    count = float(count)
    if not count > 0:
        raise InputError(path, f"count {count:g}: statistics of no frames")
    mean = np.asarray(sums, dtype=np.float64) / count
    variance = np.asarray(squares, dtype=np.float64) / count - mean**2
    return mean, np.sqrt(np.maximum(variance, 1e-20))


def convert_mel(
    mel: torch.Tensor | np.ndarray,
    mel_format: str,
    stats: MeanVarStats | str | Path | None = None,
    *,
    db: DbNormalization | None = None,
    stats_log_base: Literal["log10", "ln"] = "log10",
) -> torch.Tensor:
    """Convert a `[n_mels, frames]` mel in `mel_format` to the natural-log convention.

    `stats` (a `MeanVarStats` or a stats file) is required for "meanvar"; `db` sets the
    normalized-dB parameters (default `DbNormalization()`); `stats_log_base` applies when
    `stats` is a file path.
    """
    mel = torch.as_tensor(mel).float()
    if mel_format == "ln":
        return mel
    if mel_format == "log10":
        return (mel * LN10).clamp(min=LN_FLOOR)
    if mel_format == "db-normalized":
        return (db or DbNormalization()).to_ln(mel).clamp(min=LN_FLOOR)
    if mel_format == "meanvar":
        if stats is None:
            raise InputError("mel", "mel format 'meanvar' needs statistics", [STATS_REMEDY])
        if not isinstance(stats, MeanVarStats):
            stats = load_stats(stats, stats_log_base)
        if stats.mean.numel() != mel.shape[0]:
            raise InputError(
                "stats", f"statistics have {stats.mean.numel()} bins, the mel {mel.shape[0]}"
            )
        return stats.to_ln(mel).clamp(min=LN_FLOOR)
    raise InputError("mel", f"unknown mel format {mel_format!r}; known: {', '.join(MEL_FORMATS)}")


def load_mel(
    path: str | Path,
    n_mels: int = 80,
    mel_format: str = "ln",
    stats: MeanVarStats | str | Path | None = None,
    *,
    db: DbNormalization | None = None,
    stats_log_base: Literal["log10", "ln"] = "log10",
) -> torch.Tensor:
    """Read a mel file (see the module docstring) as a float32 natural-log `[n_mels, frames]`."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if not path.is_file():
        raise InputError(path, "not a file")
    if mel_format not in MEL_FORMATS:
        known = ", ".join(MEL_FORMATS)
        raise InputError(path, f"unknown mel format {mel_format!r}; known: {known}")
    if mel_format == "meanvar" and stats is None:
        raise InputError(path, "mel format 'meanvar' needs statistics", [STATS_REMEDY])
    raw = _read_array(path)
    mel = _to_canonical_layout(path, raw, n_mels)
    if not torch.isfinite(mel).all():
        bad = int((~torch.isfinite(mel)).sum())
        raise InputError(path, f"contains {bad} NaN or infinite values")
    try:
        return convert_mel(mel, mel_format, stats, db=db, stats_log_base=stats_log_base)
    except InputError as e:
        if e.source in ("mel", "stats"):
            raise InputError(path, e.problem, e.remedies) from None
        raise


def save_mel(path: str | Path, mel: torch.Tensor | np.ndarray, overwrite: bool = False) -> Path:
    """Write a `[n_mels, frames]` mel atomically as float32 (`.npy`, or a tensor in `.pt`)."""
    path = Path(path)
    array = mel.detach().cpu().numpy() if isinstance(mel, torch.Tensor) else np.asarray(mel)
    if array.ndim != 2 or array.shape[1] == 0:
        raise InputError(path, f"expected a mel [n_mels, frames], got shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    suffix = path.suffix.lower()
    if suffix not in MEL_SUFFIXES:
        raise InputError(path, "mel files end in .npy or .pt")
    with atomic_output(path, overwrite=overwrite) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as f:
                np.save(f, array, allow_pickle=False)
        else:
            torch.save(torch.from_numpy(array), tmp)
    return path


@dataclass(frozen=True)
class MelRangeWarning:
    """Why a mel does not look like a natural-log mel; `remedy`: the reading that would fit."""

    problem: str
    remedy: Remedy | None = None

    def __str__(self) -> str:
        return with_remedies(self.problem, [self.remedy] if self.remedy else [])


def check_mel_range(mel: torch.Tensor) -> MelRangeWarning | None:
    """A warning naming the likely convention when `mel` does not look like a natural-log mel.

    A natural-log mel of audio in [-1, 1] lies in about [-11.6, 3]: its floor is
    ln(1e-5) = -11.51 and speech peaks near 2. Returns None when the range fits. A mel of
    fewer than `SPREAD_FRAMES` frames (a streaming chunk) is not judged by its spread.
    """
    mel = mel.detach().float()
    if mel.numel() == 0:
        return MelRangeWarning("the mel is empty")
    if not torch.isfinite(mel).all():
        return MelRangeWarning("the mel contains NaN or infinite values")
    lo, hi = float(mel.min()), float(mel.max())
    mean = float(mel.mean())
    std = float(mel.std()) if mel.numel() > 1 else 0.0
    stats = f"(min {lo:.2f}, max {hi:.2f}, mean {mean:.2f})"
    floored = float((mel <= LN_FLOOR + 1e-3).float().mean())
    if floored > 0.5:  # what a mel read in a wrong --mel-format is clamped to
        return MelRangeWarning(
            f"{100 * floored:.0f} % of the mel lies at the floor ln(1e-5) {stats}: it will "
            "sound near-silent (a mel converted from a convention it was not in lands there)"
        )
    if lo >= 0.0 and hi <= 1.0:
        return MelRangeWarning(
            f"mel values all lie in [0, 1] {stats}: looks dB-normalized (Tacotron / Coqui style)",
            remedy(mel_format="db-normalized"),
        )
    if lo >= 0.0 and 3.0 < hi <= 4.05 and mean > 0.5:  # a linear mel's cells are mostly ~0
        return MelRangeWarning(
            f"mel values all lie in [0, 4] {stats}: looks dB-normalized to [0, 4] (Coqui "
            "max_norm 4)",
            remedy(mel_format="db-normalized", db_normalization="max_abs_value=4"),
        )
    if lo >= 0.0 or hi > 8.0:
        # A log mel goes negative wherever the audio is quiet; a linear one never does.
        return MelRangeWarning(
            f"mel values {stats} do not fit a log mel (about [-11.6, 3]): looks like linear "
            "magnitude/power, not log; take the natural log (clamped at 1e-5) first"
        )
    symmetric = MelRangeWarning(
        f"mel lies in [-4, 4] {stats}: looks symmetric dB-normalized",
        remedy(mel_format="db-normalized", db_normalization="symmetric=true"),
    )
    if abs(lo + 4.0) < 1e-3 and hi <= 4.05:  # clipped at -4: Coqui's and Rayhane's default
        return symmetric
    if abs(mean) < 1.0 and 0.5 < std < 1.6 and lo < 0.0:
        return MelRangeWarning(
            f"mel has mean {mean:.2f} and std {std:.2f}: looks mean-variance normalized",
            remedy(mel_format="meanvar", stats="FILE"),
        )
    # log10 peaks below about 1 and spans about 5 (clamped at 1e-5) to 7 (at the quietest
    # cell of digital silence); a natural-log mel spans 9.6 or more. ParallelWaveGAN's
    # clamp of 1e-10 gives a floor of exactly -10.
    if -5.2 <= lo <= -4.5 and hi <= 1.6:
        return MelRangeWarning(
            f"mel floor {lo:.2f} is near log10(1e-5) = -5 {stats}: looks like log10",
            remedy(mel_format="log10"),
        )
    # a spread of values is judged on SPREAD_FRAMES frames or more: a few quiet or loud
    # frames of a natural-log mel span little
    spread = mel.shape[-1] >= SPREAD_FRAMES
    if hi <= 1.6 and ((spread and hi - lo < 7.5) or abs(lo + 10.0) < 1e-3):
        return MelRangeWarning(
            f"mel {stats} peaks below 1.6 and spans {hi - lo:.1f}: looks like log10",
            remedy(mel_format="log10"),
        )
    if spread and -6.0 <= lo < -3.0 and 1.6 < hi <= 4.05 and mean > -2.6:  # unclipped symm.
        return symmetric
    if lo < LN_FLOOR - 0.5:
        return MelRangeWarning(
            f"mel minimum {lo:.2f} is below ln(1e-5) = {LN_FLOOR:.2f} {stats}: probably a log "
            "power mel or a different clamp; the vocoder expects ln(clamp(magnitude, 1e-5))"
        )
    if hi > 4.5:
        return MelRangeWarning(
            f"mel maximum {hi:.2f} is above a natural-log mel's usual range {stats}"
        )
    return None


# A log mel is never whole numbers; integers are audio samples, token ids or quantized features.
_INTEGER_MEL = "holds integers ({}); a mel is floating point"


def _as_float32(path: Path, mel: np.ndarray | torch.Tensor) -> torch.Tensor:
    """`mel` as a float32 tensor; `InputError` for finite values beyond float32's range
    (they would turn infinite, then be called so)."""
    if isinstance(mel, np.ndarray):
        with np.errstate(over="ignore"):
            converted = torch.from_numpy(np.asarray(mel, dtype=np.float32))
        beyond = np.isinf(converted.numpy()) & np.isfinite(mel)
        largest = float(np.abs(mel[beyond]).max()) if beyond.any() else 0.0
    else:
        converted = mel.float()
        beyond = (torch.isinf(converted) & torch.isfinite(mel)).numpy()
        largest = float(mel[torch.from_numpy(beyond)].abs().max()) if beyond.any() else 0.0
    if beyond.any():
        raise InputError(
            path,
            f"holds {int(beyond.sum())} value(s) beyond float32's range (largest "
            f"{largest:.3g}); a log mel's values are small",
        )
    return converted


def _read_array(path: Path) -> torch.Tensor:
    suffix = path.suffix.lower()
    if suffix in MEL_SUFFIXES and path.is_file() and path.stat().st_size == 0:
        raise InputError(path, "empty file (0 bytes)")
    try:
        if suffix == ".npy":
            with path.open("rb") as f:
                magic = f.read(6)
            # numpy takes anything without its magic for a pickle and says so, wrongly here
            if magic != b"\x93NUMPY" and not zipfile.is_zipfile(path):
                raise InputError(path, "not a .npy file (no NumPy header)")
            try:
                array = np.load(path, allow_pickle=False)
            except ValueError as e:  # numpy's words would suggest allow_pickle
                if "allow_pickle" not in str(e):
                    raise
                problem = "holds Python objects, not numbers (never unpickled)"
                raise InputError(path, problem) from None
            if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number):
                raise InputError(path, "does not hold a numeric array")
            if np.iscomplexobj(array):  # a complex STFT, not a mel: never drop the phase quietly
                raise InputError(path, f"holds complex numbers ({array.dtype}); expected real")
            if not np.issubdtype(array.dtype, np.floating):
                raise InputError(path, _INTEGER_MEL.format(array.dtype))
            return _as_float32(path, array)
        if suffix == ".pt":
            data = load_torch_file(path, "mel file")
            if isinstance(data, dict):
                if "mel" not in data:
                    raise InputError(path, f"dict without a 'mel' key (keys: {sorted(data)})")
                data = data["mel"]
            if isinstance(data, np.ndarray):
                data = torch.from_numpy(data)
            if not isinstance(data, torch.Tensor):
                raise InputError(path, f"expected a tensor, got {type(data).__name__}")
            if data.is_complex():
                raise InputError(path, f"holds complex numbers ({data.dtype}); expected real")
            if not data.is_floating_point():
                raise InputError(path, _INTEGER_MEL.format(data.dtype))
            return _as_float32(path, data.detach())
    except InputError:
        raise
    except Exception as e:  # numpy and torch raise many kinds on corrupt files
        raise InputError(path, f"not a readable mel file ({type(e).__name__}: {e})") from None
    raise InputError(path, f"unknown mel file type {path.suffix!r}; use .npy or .pt")


def _to_canonical_layout(path: Path, mel: torch.Tensor, n_mels: int) -> torch.Tensor:
    shape = tuple(mel.shape)
    if mel.dim() == 3 and mel.shape[0] == 1:
        mel = mel[0]
    if mel.dim() != 2:
        raise InputError(path, f"expected a mel [{n_mels}, frames], got shape {shape}")
    if mel.shape[0] == n_mels:
        if mel.shape[1] == n_mels:  # FastSpeech 2 stores [frames, n_mels]: said, not guessed
            log.warning(
                "%s: a square mel %s is read as [n_mels, frames]; if it is [frames, n_mels], "
                "store it transposed",
                path,
                list(shape),
            )
    elif mel.shape[1] == n_mels:
        mel = mel.T
    else:
        raise InputError(path, f"expected {n_mels} mel bins, got shape {shape}")
    if mel.shape[1] == 0:
        raise InputError(path, "empty mel (0 frames)")
    return mel.contiguous()

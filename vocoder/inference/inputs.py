"""Checking a mel before synthesis: shape, dtype, finiteness, and a warning on its range."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

from vocoder.errors import InputError
from vocoder.melio import check_mel_range

log = logging.getLogger(__name__)


def validate_mel(
    mel: Tensor | np.ndarray, n_mels: int, source: str = "mel", warn: bool = True
) -> Tensor:
    """`mel` as float32 `[B, n_mels, F]` on the CPU; `InputError` naming `source` when it
    cannot be synthesized. With `warn`, logs a warning when its values do not look like
    a natural-log mel (see `melio.check_mel_range`)."""
    n = n_mels
    mel = as_float_tensor(mel, source)
    shape = tuple(mel.shape)
    if mel.dim() not in (2, 3):
        raise InputError(
            source, f"expected a mel [{n}, frames] or [batch, {n}, frames], got shape {shape}"
        )
    mel = mel.detach().cpu().float()
    if mel.dim() == 2:
        mel = mel.unsqueeze(0)
    if mel.shape[1] != n:
        hint = " (transposed? expected [n_mels, frames])" if mel.shape[2] == n else ""
        raise InputError(source, f"expected {n} mel bins, got shape {shape}{hint}")
    if mel.shape[0] == 0 or mel.shape[2] == 0:
        raise InputError(source, f"empty mel (shape {shape})")
    bad = int((~torch.isfinite(mel)).sum())
    if bad:
        raise InputError(source, f"contains {bad} NaN or infinite values")
    if warn and mel.shape[2] == n:  # FastSpeech 2's [frames, n_mels]: said, not guessed
        log.warning(
            "%s: a square mel %s is taken as [n_mels, frames]; if it is [frames, n_mels], "
            "pass it transposed",
            source,
            list(shape),
        )
    warning = check_mel_range(mel) if warn else None
    if warning:
        log.warning("%s: %s", source, warning)
    return mel


def as_float_tensor(mel: Tensor | np.ndarray, source: str = "mel") -> Tensor:
    """`mel` as a floating-point tensor (an array in either byte order); `InputError` for
    anything else: integers (token ids or codes given by mistake), bool, complex, objects,
    as a file's mel is refused (`load_mel`)."""
    if isinstance(mel, np.ndarray):
        if mel.dtype.kind != "f":
            raise InputError(source, f"expected floating-point mel values, got {mel.dtype}")
        mel = torch.from_numpy(native_order(mel))
    if not isinstance(mel, Tensor):
        raise InputError(source, f"expected a mel tensor or array, got {type(mel).__name__}")
    if not mel.is_floating_point():
        raise InputError(source, f"expected floating-point mel values, got {mel.dtype}")
    return mel


def native_order(array: np.ndarray) -> np.ndarray:
    """`array` contiguous, in this machine's byte order (torch takes no other)."""
    if array.dtype.byteorder not in "=|":
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array)


__all__ = ["as_float_tensor", "native_order", "validate_mel"]

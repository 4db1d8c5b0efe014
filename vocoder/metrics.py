"""Quality of synthesized speech against the recording it should reproduce.

All metrics compare two waveforms of the same length (copy-synthesis: the vocoder was given
the recording's own mel), so no time alignment is needed.

- `log_mel_l1`: mean |ln-mel(reference) - ln-mel(synthesized)| under the run's MelConfig.
- `mel_cepstral_distortion` (dB): the mel-cepstra of the log power mel, in the convention
  of SPTK's (ln P(w) = c_0 + 2 sum_d c_d cos(d w), so c_d = (1/N) sum_n 2 ln M_n
  cos(pi d (2n + 1) / 2N) over the N bins of the magnitude mel M), coefficients 1..24 (c_0,
  the energy, left out), frame-wise (10 / ln 10) * sqrt(2 * sum_d (c_d - c'_d)^2), averaged
  over all frames (no DTW: lengths match; no silence removal). The formula and scale are
  the usual MCD's, but the cepstra come from the mel filterbank, not from a WORLD envelope
  warped by SPTK's all-pass, so other toolkits' figures differ (on four LJ Speech test
  clips: the shipped model 8.1 dB here and through pymcd alike, Griffin-Lim 1.0 here and
  3.3 through pymcd): compare figures within this toolkit.
- `pesq_wb`: ITU-T P.862.2 wideband PESQ (the `pesq` package), both signals resampled to
  16 kHz (soxr, as librosa does); 1.0 (bad) to 4.64.
- `stoi`: short-time objective intelligibility (the `pystoi` package), 0 to 1.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.fft
import torch

from vocoder.errors import InputError

MCD_COEFFICIENTS = 24
_MCD_SCALE = 10.0 / math.log(10.0) * math.sqrt(2.0)


def log_mel_l1(reference_mel: torch.Tensor, synthesized_mel: torch.Tensor) -> float:
    """Mean absolute difference of two ln-mels `[n_mels, frames]` (frames must match)."""
    _same_shape(reference_mel, synthesized_mel)
    return float((reference_mel.double() - synthesized_mel.double()).abs().mean())


def mel_cepstrum(log_mel: torch.Tensor) -> np.ndarray:
    """The mel-cepstra `[n_mels, frames]` of the power spectrum behind an ln magnitude mel
    `[n_mels, frames]`, in SPTK's convention (the module docstring): scipy's unnormalized
    DCT-II, 2 sum_n x_n cos(...), of ln M, over N."""
    x = log_mel.double().cpu().numpy()
    return scipy.fft.dct(x, type=2, axis=0) / x.shape[0]


def mel_cepstral_distortion(
    reference_mel: torch.Tensor,
    synthesized_mel: torch.Tensor,
    n_coefficients: int = MCD_COEFFICIENTS,
) -> float:
    """MCD in dB over cepstral coefficients 1..n_coefficients (see the module docstring)."""
    _same_shape(reference_mel, synthesized_mel)
    diff = (
        mel_cepstrum(reference_mel)[1 : n_coefficients + 1]
        - mel_cepstrum(synthesized_mel)[1 : n_coefficients + 1]
    )
    per_frame = _MCD_SCALE * np.sqrt((diff**2).sum(axis=0))
    return float(per_frame.mean())


def pesq_wb(reference: torch.Tensor, synthesized: torch.Tensor, sample_rate: int) -> float:
    """Wideband PESQ of `synthesized` against `reference` (`[samples]`); NaN if undefined."""
    from pesq import pesq  # imported here: a compiled extension only evaluation needs

    ref, syn = _at_16k(reference, sample_rate), _at_16k(synthesized, sample_rate)
    try:
        return float(pesq(16000, ref, syn, "wb"))
    except Exception:  # the pesq package raises for silent or too-short input
        return math.nan


def stoi(reference: torch.Tensor, synthesized: torch.Tensor, sample_rate: int) -> float:
    """STOI of `synthesized` against `reference` (`[samples]`), 0 to 1; NaN if undefined."""
    from pystoi import stoi as _stoi

    ref = reference.double().cpu().numpy()
    syn = synthesized.double().cpu().numpy()
    if not np.abs(ref).max(initial=0.0) > 0:  # a silent reference has no speech to score
        return math.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(_stoi(ref, syn, sample_rate, extended=False))
    # too few speech frames (a short or silent clip): pystoi warns and returns 1e-5, a
    # placeholder that would drag any mean down, where PESQ gives NaN
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        return math.nan
    return value


def _at_16k(audio: torch.Tensor, sample_rate: int) -> np.ndarray:
    """`audio` at 16 kHz as PESQ takes it, through soxr's high-quality filter (librosa's
    default, the usual route to `pesq`): torchaudio's default sinc lets a 9 kHz tone fold
    to 7 kHz at -17 dB, which moved PESQ by up to 0.1 on band-limited or noisy audio."""
    import librosa  # imported here, as the other metrics' packages are

    x = audio.double().cpu().numpy()
    return librosa.resample(x, orig_sr=sample_rate, target_sr=16000, res_type="soxr_hq")


def _same_shape(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape:
        raise InputError("mel", f"the mels differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")


__all__ = [
    "log_mel_l1",
    "mel_cepstrum",
    "mel_cepstral_distortion",
    "pesq_wb",
    "stoi",
    "MCD_COEFFICIENTS",
]

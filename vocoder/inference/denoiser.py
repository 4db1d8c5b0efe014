"""WaveGlow-style denoiser: subtract the model's own "bias" spectrum from its output.

A flow vocoder leaks a faint stationary signal whatever the mel (for WaveFlow/NanoFlow,
tones at multiples of sample_rate / h from the squeeze). NVIDIA's WaveGlow denoiser
estimates it by synthesizing audio from a "zero" mel with sigma = 0: by default literally a
log-mel of zeros (`mode="zeros"`, NVIDIA's choice, 88 frames, more where a hop is so short
that 88 would not fill one FFT: `bias_frames`; note a log-mel of 0 is a flat, loud spectrum
of magnitude 1, not silence), or standard normal values (`mode="normal"`). The bias
spectrum is the STFT magnitude of the first frame of that audio.
Denoising is then spectral subtraction with the original phase:

    denoised = ISTFT(max(|X| - strength * bias, 0) * exp(i * angle(X)))

`strength` 0 leaves the audio untouched; NVIDIA's examples use 0.01 to 0.1.
"""

from __future__ import annotations

import torch
from torch import Tensor

BIAS_FRAMES = 88  # length of NVIDIA's zero mel


def bias_frames(n_fft: int, hop_length: int) -> int:
    """Frames of the bias mel: NVIDIA's 88, or more where a hop is so short that 88 frames
    would not fill the first STFT frame."""
    return max(BIAS_FRAMES, -(-n_fft // hop_length) + 1)


def bias_mel(n_mels: int, frames: int = BIAS_FRAMES, mode: str = "zeros") -> Tensor:
    """The mel `[n_mels, frames]` whose synthesis estimates the bias: zeros or N(0, 1)."""
    if mode == "zeros":
        return torch.zeros(n_mels, frames, dtype=torch.float32)
    if mode == "normal":
        g = torch.Generator().manual_seed(0)
        return torch.randn(n_mels, frames, generator=g, dtype=torch.float32)
    raise ValueError(f"unknown bias mode {mode!r}; use 'zeros' or 'normal'")


class Denoiser:
    """Spectral subtraction of a fixed bias spectrum; see the module docstring."""

    def __init__(
        self,
        bias_audio: Tensor,
        n_fft: int = 1024,
        hop_length: int = 256,
        win_length: int = 1024,
    ):
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.win_length = win_length
        self.window = torch.hann_window(win_length, dtype=torch.float64)
        bias_audio = bias_audio.detach().cpu().reshape(1, -1).double()
        spec = self._stft(bias_audio, self._padded_length(bias_audio.shape[-1])).abs()
        self.bias = spec[0, :, :1]  # [n_freq, 1]: the first frame, as NVIDIA's

    def _padded_length(self, length: int) -> int:
        """Reflect padding needs more than n_fft / 2 samples: shorter audio gets zeros."""
        return max(length, self.n_fft // 2 + 1)

    def _stft(self, audio: Tensor, length: int) -> Tensor:
        """The STFT of `audio` `[B, T]` zero-padded to `length` samples."""
        audio = torch.nn.functional.pad(audio, (0, length - audio.shape[-1]))
        return torch.stft(
            audio,
            self.n_fft,
            self.hop_length,
            self.win_length,
            window=self.window,
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )

    def __call__(self, audio: Tensor, strength: float) -> Tensor:
        """Denoised `audio` (`[T]` or `[B, T]`, on the CPU, same dtype and length)."""
        if strength < 0:
            raise ValueError(f"denoising strength must be >= 0, got {strength}")
        if strength == 0 or audio.shape[-1] == 0:
            return audio
        shape, dtype = audio.shape, audio.dtype
        x = audio.detach().cpu().reshape(-1, shape[-1]).double()
        length = self._padded_length(shape[-1])
        spec = self._stft(x, length)
        magnitude = (spec.abs() - strength * self.bias).clamp(min=0.0)
        cleaned = torch.polar(magnitude, spec.angle())
        out = torch.istft(
            cleaned,
            self.n_fft,
            self.hop_length,
            self.win_length,
            window=self.window,
            center=True,
            length=length,
        )
        return out[:, : shape[-1]].to(dtype).reshape(shape)


__all__ = ["BIAS_FRAMES", "Denoiser", "bias_frames", "bias_mel"]

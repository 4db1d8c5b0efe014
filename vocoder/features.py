"""The mel-spectrogram convention: one typed config, its presets, one extractor.

`tacotron2` (the default) is the convention of the WaveFlow, NanoFlow and WaveGlow
reference code and of Tacotron 2: centered STFT with reflect padding, magnitude,
Slaney mel filters, natural log of the mel clamped at 1e-5. `hifigan` is HiFi-GAN's:
the same filters, but an uncentered STFT over audio reflect-padded by (n_fft - hop) / 2.
HiFi-GAN also adds 1e-9 under the magnitude's square root, which this preset leaves out:
it moves only near-silent cells, by at most 0.024 in ln over the 58 LJ Speech clips here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio

from vocoder.errors import ConfigError, InputError


@dataclass(frozen=True)
class MelConfig:
    """How audio becomes a log-mel spectrogram `[n_mels, frames]`."""

    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    n_mels: int = 80
    fmin: float = 0.0
    fmax: float | None = 8000.0
    center: bool = True
    clamp_min: float = 1e-5

    def validate(self) -> None:
        if self.sample_rate <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ConfigError("features: sample_rate, hop_length and n_mels must be positive")
        if self.win_length > self.n_fft:
            raise ConfigError(f"features: win_length {self.win_length} exceeds n_fft {self.n_fft}")
        if self.hop_length > self.win_length:
            raise ConfigError("features: hop_length must not exceed win_length")
        nyquist = self.sample_rate / 2
        if self.fmax is not None and not (0 <= self.fmin < self.fmax <= nyquist):
            raise ConfigError(
                f"features: need 0 <= fmin < fmax <= sample_rate/2 ({nyquist:g}), "
                f"got fmin={self.fmin}, fmax={self.fmax}"
            )
        if self.fmax is None and not 0 <= self.fmin < nyquist:  # fmax null: up to Nyquist
            raise ConfigError(
                f"features: need 0 <= fmin < sample_rate/2 ({nyquist:g}), got fmin={self.fmin}"
            )
        if not 0 < self.clamp_min < math.inf:  # the log of digital silence must be finite
            raise ConfigError(f"features: clamp_min must be above 0, got {self.clamp_min}")

    @classmethod
    def preset(cls, name: str, **changes) -> MelConfig:
        """A named convention (`tacotron2` or `hifigan`), optionally with fields changed."""
        if name not in PRESETS:
            raise ConfigError(f"unknown mel preset {name!r}; known: {', '.join(PRESETS)}")
        config = dataclasses.replace(PRESETS[name], **changes)
        config.validate()
        return config

    @property
    def min_samples(self) -> int:
        """The fewest samples of audio the extractor takes: its reflect padding (n_fft / 2
        centered, (n_fft - hop) / 2 not) must be shorter than the audio."""
        pad = self.n_fft // 2 if self.center else (self.n_fft - self.hop_length) // 2
        return pad + 1

    def num_frames(self, num_samples: int) -> int:
        """Frames the extractor yields for `num_samples` samples of audio."""
        if self.center:
            return 1 + num_samples // self.hop_length
        padded = num_samples + 2 * ((self.n_fft - self.hop_length) // 2)
        return 1 + (padded - self.n_fft) // self.hop_length


PRESETS: dict[str, MelConfig] = {
    "tacotron2": MelConfig(),
    "hifigan": MelConfig(center=False),
}


class MelSpectrogram(torch.nn.Module):
    """Audio `[batch, samples]` (or `[samples]`) in [-1, 1] -> log-mel `[batch, n_mels, frames]`.

    Runs on whatever device its input is on; the filterbank and window follow `.to()`.
    The STFT runs in float64 by default: the log of near-silent bins (close to the 1e-5
    clamp) then differs from NVIDIA's Tacotron 2 pipeline by at most 5.2e-4 over 58 LJ
    Speech clips (3.4e-4 on the shipped reference mels); in float32, by up to 2.1e-3.
    """

    def __init__(self, config: MelConfig | None = None, compute_dtype: torch.dtype = torch.float64):
        super().__init__()
        self.config = config or MelConfig()
        self.compute_dtype = compute_dtype
        c = self.config
        fbank = torchaudio.functional.melscale_fbanks(
            n_freqs=c.n_fft // 2 + 1,
            f_min=c.fmin,
            f_max=c.fmax if c.fmax is not None else c.sample_rate / 2,
            n_mels=c.n_mels,
            sample_rate=c.sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        fbank = fbank.T.contiguous().to(compute_dtype)
        self.register_buffer("fbank", fbank, persistent=False)
        window = torch.hann_window(c.win_length, dtype=compute_dtype)
        self.register_buffer("window", window, persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        squeeze = audio.dim() == 1
        if squeeze:
            audio = audio.unsqueeze(0)
        if audio.dim() != 2:
            raise InputError("audio", f"expected [batch, samples], got shape {tuple(audio.shape)}")
        c = self.config
        if audio.shape[-1] < c.min_samples:
            n = audio.shape[-1]
            raise InputError(
                "audio", f"{n} samples is too short for a mel (needs at least {c.min_samples})"
            )
        audio = audio.to(self.compute_dtype)
        if not c.center:
            pad = (c.n_fft - c.hop_length) // 2
            audio = torch.nn.functional.pad(audio.unsqueeze(1), (pad, pad), mode="reflect")
            audio = audio.squeeze(1)
        spec = torch.stft(
            audio,
            n_fft=c.n_fft,
            hop_length=c.hop_length,
            win_length=c.win_length,
            window=self.window,
            center=c.center,
            pad_mode="reflect",
            return_complex=True,
        ).abs()
        mel = torch.matmul(self.fbank, spec)
        mel = torch.log(torch.clamp(mel, min=c.clamp_min)).float()
        return mel.squeeze(0) if squeeze else mel


def mel_spectrogram(
    audio: torch.Tensor | np.ndarray, config: MelConfig | None = None
) -> torch.Tensor:
    """One-off convenience: the log-mel of `audio` (float, in [-1, 1]) under `config`
    (default `tacotron2`)."""
    audio = torch.as_tensor(audio)
    return MelSpectrogram(config).to(audio.device)(audio)

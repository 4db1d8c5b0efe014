"""Griffin-Lim: audio from a mel spectrogram without a neural network (the classic phase
reconstruction), the floor any neural vocoder should clear."""

from __future__ import annotations

import numpy as np
import torch

from vocoder.features import MelConfig

GRIFFIN_LIM_ITERATIONS = 60


def griffin_lim(
    log_mel: torch.Tensor,
    config: MelConfig,
    n_iter: int = GRIFFIN_LIM_ITERATIONS,
    length: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Audio `[samples]` from an ln-mel `[n_mels, frames]` by Griffin-Lim (librosa).

    exp(ln-mel) -> magnitude STFT through librosa's non-negative least-squares inverse of the
    same Slaney filterbank -> `librosa.griffinlim` with the same hop, window and centering.
    """
    import librosa  # imported here: heavy, and only evaluation needs it

    mel = np.exp(log_mel.double().cpu().numpy())
    magnitude = librosa.feature.inverse.mel_to_stft(
        mel,
        sr=config.sample_rate,
        n_fft=config.n_fft,
        power=1.0,
        fmin=config.fmin,
        fmax=config.fmax,
        htk=False,
        norm="slaney",
    )
    pad = 0 if config.center else (config.n_fft - config.hop_length) // 2
    audio = librosa.griffinlim(
        magnitude,
        n_iter=n_iter,
        hop_length=config.hop_length,
        win_length=config.win_length,
        n_fft=config.n_fft,
        window="hann",
        center=config.center,
        random_state=seed,
    )
    audio = audio[pad:]  # the uncentered (HiFi-GAN) convention pads the audio itself
    if length is not None:
        # librosa's own `length` must match the frame count exactly; pad or trim afterwards
        audio = np.pad(audio[:length], (0, max(0, length - audio.shape[0])))
    return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))


__all__ = ["GRIFFIN_LIM_ITERATIONS", "griffin_lim"]

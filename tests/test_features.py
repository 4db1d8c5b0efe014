"""The mel convention: the tacotron2 preset reproduces the reference pipeline's mels."""

from __future__ import annotations

import re

import librosa
import numpy as np
import pytest
import torch

from vocoder.audio import load_audio
from vocoder.errors import ConfigError, InputError
from vocoder.features import MelConfig, MelSpectrogram, mel_spectrogram

REFERENCE_IDS = ["LJ001-0026", "LJ001-0028"]  # shipped in tests/data
SHARED_REFERENCE_IDS = ["LJ001-0025", "LJ001-0027"]  # the other two, in ../shared/data only


def check_reference_mel(corpus, clip):
    # The whole pipeline: the file as load_audio reads it, then the default preset.
    audio = load_audio(corpus / "wavs" / f"{clip}.wav")
    reference = np.load(corpus / "mels_tacotron2" / f"{clip}.npy")
    mel = MelSpectrogram(MelConfig.preset("tacotron2"))(audio).numpy()
    assert mel.shape == reference.shape
    assert np.abs(mel - reference).max() < 5e-4  # measured: 3.4e-4 at worst


@pytest.mark.parametrize("clip", REFERENCE_IDS)
def test_tacotron2_preset_reproduces_reference_mels(ljspeech_clips, clip):
    check_reference_mel(ljspeech_clips, clip)


@pytest.mark.parametrize("clip", SHARED_REFERENCE_IDS)
def test_tacotron2_preset_reproduces_the_other_reference_mels(ljspeech_mini, clip):
    check_reference_mel(ljspeech_mini, clip)


def test_frame_counts_follow_each_convention():
    audio = torch.randn(22050).clamp(-1, 1) * 0.1
    for preset in ("tacotron2", "hifigan"):
        config = MelConfig.preset(preset)
        mel = mel_spectrogram(audio, config)
        assert mel.shape == (80, config.num_frames(audio.numel()))
    assert MelConfig.preset("tacotron2").num_frames(22050) == 1 + 22050 // 256
    assert MelConfig.preset("hifigan").num_frames(22050) == 22050 // 256
    # an odd n_fft - hop pads one sample less than (n_fft - hop) / 2 on each side: at hop
    # 275 and whole hops of audio that is one frame fewer than the old count said
    odd = MelConfig.preset("hifigan", hop_length=275, win_length=1100, n_fft=2048)
    for samples in (1100, 1375, 2475, 2476, 22000, 22050):
        mel = mel_spectrogram(torch.randn(samples).clamp(-1, 1) * 0.1, odd)
        assert mel.shape[1] == odd.num_frames(samples), samples


@pytest.mark.parametrize("preset", ["tacotron2", "hifigan"])
def test_audio_no_longer_than_the_reflect_padding_is_refused_by_name(preset):
    config = MelConfig.preset(preset)
    extractor = MelSpectrogram(config)
    shortest = config.min_samples  # 513 centered, 385 uncentered
    assert shortest == (513 if config.center else 385)
    assert extractor(torch.zeros(shortest)).shape == (80, config.num_frames(shortest))
    with pytest.raises(InputError, match=f"{shortest - 1} samples is too short for a mel"):
        extractor(torch.zeros(shortest - 1))


def test_batched_equals_single():
    extractor = MelSpectrogram()
    batch = torch.randn(3, 4096) * 0.1
    together = extractor(batch)
    for i in range(3):
        torch.testing.assert_close(together[i], extractor(batch[i]))


def test_hifigan_preset_differs_from_tacotron2(ljspeech_clips):
    audio = load_audio(ljspeech_clips / "wavs" / "LJ001-0026.wav")
    taco = mel_spectrogram(audio, MelConfig.preset("tacotron2"))
    hifi = mel_spectrogram(audio, MelConfig.preset("hifigan"))
    frames = min(taco.shape[1], hifi.shape[1])
    # Both conventions see the same speech but frame it differently.
    assert (taco[:, :frames] - hifi[:, :frames]).abs().mean() > 0.05
    assert (
        torch.corrcoef(torch.stack([taco[:, :frames].flatten(), hifi[:, :frames].flatten()]))[0, 1]
        > 0.9
    )


def hifigan_reference_mel(audio: torch.Tensor, c: MelConfig) -> torch.Tensor:
    """HiFi-GAN's `meldataset.mel_spectrogram` as its code computes it (float32, librosa's
    Slaney filters, audio reflect-padded by (n_fft - hop) / 2, an uncentred STFT, 1e-9
    under the magnitude's square root, ln clamped at 1e-5), written out independently of
    vocoder.features as the oracle for the `hifigan` preset."""
    basis = librosa.filters.mel(
        sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax
    )
    pad = (c.n_fft - c.hop_length) // 2
    y = torch.nn.functional.pad(audio[None, None].float(), (pad, pad), mode="reflect")[0]
    spec = torch.stft(
        y,
        c.n_fft,
        hop_length=c.hop_length,
        win_length=c.win_length,
        window=torch.hann_window(c.win_length),
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    magnitude = torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)
    return torch.log(torch.clamp(torch.from_numpy(basis) @ magnitude, min=1e-5))[0]


@pytest.mark.parametrize("clip", REFERENCE_IDS)
def test_hifigan_preset_reproduces_hifigan_mels(ljspeech_clips, clip):
    config = MelConfig.preset("hifigan")
    audio = load_audio(ljspeech_clips / "wavs" / f"{clip}.wav")
    reference = hifigan_reference_mel(audio, config)
    mel = mel_spectrogram(audio, config)
    assert mel.shape == reference.shape == (80, audio.numel() // 256)
    gap = (mel - reference).abs()
    # the 1e-9 this preset leaves out moves near-silent cells only (module docstring)
    assert gap.max() < 0.025 and gap.median() < 1e-5, (gap.max(), gap.median())  # 0.015, 1.4e-6


def test_invalid_configs_are_rejected():
    with pytest.raises(ConfigError, match="fmax"):
        MelConfig.preset("tacotron2", fmax=16000.0)
    with pytest.raises(ConfigError, match="win_length"):
        MelConfig.preset("tacotron2", win_length=2048)
    with pytest.raises(ConfigError, match="unknown mel preset"):
        MelConfig.preset("nope")
    # every filter zero, or a log of silence that is -inf: refused, not trained on
    for changes, problem in [
        ({"fmin": 20000.0, "fmax": None}, "need 0 <= fmin < sample_rate/2"),
        ({"fmin": -100.0}, "need 0 <= fmin < fmax"),
        ({"fmin": -1.0, "fmax": None}, "need 0 <= fmin < sample_rate/2"),
        ({"clamp_min": 0.0}, "clamp_min must be above 0"),
        ({"clamp_min": -1.0}, "clamp_min must be above 0"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(problem)):
            MelConfig.preset("tacotron2", **changes)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gpu_batch_reproduces_reference_mels(ljspeech_clips, dtype):
    clips = [load_audio(ljspeech_clips / "wavs" / f"{c}.wav") for c in REFERENCE_IDS]
    extractor = MelSpectrogram(compute_dtype=dtype).to("cuda")
    length = min(c.numel() for c in clips)
    batch = torch.stack([c[:length] for c in clips]).cuda()
    mels = extractor(batch)
    assert mels.device.type == "cuda" and mels.shape[:2] == (len(clips), 80)
    for clip, audio, mel in zip(REFERENCE_IDS, clips, mels.cpu(), strict=True):
        reference = np.load(ljspeech_clips / "mels_tacotron2" / f"{clip}.npy")
        whole = extractor(audio.cuda()).cpu().numpy()
        assert whole.shape == reference.shape
        # float32 reaches 9.4e-4 on the CPU already (near the log clamp): a margin for cuFFT
        tolerance = 5e-4 if dtype == torch.float64 else 2e-3
        assert np.abs(whole - reference).max() < tolerance, clip
        # A batch of cropped clips: frames away from the crop equal the whole clip's.
        inner = mel.shape[1] - 4
        assert torch.allclose(mel[:, :inner], torch.from_numpy(whole[:, :inner]), atol=1e-4)

"""Training segments and whole utterances, each paired with its exactly aligned mel.

`SegmentDataset` cuts a fixed-length segment from each utterance. The segment starts at a
multiple of `hop_length`, so its mel is a slice of the WHOLE utterance's mel (frames
`start // hop` onward): the frames see the same audio context at training time as at
inference time, where the vocoder gets a whole utterance's mel. The start is drawn from
`(seed, epoch, index)`, so a run is reproducible and each epoch sees other segments.

With `mel_dir`, the utterance's mel is read from `mel_dir/<stem>.npy` instead of computed:
this is how a vocoder is fine-tuned on mels a TTS model predicted (teacher-forced) for the
training audio. Such a mel must follow the run's convention: `n_mels` bins, and about
`mel_config.num_frames(samples)` frames at the run's hop (`check_mel_frames`); a mel made
at another hop has too many or too few frames for its recording and is refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from vocoder.audio import load_audio
from vocoder.errors import ConfigError, InputError, some_of
from vocoder.features import MelConfig, MelSpectrogram
from vocoder.melio import load_mel


def check_mel_frames(path: Path, mel: torch.Tensor, audio: Path, samples: int, config: MelConfig):
    """Refuse a mel read from `path` whose frame count does not fit `samples` of `audio` at
    `config.hop_length`: more than a few frames over what the extractor yields (TTS
    pipelines pad by a frame or two) means it was made at a shorter hop."""
    expected = config.num_frames(samples)
    slack = max(2, expected // 50)
    if mel.shape[1] > expected + slack:
        raise InputError(
            path,
            f"has {mel.shape[1]} frames, but {audio.name} ({samples} samples) has {expected} "
            f"at hop_length {config.hop_length}: was it made with another hop?",
        )


def check_mels_exist(files: list[Path], mel_dir: Path) -> None:
    """Refuse a `mel_dir` that lacks some file's `<stem>.npy`, before any training: found
    mid-run, it would stop the run at the first batch that draws the file."""
    if not mel_dir.is_dir():
        raise InputError(mel_dir, "no such folder of mels")
    missing = [f"{f.stem}.npy" for f in files if not (mel_dir / f"{f.stem}.npy").is_file()]
    if missing:
        raise InputError(
            mel_dir,
            f"has no mel for {len(missing)} of the {len(files)} training files: {some_of(missing)}",
        )


class SegmentDataset(Dataset):
    """Item i -> (audio `[segment_length]`, mel `[n_mels, segment_length // hop]`).

    Audio is loaded at `mel_config.sample_rate` and kept in memory after first use, as is
    each utterance's mel. Utterances shorter than a segment are zero-padded at the end and
    their mel computed on the padded audio (or, from `mel_dir`, padded with the log floor).
    """

    def __init__(
        self,
        files: list[Path],
        mel_config: MelConfig,
        segment_length: int,
        seed: int = 0,
        mel_dir: Path | None = None,
    ):
        hop = mel_config.hop_length
        if segment_length <= 0 or segment_length % hop != 0:
            raise ConfigError(
                f"segment_length {segment_length} must be a positive multiple of hop_length {hop}"
            )
        self.files = [Path(f) for f in files]
        self.mel_config = mel_config
        self.segment_length = segment_length
        self.segment_frames = segment_length // hop
        self.seed = seed
        self.epoch = 0
        self.mel_dir = Path(mel_dir) if mel_dir is not None else None
        self._mel = MelSpectrogram(mel_config)
        self._audio: dict[int, torch.Tensor] = {}
        self._lengths: dict[int, int] = {}  # samples before padding to a segment
        self._mels: dict[int, torch.Tensor] = {}

    def set_epoch(self, epoch: int) -> None:
        """Choose the segments of `epoch` (call before each epoch, as with DistributedSampler)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.files)

    def segment_start(self, index: int) -> int:
        """Sample offset of item `index`'s segment in this epoch (a multiple of hop_length)."""
        audio = self._utterance_audio(index)
        hop = self.mel_config.hop_length
        max_hops = (audio.numel() - self.segment_length) // hop
        if max_hops <= 0:
            return 0
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return int(rng.integers(0, max_hops + 1)) * hop

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        audio = self._utterance_audio(index)
        mel = self._utterance_mel(index)
        start = self.segment_start(index)
        frame = start // self.mel_config.hop_length
        segment = audio[start : start + self.segment_length]
        return segment.clone(), mel[:, frame : frame + self.segment_frames].clone()

    def _utterance_audio(self, index: int) -> torch.Tensor:
        audio = self._audio.get(index)
        if audio is None:
            audio = load_audio(self.files[index], sample_rate=self.mel_config.sample_rate)
            self._lengths[index] = audio.numel()
            if audio.numel() < self.segment_length:
                audio = torch.nn.functional.pad(audio, (0, self.segment_length - audio.numel()))
            self._audio[index] = audio
        return audio

    def _utterance_mel(self, index: int) -> torch.Tensor:
        mel = self._mels.get(index)
        if mel is None:
            audio = self._utterance_audio(index)
            if self.mel_dir is None:
                with torch.no_grad():
                    mel = self._mel(audio)
            else:
                mel = self._read_mel(index, audio.numel())
            self._mels[index] = mel
        return mel

    def _read_mel(self, index: int, num_samples: int) -> torch.Tensor:
        path = self.mel_dir / f"{self.files[index].stem}.npy"
        mel = load_mel(path, n_mels=self.mel_config.n_mels)
        hop = self.mel_config.hop_length
        original = self._lengths[index]
        check_mel_frames(path, mel, self.files[index], original, self.mel_config)
        # The last segment that can be drawn ends at this frame.
        needed = (num_samples - self.segment_length) // hop + self.segment_frames
        if mel.shape[1] < needed:
            if num_samples > original and mel.shape[1] >= original // hop:
                # A short utterance was zero-padded: pad its mel with silence to match.
                floor = float(np.log(self.mel_config.clamp_min))
                return torch.nn.functional.pad(mel, (0, needed - mel.shape[1]), value=floor)
            raise InputError(
                path,
                f"has {mel.shape[1]} frames, but {self.files[index].name} "
                f"({num_samples} samples) needs at least {needed}",
            )
        return mel


class UtteranceDataset(Dataset):
    """Item i -> (audio `[T]`, mel `[n_mels, F]`, name) with F = `mel_config.num_frames(T)`.

    Audio is loaded at `mel_config.sample_rate` and cut to the `F * hop_length` samples its
    frames cover (a no-op for centered mels). With `mel_dir`, the mel comes from
    `mel_dir/<stem>.npy` (extra trailing frames dropped; too few frames is an error).
    """

    def __init__(self, files: list[Path], mel_config: MelConfig, mel_dir: Path | None = None):
        self.files = [Path(f) for f in files]
        self.mel_config = mel_config
        self.mel_dir = Path(mel_dir) if mel_dir is not None else None
        self._mel = MelSpectrogram(mel_config)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, str]:
        path = self.files[index]
        audio = load_audio(path, sample_rate=self.mel_config.sample_rate)
        frames = self.mel_config.num_frames(audio.numel())
        if self.mel_dir is None:
            with torch.no_grad():
                mel = self._mel(audio)  # of the whole recording, as `prepare` makes it
        else:
            mel_path = self.mel_dir / f"{path.stem}.npy"
            mel = load_mel(mel_path, n_mels=self.mel_config.n_mels)
            if mel.shape[1] < frames:
                raise InputError(mel_path, f"has {mel.shape[1]} frames, {path.name} needs {frames}")
            check_mel_frames(mel_path, mel, path, audio.numel(), self.mel_config)
            mel = mel[:, :frames]
        # uncentered mels (hifigan) have no frame of their own for the last < hop samples
        return audio[: frames * self.mel_config.hop_length], mel, path.stem

"""`vocoder prepare` under stress, as a user meets it: a streamed FLAC, a full disk."""

from __future__ import annotations

import errno
import os
import shutil

import pytest
import soundfile as sf
from test_prepare import run_cli
from test_synthesize_reliability import run_limited, streamed_flac

from vocoder.audio import load_audio, resample, save_audio
from vocoder.data.filelist import read_filelist

SHORT, LONG = "LJ002-0020", "LJ001-0011"  # 33949 and 99485 samples at 22050 Hz
ALL_TRAIN = ["--split", "random", "--valid-fraction", "0", "--test-fraction", "0"]


def test_streamed_flacs_are_read_by_decoding(ljspeech_clips, tmp_path):
    """FLACs whose header states 0 samples (length unknown) are checked, listed, resampled."""
    voice = tmp_path / "voice"
    voice.mkdir()
    clip = ljspeech_clips / "wavs" / f"{SHORT}.wav"
    streamed_flac(clip, voice / "at22k.flac")
    at16k = tmp_path / "at16k.wav"
    save_audio(at16k, resample(load_audio(clip), 22050, 16000), 16000)
    streamed_flac(at16k, voice / "at16k.flac")

    out = tmp_path / "out"
    result = run_cli(voice, "--out", out, *ALL_TRAIN, "--resample")
    assert result.returncode == 0, result.stderr
    assert "rejected: none" in result.stdout
    assert sorted(read_filelist(out / "train.txt")) == sorted(
        [(voice / "at22k.flac").resolve(), (out / "wavs" / "at16k.wav").resolve()]
    )
    assert sf.info(str(out / "wavs" / "at16k.wav")).frames == pytest.approx(33949, abs=4)
    # both clips are 1.54 s: 0.001 h in all, as the summary's total row says
    total = next(line for line in result.stdout.splitlines() if line.strip().startswith("total"))
    assert total.split()[1:] == ["2", f"{2 * 33949 / 22050 / 3600:.3f}"]


def test_a_full_disk_is_one_line_and_earlier_outputs_stay(ljspeech_clips, tmp_path):
    """A write that fails for room names the file and why; what was written before stays,
    nothing half-written is left, and the run resumes once there is room."""
    voice = tmp_path / "voice"
    voice.mkdir()
    # prepared in name order: at 24 kHz, a.wav takes 74 kB and b.wav 217 kB
    shutil.copy(ljspeech_clips / "wavs" / f"{SHORT}.wav", voice / "a.wav")
    shutil.copy(ljspeech_clips / "wavs" / f"{LONG}.wav", voice / "b.wav")
    out = tmp_path / "out"
    options = [voice, "--out", out, *ALL_TRAIN, "--sample-rate", "24000", "--resample"]

    result = run_limited(
        100_000, "prepare", *options, "--skip-bad"
    )  # a full disk is not a bad file
    assert result.returncode == 2, result.stderr
    lines = [x for x in result.stderr.splitlines() if not x.startswith("prepare: ")]
    reason = os.strerror(errno.EFBIG)
    assert lines == [
        f"error: {out / 'wavs' / 'b.wav'}: could not be written: {reason[0].lower()}"
        f"{reason[1:]} (out of disk space, quota or file size limit)"
    ]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert written == [".prepare-incomplete.json", "wavs", "wavs/a.wav"]  # no temp file
    a = load_audio(out / "wavs" / "a.wav")
    assert sf.info(str(out / "wavs" / "a.wav")).samplerate == 24000
    assert a.numel() == pytest.approx(33949 * 24000 / 22050, abs=4)

    result = run_cli(*options)  # room again: resumes over the marker, no --force
    assert result.returncode == 0, result.stderr
    assert len(read_filelist(out / "train.txt")) == 2
    assert sf.info(str(out / "wavs" / "b.wav")).frames == pytest.approx(
        99485 * 24000 / 22050, abs=4
    )

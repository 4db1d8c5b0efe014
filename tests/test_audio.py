"""Audio I/O on real recordings and on deliberately broken files."""

from __future__ import annotations

import math
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from vocoder.audio import AUDIO_EXTENSIONS, audio_info, is_synthesized, load_audio, save_audio
from vocoder.cli import describe_error
from vocoder.errors import InputError
from vocoder.files import plain_file_mode, refuse_existing, remove_orphaned_temporaries

CLIP = "LJ001-0002"  # 1.9 s


@pytest.fixture(scope="module")
def clip_path(ljspeech_clips):
    return ljspeech_clips / "wavs" / f"{CLIP}.wav"


def test_load_matches_int16_over_32768_exactly(clip_path):
    audio = load_audio(clip_path)
    reference, rate = sf.read(clip_path, dtype="int16")
    assert rate == 22050
    assert audio.dtype == torch.float32 and audio.dim() == 1
    assert torch.equal(audio, torch.from_numpy(reference.astype(np.float32) / 32768.0))
    assert audio.abs().max() <= 1.0


def test_load_flac(male_reader_clips):
    path = male_reader_clips / "wavs" / "LJ001-0002.flac"
    reference, _ = sf.read(path, dtype="int16")
    assert torch.equal(load_audio(path), torch.from_numpy(reference / 32768.0).float())


def test_load_mp3_and_scan_finds_it(clip_path, tmp_path):
    reference = load_audio(clip_path)
    sf.write(tmp_path / "clip.mp3", reference.numpy(), 22050, format="MP3")
    audio = load_audio(tmp_path / "clip.mp3")
    assert audio.dtype == torch.float32 and abs(audio.numel() - reference.numel()) < 2048
    assert ".mp3" in AUDIO_EXTENSIONS  # folders of mp3 files are synthesized and prepared


def test_audio_info(clip_path):
    info = audio_info(clip_path)
    header = sf.info(clip_path)
    assert (info.sample_rate, info.channels, info.frames) == (22050, 1, header.frames)
    assert info.duration == pytest.approx(header.frames / 22050)
    assert info.subtype == "PCM_16"


def test_save_load_round_trip_is_bit_exact(clip_path, tmp_path):
    audio = load_audio(clip_path)
    for name, subtype in [("a.wav", "PCM_16"), ("a.flac", "PCM_16"), ("f.wav", "FLOAT")]:
        out = save_audio(tmp_path / name, audio, 22050, subtype=subtype)
        assert torch.equal(load_audio(out), audio), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.flac", "a.wav", "f.wav"]


def test_save_float_keeps_values_and_pcm16_clips(tmp_path):
    x = torch.tensor([0.0, 0.123456789, -1.5, 1.5, 0.5])
    save_audio(tmp_path / "f.wav", x, 16000, subtype="FLOAT")
    assert torch.equal(load_audio(tmp_path / "f.wav"), x)
    save_audio(tmp_path / "p.wav", x, 16000)
    y = load_audio(tmp_path / "p.wav")
    assert y[2] == -1.0 and y[3] == 32767 / 32768 and y[4] == 0.5


def test_save_takes_mono_or_stereo_channels_first_and_refuses_other_shapes(tmp_path):
    """soundfile's [samples, channels] was written as a file of 1000 channels of 2 samples,
    a batch [B, samples] as one file of B channels."""
    stereo = torch.rand(2, 1000) - 0.5
    save_audio(tmp_path / "stereo.wav", stereo, 16000)
    assert sf.info(tmp_path / "stereo.wav").channels == 2
    for shape, name in [((1000, 2), "frames.wav"), ((4, 1000), "batch.wav"), ((1000, 1), "m.wav")]:
        with pytest.raises(InputError, match=rf"{name}: expected .* of 1 or 2 channels, got"):
            save_audio(tmp_path / name, np.zeros(shape, np.float32), 16000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stereo.wav"]


def test_save_refuses_to_overwrite(clip_path, tmp_path):
    target = tmp_path / "out.wav"
    target.write_bytes(b"keep me")
    audio = load_audio(clip_path)
    with pytest.raises(InputError, match="already exists"):
        save_audio(target, audio, 22050)
    assert target.read_bytes() == b"keep me"
    save_audio(target, audio, 22050, overwrite=True)
    assert torch.equal(load_audio(target), audio)
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]  # no temp file left behind


def orphan_of_a_killed_write(target: Path) -> Path:
    """The temporary file a process SIGKILLed while writing `target` leaves."""
    before = set(target.parent.iterdir()) if target.parent.is_dir() else set()
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, sys\n"
            "from vocoder.files import atomic_output\n"
            "with atomic_output(sys.argv[1]) as tmp:\n"
            "    tmp.write_bytes(b'half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n",
            str(target),
        ],
    )
    assert killed.returncode == -signal.SIGKILL
    (orphan,) = set(target.parent.iterdir()) - before
    assert orphan.name.startswith(f".{target.name}.") and not target.exists()
    return orphan


def test_a_write_killed_outright_leaves_a_temporary_that_is_removed_later(tmp_path):
    orphan = orphan_of_a_killed_write(tmp_path / "out.wav")
    tag = orphan.name.split(".")[3]  # host-pid of the killed writer
    host, pid = tag.rsplit("-", 1)
    kept = [
        tmp_path / ".out.wav.notes.wav",  # not a name atomic_output makes
        tmp_path / f".out.wav.{host}-{os.getpid()}.abcd1234.wav",  # a live writer's
        tmp_path / f".out.wav.{host}x-{pid}.abcd1234.wav",  # another host's
    ]
    for path in kept:
        path.write_bytes(b"mine")
    assert remove_orphaned_temporaries(tmp_path) == [orphan]
    assert sorted(tmp_path.iterdir()) == sorted(kept)


def test_refusing_existing_files_names_the_first_and_counts_the_rest(tmp_path):
    paths = [tmp_path / name for name in ("a.wav", "b.wav", "c.wav", "d.wav")]
    refuse_existing(paths)  # none exists yet
    for p in paths[1:]:
        p.write_bytes(b"")
    with pytest.raises(InputError) as refused:
        refuse_existing(paths)
    assert refused.value.source == str(paths[1])
    assert refused.value.problem == "already exists (and 2 more); refusing to overwrite it"
    assert str(refused.value).endswith("; set overwrite=True to replace it")
    assert describe_error(refused.value).endswith("; pass --force to replace it")
    with pytest.raises(InputError, match="set force=True"):
        refuse_existing(paths[3:], "force")


def test_outputs_get_umask_permissions_not_private_temp_ones(clip_path, tmp_path):
    previous = os.umask(0o022)
    try:
        path = save_audio(tmp_path / "shared.wav", load_audio(clip_path), 22050)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_the_umask_is_read_without_being_set(tmp_path, monkeypatch):
    """`os.umask` reads the umask only by setting it: for that moment another thread of the
    process (the demo's) would create files with umask 0. It is read from /proc instead."""
    status = tmp_path / "status"
    status.write_text("Name:\tpython\nUmask:\t0027\nState:\tR\n")

    def never(mask):
        raise AssertionError("os.umask was called")

    monkeypatch.setattr(os, "umask", never)
    assert plain_file_mode(status) == 0o640
    if Path("/proc/self/status").is_file():
        assert plain_file_mode() & 0o600 == 0o600  # this process's own, read (never() not called)


def test_stereo_mixdown_or_reject(clip_path, tmp_path):
    mono = load_audio(clip_path)
    stereo = torch.stack([mono, torch.zeros_like(mono)])  # [channels, samples]
    path = save_audio(tmp_path / "stereo.wav", stereo, 22050)
    assert audio_info(path).channels == 2
    assert torch.equal(load_audio(path), mono / 2)
    with pytest.raises(InputError, match="2 channels"):
        load_audio(path, mixdown=False)


def test_resample_8k_file(tmp_path):
    # A 440 Hz tone at 8 kHz, read back at 22050 Hz, is the same tone at the new rate.
    t8 = torch.arange(8000) / 8000
    path = save_audio(tmp_path / "tone8k.wav", 0.5 * torch.sin(2 * math.pi * 440 * t8), 8000)
    audio = load_audio(path, sample_rate=22050)
    assert audio.numel() == 22050
    t = torch.arange(22050) / 22050
    expected = 0.5 * torch.sin(2 * math.pi * 440 * t)
    middle = slice(1000, -1000)  # the sinc filter's edges see zeros beyond the file
    assert (audio[middle] - expected[middle]).abs().max() < 2e-3
    raw = load_audio(path)
    assert raw.numel() == 8000
    assert torch.equal(audio, torchaudio.functional.resample(raw, 8000, 22050))


def test_broken_files_raise_input_error_naming_them(clip_path, tmp_path):
    text = tmp_path / "x.wav"
    text.write_text("this is not audio\n")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    data = clip_path.read_bytes()
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(data[: len(data) // 2])
    header_only = tmp_path / "header.wav"
    header_only.write_bytes(data[:30])
    fake_mp3 = tmp_path / "song.mp3"
    fake_mp3.write_text("not an mp3 either\n")
    no_samples = tmp_path / "nosamples.wav"
    sf.write(no_samples, np.zeros(0, dtype=np.int16), 22050)  # a valid header, 0 frames
    cases = {
        text: "not a readable audio file",
        empty: "empty file",
        truncated: "truncated",
        header_only: "not a readable audio file",
        fake_mp3: "not a readable audio file (unrecognised format or corrupt data)",
        no_samples: "empty audio",
        tmp_path / "missing.wav": "no such file",
        tmp_path: "not a file",
    }
    for path, problem in cases.items():
        with pytest.raises(InputError) as caught:
            load_audio(path)
        assert str(caught.value).startswith(f"{path}: "), caught.value
        assert problem in caught.value.problem, (path, caught.value)
    with pytest.raises(InputError, match="not a readable audio file"):
        audio_info(text)
    with pytest.raises(InputError, match="truncated"):
        audio_info(truncated)


def test_a_name_that_is_not_utf8_is_read(clip_path, tmp_path):
    """soundfile encodes a name as UTF-8: a file or folder named in another encoding (a
    Latin-1 archive unpacked) crashed every reader with a UnicodeEncodeError."""
    folder = tmp_path / os.fsdecode(b"voice\xfe")
    folder.mkdir()
    path = folder / os.fsdecode(b"bad\xffname.wav")
    save_audio(path, load_audio(clip_path), 22050, synthesized=True)
    assert torch.equal(load_audio(path), load_audio(clip_path))
    assert audio_info(path) == audio_info(clip_path)
    assert is_synthesized(path)
    (folder / "text.wav").write_text("not audio\n")
    with pytest.raises(InputError, match="not a readable audio file"):
        audio_info(folder / "text.wav")


# runs without root's power to read past permissions (see without_reading_past_permissions)
_READ_EACH = """
import sys
from vocoder.audio import audio_info, load_audio
for path in sys.argv[1:]:
    for read in (audio_info, load_audio):
        try:
            read(path)
        except Exception as e:
            print(type(e).__name__, e)
"""


def test_a_file_it_may_not_read_says_permission_denied(clip_path, tmp_path):
    """libsndfile says "System error" of a file it may not open; and a file in a folder it
    may not search raised PermissionError from `Path.exists`, a traceback."""
    from test_synthesize_reliability import without_reading_past_permissions

    locked_file = tmp_path / "locked.wav"
    locked_file.write_bytes(clip_path.read_bytes())
    locked_folder = tmp_path / "locked"
    locked_folder.mkdir()
    (locked_folder / "a.wav").write_bytes(clip_path.read_bytes())
    tmp_path.chmod(0o755)
    locked_file.chmod(0)
    locked_folder.chmod(0)
    try:
        result = subprocess.run(
            [sys.executable, "-c", _READ_EACH, str(locked_file), str(locked_folder / "a.wav")],
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=without_reading_past_permissions,
        )
    finally:
        locked_folder.chmod(0o755)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"InputError {path}: cannot read this file (permission denied)"
        for path in (locked_file, locked_file, locked_folder / "a.wav", locked_folder / "a.wav")
    ]

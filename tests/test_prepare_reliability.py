"""`vocoder prepare` under stress, as a user meets it: a streamed FLAC, a full disk, a
folder of many bad files."""

from __future__ import annotations

import errno
import json
import os
import shutil

import pytest
import soundfile as sf
import torch
from test_prepare import REPO, run_cli
from test_synthesize_cli import vocoder
from test_synthesize_reliability import (
    run_limited,
    streamed_flac,
    without_reading_past_permissions,
)

from vocoder.audio import load_audio, resample, save_audio
from vocoder.data.audio_checks import RefusedFiles, check_audio
from vocoder.data.filelist import read_filelist
from vocoder.data.prepare import prepare_dataset, read_manifest
from vocoder.errors import InputError
from vocoder.features import MelConfig

SHORT, LONG = "LJ002-0020", "LJ001-0011"  # 33949 and 99485 samples at 22050 Hz
ALL_TRAIN = ["--split", "random", "--valid-fraction", "0", "--test-fraction", "0"]
CONF = REPO / "recipes" / "custom_voice" / "conf" / "waveflow-24k-hop300.yaml"  # 24 kHz


def errors(result) -> list[str]:
    """stderr without the progress lines."""
    return [line for line in result.stderr.splitlines() if not line.startswith("prepare: ")]


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


def test_every_refused_file_is_named_in_one_run(ljspeech_clips, tmp_path):
    """The audit's folder (a text file named .wav, a clip at 22050 Hz for a 24 kHz run, a
    short clip) is refused in one run, not three: a line per file, then a count by kind
    with the flags that fix each kind; the output folder is not made."""
    rec = tmp_path / "recordings"
    (rec / "rec2").mkdir(parents=True)
    clip = load_audio(ljspeech_clips / "wavs" / f"{LONG}.wav")
    at24k = resample(clip, 22050, 24000)
    save_audio(rec / "good.wav", at24k, 24000)
    (rec / "bad.wav").write_text("this is a text file, not audio\n")
    save_audio(rec / "rec2" / "c0.flac", clip, 22050)
    save_audio(rec / "rec2" / "short.wav", at24k[:1089], 24000)
    out = tmp_path / "data" / "myvoice"
    options = [rec, "--out", out, "--config", CONF, *ALL_TRAIN]

    result = run_cli(*options)
    assert result.returncode == 2, result.stderr
    lines = errors(result)
    assert len(lines) == 4 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"error: {rec / 'bad.wav'}: not a readable audio file (")
    assert lines[1:] == [
        f"error: {rec / 'rec2' / 'c0.flac'}: sample rate 22050 Hz, expected 24000 Hz; "
        "pass --resample to convert it",
        f"error: {rec / 'rec2' / 'short.wav'}: too short: 1089 samples at 24000 Hz, "
        "less than one training segment (16200)",
        f"error: {rec}: 3 file(s) refused (1 unreadable, 1 at another sample rate, "
        "1 too short): pass --resample to convert the sample rates and --skip-bad to "
        "leave out the rest",
    ]
    assert not (tmp_path / "data").exists()

    result = run_cli(*options, "--resample", "--skip-bad")  # as the summary says
    assert result.returncode == 0, result.stderr
    assert "rejected 2 file(s):" in result.stdout
    assert len(read_filelist(out / "train.txt")) == 2


def test_after_a_refused_file_the_rest_are_checked_not_resampled(
    ljspeech_clips, tmp_path, monkeypatch
):
    """A refused run saves nothing, so the files after the first refused one are only
    checked: their length at the run's rate counted, not resampled (each was, in full)."""
    voice = tmp_path / "voice"
    voice.mkdir()
    (voice / "a-bad.wav").write_text("not audio\n")
    clip = load_audio(ljspeech_clips / "wavs" / f"{LONG}.wav")
    save_audio(voice / "b-long.wav", clip, 22050)
    save_audio(voice / "c-short.wav", clip[:14700], 22050)  # 16000 at 24 kHz, less one
    resampled = []
    import vocoder.data.audio_checks as checks

    monkeypatch.setattr(checks, "resample", lambda a, *r: resampled.append(r) or resample(a, *r))
    with pytest.raises(RefusedFiles) as refused:
        prepare_dataset(
            voice, tmp_path / "out", split="random", valid_fraction=0, test_fraction=0,
            mel_config=MelConfig(sample_rate=24000, hop_length=300), segment_length=16001,
            resample=True,
        )  # fmt: skip
    assert resampled == []
    reasons = {r.path.name: r.reason for r in refused.value.refused}
    assert reasons["c-short.wav"].startswith("too short: 16000 samples at 24000 Hz")
    assert sorted(reasons) == ["a-bad.wav", "c-short.wav"]


def test_many_refused_files_list_the_first_twenty(ljspeech_clips, tmp_path):
    voice = tmp_path / "voice"
    voice.mkdir()
    shutil.copy(ljspeech_clips / "wavs" / f"{LONG}.wav", voice / "a.wav")
    for i in range(25):
        (voice / f"b{i:02d}.wav").write_bytes(b"")
    result = run_cli(voice, "--out", tmp_path / "out", *ALL_TRAIN)
    assert result.returncode == 2, result.stderr
    lines = errors(result)
    assert lines[:20] == [
        f"error: {voice / f'b{i:02d}.wav'}: empty file (0 bytes)" for i in range(20)
    ]
    assert lines[20:] == [
        "error: and 5 more refused file(s)",
        f"error: {voice}: 25 file(s) refused (25 unreadable): pass --skip-bad to leave them out",
    ]


def test_a_refused_run_leaves_the_output_folder_as_it_was(ljspeech_clips, tmp_path):
    """Files a refused run wrote go again; an earlier run's files (redone with --force) are
    replaced only once every file passed, so its folder stays whole, manifest and all."""
    voice = tmp_path / "voice"
    voice.mkdir()
    shutil.copy(ljspeech_clips / "wavs" / f"{SHORT}.wav", voice / "a.wav")
    shutil.copy(ljspeech_clips / "wavs" / f"{LONG}.wav", voice / "b.wav")
    (voice / "z.wav").write_text("not audio")  # checked last: a and b are written first
    out = tmp_path / "out"
    out.mkdir()  # made by the user: it stays, empty
    at24k = [voice, "--out", out, *ALL_TRAIN, "--sample-rate", "24000", "--resample"]
    result = run_cli(*at24k)
    assert result.returncode == 2, result.stderr
    assert list(out.iterdir()) == []
    assert errors(result)[-1].startswith(f"error: {voice}: 1 file(s) refused (1 unreadable)")

    assert run_cli(*at24k, "--skip-bad").returncode == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert sorted(p.name for p in before) == [
        "a.wav",
        "b.wav",
        "manifest.json",
        "test.txt",
        "train.txt",
        "valid.txt",
    ]
    result = run_cli(
        voice, "--out", out, *ALL_TRAIN, "--sample-rate", "16000", "--resample", "--force"
    )
    assert result.returncode == 2, result.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before

    (voice / "z.wav").unlink()  # all pass now: the new audio replaces the old
    result = run_cli(
        voice, "--out", out, *ALL_TRAIN, "--sample-rate", "16000", "--resample", "--force"
    )
    assert result.returncode == 0, result.stderr
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert written == sorted(["wavs", *(p.relative_to(out).as_posix() for p in before)])
    assert sf.info(str(out / "wavs" / "a.wav")).samplerate == 16000


def _voice(ljspeech_clips, folder):
    """Three LJ Speech clips as a plain folder of a.wav, b.wav, c.wav (22,050 Hz)."""
    folder.mkdir()
    for name, clip in zip("abc", sorted((ljspeech_clips / "wavs").glob("*.wav")), strict=False):
        shutil.copy(clip, folder / f"{name}.wav")
    return folder


def _stop_at_the_second_file(done, total, path):
    if done == 2:
        raise KeyboardInterrupt  # as a Ctrl-C there would


def test_a_killed_forced_run_resumes_without_force(ljspeech_clips, tmp_path):
    """A forced re-prepare keeps the earlier manifest until it completes; killed, its own
    marker says which convention the folder is being prepared for, and a rerun with that
    convention resumes over it (it was refused: the earlier manifest was read first)."""
    voice, out = _voice(ljspeech_clips, tmp_path / "voice"), tmp_path / "out"
    options = dict(split="random", valid_fraction=0.0, test_fraction=0.0, resample=True)
    prepare_dataset(voice, out, mel_config=MelConfig(sample_rate=24000), **options)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(
            voice, out, mel_config=MelConfig(sample_rate=16000), force=True,
            progress=_stop_at_the_second_file, **options,
        )  # fmt: skip
    assert (out / "manifest.json").is_file() and (out / ".prepare-incomplete.json").is_file()
    prepare_dataset(voice, out, mel_config=MelConfig(sample_rate=16000), **options)
    assert read_manifest(out)["mel_config"]["sample_rate"] == 16000
    assert not (out / ".prepare-incomplete.json").exists()
    assert {sf.info(str(p)).samplerate for p in (out / "wavs").glob("*.wav")} == {16000}
    assert not list((out / "wavs").glob(".*"))


def test_a_refused_forced_run_puts_back_the_marker_it_replaced(ljspeech_clips, tmp_path):
    """An unfinished 24 kHz preparation, then a forced 16 kHz run that refuses a file: the
    folder is still marked as the 24 kHz preparation, so a 16 kHz run needs --force."""
    voice, out = _voice(ljspeech_clips, tmp_path / "voice"), tmp_path / "out"
    options = dict(split="random", valid_fraction=0.0, test_fraction=0.0, resample=True)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(
            voice, out, mel_config=MelConfig(sample_rate=24000),
            progress=_stop_at_the_second_file, **options,
        )  # fmt: skip
    marker = (out / ".prepare-incomplete.json").read_bytes()
    (voice / "z.wav").write_text("not audio")
    with pytest.raises(RefusedFiles):
        prepare_dataset(voice, out, mel_config=MelConfig(sample_rate=16000), force=True, **options)
    assert (out / ".prepare-incomplete.json").read_bytes() == marker
    with pytest.raises(InputError, match="unfinished preparation with a different mel config"):
        prepare_dataset(voice, out, mel_config=MelConfig(sample_rate=16000), **options)


def test_skip_bad_leaving_nothing_says_why_for_each_file(ljspeech_clips, tmp_path):
    """With --skip-bad (the recipes always pass it) a folder whose files all fail said only
    "all 2 file(s) were rejected", even with -v."""
    voice = tmp_path / "voice"
    voice.mkdir()
    (voice / "bad.wav").write_text("not audio\n")
    clip = load_audio(ljspeech_clips / "wavs" / f"{SHORT}.wav")
    save_audio(voice / "short.wav", clip[:1000], 22050)
    save_audio(voice / "at16k.wav", resample(clip, 22050, 16000), 16000)
    result = run_cli(voice, "--out", tmp_path / "out", *ALL_TRAIN, "--skip-bad")
    assert result.returncode == 2
    lines = errors(result)
    assert lines[0] == (
        f"error: {voice / 'at16k.wav'}: sample rate 16000 Hz, expected 22050 Hz; pass "
        "--resample to convert it"
    )
    assert lines[1].startswith(f"error: {voice / 'bad.wav'}: not a readable audio file")
    assert lines[2].startswith(f"error: {voice / 'short.wav'}: too short: 1000 samples")
    assert lines[3:] == [
        f"error: {voice}: no usable audio: all 3 file(s) were left out (1 unreadable, 1 at "
        "another sample rate, 1 too short): pass --resample to convert the sample rates"
    ]
    assert not (tmp_path / "out").exists()


def test_float_audio_beyond_full_scale_is_refused(ljspeech_clips, tmp_path):
    """A float WAV peaking at 1.8 was taken, and its resampled copy clipped unsaid."""
    voice = tmp_path / "voice"
    voice.mkdir()
    clip = load_audio(ljspeech_clips / "wavs" / f"{LONG}.wav")
    save_audio(voice / "loud.wav", clip * (1.8 / float(clip.abs().max())), 22050, "FLOAT")
    save_audio(voice / "fine.wav", clip, 22050, "FLOAT")
    with pytest.raises(RefusedFiles) as refused:
        prepare_dataset(voice, tmp_path / "out", split="random", valid_fraction=0, test_fraction=0)
    (only,) = refused.value.refused
    assert only.path.name == "loud.wav" and only.kinds == ("over",)
    assert only.reason == "beyond full scale: peak 1.8 (a float file's samples lie in [-1, 1])"
    assert "1 beyond full scale" in refused.value.problem
    # a lossy decoder's overshoot of a loud file is no such mistake (Vorbis: 1.06 for 0.99)
    noise = torch.rand(44100, generator=torch.Generator().manual_seed(0)) * 0.6 - 0.3
    noise[1000::5000] = 0.99
    save_audio(voice / "loud.ogg", noise, 22050, "VORBIS")
    assert load_audio(voice / "loud.ogg").abs().max() > 1.0
    audio, _ = check_audio(voice / "loud.ogg", 22050, 16000)
    assert audio.numel() == 44100


def test_stereo_whose_channels_cancel_is_said_so(ljspeech_clips, tmp_path):
    """Antiphase stereo read as plain "silent", though each channel holds speech."""
    voice = tmp_path / "voice"
    voice.mkdir()
    clip = load_audio(ljspeech_clips / "wavs" / f"{LONG}.wav")
    save_audio(voice / "fine.wav", clip, 22050)
    save_audio(voice / "inverted.wav", torch.stack([clip, -clip]), 22050)
    with pytest.raises(RefusedFiles) as refused:
        prepare_dataset(
            voice, tmp_path / "out", split="random", valid_fraction=0, test_fraction=0,
            mixdown=True,
        )  # fmt: skip
    (only,) = refused.value.refused
    assert only.path.name == "inverted.wav" and only.kinds == ("silent",)
    assert only.reason.startswith("silent once its 2 channels are averaged (silent: peak")
    assert only.reason.endswith("they cancel, one is most likely inverted")


def test_a_test_clip_copied_under_another_name_is_refused(ljspeech_clips, tmp_path):
    """Train and test were told apart by name alone: a renamed copy of a test clip in the
    training part was trained on."""
    voice = tmp_path / "voice"
    voice.mkdir()
    for name in (SHORT, LONG):
        shutil.copy(ljspeech_clips / "wavs" / f"{name}.wav", voice / f"{name}.wav")
    shutil.copy(ljspeech_clips / "wavs" / f"{LONG}.wav", voice / "renamed.wav")
    (voice / "train.txt").write_text(f"{SHORT}\nrenamed\n")
    (voice / "test.txt").write_text(f"{LONG}\n")
    out = tmp_path / "out"
    with pytest.raises(InputError) as refused:
        prepare_dataset(voice, out, split="listed")
    assert refused.value.source == str(voice / f"{LONG}.wav")
    assert refused.value.problem.startswith(
        f"a test file holds the same audio as {voice / 'renamed.wav'}, which would be trained on"
    )
    assert not out.exists()


def test_an_unreadable_folder_or_file_is_named_not_left_out(ljspeech_clips, tmp_path):
    """A folder it may not read was left out unsaid, with or without --skip-bad, and a file
    it may not read was "not a readable audio file (System error)"; a linked folder's files
    were left out too. Run without root's power to read past permissions."""
    voice = tmp_path / "voice"
    (voice / "open").mkdir(parents=True)
    (voice / "locked").mkdir()
    (tmp_path / "elsewhere").mkdir()
    wavs = ljspeech_clips / "wavs"
    shutil.copy(wavs / f"{LONG}.wav", voice / "a.wav")
    shutil.copy(wavs / f"{SHORT}.wav", voice / "locked" / "b.wav")
    shutil.copy(wavs / f"{SHORT}.wav", voice / "open" / "c.wav")
    shutil.copy(wavs / f"{LONG}.wav", tmp_path / "elsewhere" / "d.wav")
    (voice / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    tmp_path.chmod(0o755)
    (voice / "locked").chmod(0)
    (voice / "open" / "c.wav").chmod(0)
    out = tmp_path / "out"

    def prepare(*flags):
        return vocoder(
            "prepare", voice, "--out", out, *ALL_TRAIN, *flags,
            preexec_fn=without_reading_past_permissions,
        )  # fmt: skip

    try:
        refused, skipped = prepare(), prepare("--skip-bad")
    finally:
        (voice / "locked").chmod(0o755)
    assert refused.returncode == 2, refused.stderr
    assert errors(refused) == [
        f"error: {voice / 'locked'}: cannot read this folder (permission denied)",
        f"error: {voice / 'open' / 'c.wav'}: cannot read this file (permission denied)",
        f"error: {voice}: 2 file(s) refused (2 unreadable): pass --skip-bad to leave them out",
    ]
    assert skipped.returncode == 0, skipped.stderr
    assert skipped.stdout.splitlines()[-3:] == [
        "rejected 2 file(s):",
        f"  {voice / 'locked'}: cannot read this folder (permission denied)",
        f"  {voice / 'open' / 'c.wav'}: cannot read this file (permission denied)",
    ]
    assert read_filelist(out / "train.txt") == [voice / "a.wav", voice / "linked" / "d.wav"]
    rejected = json.loads((out / "manifest.json").read_text())["rejected"]
    assert [r["path"] for r in rejected] == [str(voice / "locked"), str(voice / "open" / "c.wav")]


def test_channels_that_cancel_are_said_so_whatever_the_name(ljspeech_clips, tmp_path):
    """A name that is not UTF-8 made the loudest channel unreadable, so the file was plain
    "silent" again."""
    clip = load_audio(ljspeech_clips / "wavs" / f"{LONG}.wav")
    path = tmp_path / os.fsdecode(b"inverted\xff.wav")
    save_audio(path, torch.stack([clip, -clip]), 22050)
    with pytest.raises(InputError) as caught:
        check_audio(path, 22050, 16000, mixdown=True)
    assert caught.value.problem.startswith("silent once its 2 channels are averaged")

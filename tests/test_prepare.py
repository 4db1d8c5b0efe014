"""`prepare_dataset` and `vocoder prepare` end to end on a few real clips."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vocoder.audio import load_audio, resample, save_audio
from vocoder.data.audio_checks import RefusedFiles
from vocoder.data.filelist import read_filelist
from vocoder.data.prepare import (
    check_prepared,
    mel_config_hash,
    prepare_dataset,
    source_fingerprint,
)
from vocoder.errors import InputError, Remedy, remedy
from vocoder.features import MelConfig
from vocoder.train.config import load_experiment_config

REPO = Path(__file__).resolve().parents[1]
TRAIN = ["LJ001-0002", "LJ001-0008"]
TEST = ["LJ001-0026"]


def make_ljspeech(root: Path, source: Path, extra_train: tuple[str, ...] = ()) -> Path:
    """A tiny LJ Speech folder: three real clips, listed split, plus `extra_train` ids."""
    (root / "wavs").mkdir(parents=True)
    rows = {}
    for line in (source / "metadata.csv").read_text().splitlines():
        rows[line.split("|", 1)[0]] = line
    for utt in TRAIN + TEST:
        (root / "wavs" / f"{utt}.wav").write_bytes((source / "wavs" / f"{utt}.wav").read_bytes())
    metadata = [rows[u] for u in TRAIN + TEST] + [f"{u}|text|text" for u in extra_train]
    (root / "metadata.csv").write_text("\n".join(metadata) + "\n")
    (root / "train.txt").write_text("\n".join(TRAIN + list(extra_train)) + "\n")
    (root / "test.txt").write_text("\n".join(TEST) + "\n")
    return root


@pytest.fixture
def dataset(tmp_path, ljspeech_clips) -> Path:
    return make_ljspeech(tmp_path / "data", ljspeech_clips)


@pytest.fixture
def broken_dataset(tmp_path, ljspeech_clips) -> Path:
    root = make_ljspeech(tmp_path / "data", ljspeech_clips, extra_train=("x",))
    (root / "wavs" / "x.wav").write_text("this is a text file, not audio\n")
    return root


def test_prepare_end_to_end(dataset, tmp_path):
    out = tmp_path / "out"
    calls = []
    summary = prepare_dataset(
        dataset, out, progress=lambda done, total, path: calls.append((done, total))
    )
    assert (summary.layout, summary.split) == ("ljspeech", "listed")
    assert summary.counts == {"train": 1, "valid": 1, "test": 1}
    assert summary.accepted == 3 and not summary.rejected
    assert calls == [(1, 3), (2, 3), (3, 3)]
    seconds = sum(load_audio(dataset / "wavs" / f"{u}.wav").numel() for u in TRAIN + TEST) / 22050
    assert summary.total_hours == pytest.approx(seconds / 3600)

    listed = [p for part in ("train", "valid", "test") for p in read_filelist(out / f"{part}.txt")]
    assert sorted(p.stem for p in listed) == sorted(TRAIN + TEST)
    assert read_filelist(out / "test.txt") == [(dataset / "wavs" / "LJ001-0026.wav").resolve()]
    assert not (out / "mels").exists()  # training computes mels from the audio

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mel_config_hash"] == mel_config_hash(MelConfig())
    assert manifest["mel_config"]["hop_length"] == 256 and manifest["counts"]["test"] == 1
    assert not (out / "wavs").exists()  # nothing needed resampling
    assert not list(out.glob(".*"))  # no marker or temp file left


def test_a_flat_ljspeech_folder_has_its_audio_beside_metadata(dataset, tmp_path):
    for wav in (dataset / "wavs").iterdir():  # metadata.csv and the audio side by side
        wav.rename(dataset / wav.name)
    (dataset / "wavs").rmdir()
    summary = prepare_dataset(dataset, tmp_path / "out")
    assert summary.layout == "ljspeech" and summary.accepted == 3 and not summary.rejected
    assert read_filelist(tmp_path / "out" / "test.txt") == [dataset.resolve() / "LJ001-0026.wav"]


def test_rerun_refuses_without_force(dataset, tmp_path):
    out = tmp_path / "out"
    prepare_dataset(dataset, out)
    before = (out / "manifest.json").read_text()
    with pytest.raises(InputError, match="already prepared.*force=True"):
        prepare_dataset(dataset, out)
    with pytest.raises(InputError, match="different mel config.*center True -> False.*force=True"):
        prepare_dataset(dataset, out, mel_config=MelConfig.preset("hifigan"))
    assert (out / "manifest.json").read_text() == before
    prepare_dataset(dataset, out, mel_config=MelConfig.preset("hifigan"), force=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["mel_config_hash"] == mel_config_hash(MelConfig.preset("hifigan"))
    assert manifest["mel_config"]["center"] is False


def test_bad_file_raises_then_skip_bad_lists_it(broken_dataset, tmp_path):
    out = tmp_path / "out"
    bad = broken_dataset / "wavs" / "x.wav"
    with pytest.raises(RefusedFiles) as caught:
        prepare_dataset(broken_dataset, out)
    assert caught.value.source == str(broken_dataset)
    assert caught.value.problem == "1 file(s) refused (1 unreadable)"
    [refused] = caught.value.refused
    assert refused.path == bad and refused.reason.startswith("not a readable audio file")
    assert caught.value.remedies == (remedy("to leave them out", skip_bad=True),)
    assert not out.exists()  # a refused run writes nothing
    summary = prepare_dataset(broken_dataset, out, skip_bad=True)
    assert [r.path for r in summary.rejected] == [bad]
    assert summary.rejected[0].reason == refused.reason
    assert summary.accepted == 3
    listed = read_filelist(out / "train.txt") + read_filelist(out / "valid.txt")
    assert bad not in listed and len(listed) == 2
    assert json.loads((out / "manifest.json").read_text())["rejected"][0]["path"] == str(bad)


def test_folder_checks_each_file(tmp_path, ljspeech_clips):
    voice = tmp_path / "voice"
    voice.mkdir()
    clean = load_audio(ljspeech_clips / "wavs" / "LJ001-0008.wav")
    save_audio(voice / "good.wav", clean, 22050)
    stereo_8k = torch.stack([clean, 0.5 * clean])
    save_audio(voice / "stereo8k.flac", resample(stereo_8k, 22050, 8000), 8000)
    save_audio(voice / "silent.wav", clean * 5e-4, 22050)
    save_audio(voice / "clipped.wav", (clean * 30).clamp(-1, 1), 22050)
    save_audio(voice / "short.wav", clean[:4000], 22050)
    (voice / "empty.wav").write_bytes(b"")
    out = tmp_path / "out"
    summary = prepare_dataset(
        voice, out, split="random", valid_fraction=0.0, test_fraction=0.0, skip_bad=True
    )
    reasons = {r.path.name: r.reason for r in summary.rejected}
    assert summary.counts["train"] == 1
    assert "2 channels" in reasons["stereo8k.flac"]
    stereo = next(r for r in summary.rejected if r.path.name == "stereo8k.flac")
    # both settings in one remedy: --mixdown alone would have it refused for its rate next
    assert "sample rate 8000 Hz, expected 22050 Hz" in reasons["stereo8k.flac"]
    assert stereo.remedies == (
        Remedy((("mixdown", True), ("resample", True)), "to average and convert it"),
    )
    assert stereo.kinds == ("channels", "sample_rate")
    assert "silent" in reasons["silent.wav"]
    assert "clipped" in reasons["clipped.wav"]
    assert "too short" in reasons["short.wav"]
    assert "empty" in reasons["empty.wav"]
    assert len(reasons) == 5

    summary = prepare_dataset(
        voice,
        out,
        split="random",
        valid_fraction=0.0,
        test_fraction=0.0,
        skip_bad=True,
        resample=True,
        mixdown=True,
        force=True,
    )
    assert summary.counts["train"] == 2 and summary.rewritten == 1
    written = out / "wavs" / "stereo8k.wav"
    assert written in read_filelist(out / "train.txt")
    assert load_audio(written).numel() == pytest.approx(clean.numel(), abs=4)


def test_every_bad_file_is_refused_in_one_run(tmp_path, ljspeech_clips):
    """Without skip_bad every file is checked before the run refuses: the bad ones all in
    one error, each with its problem, counted by kind, with the settings that fix a kind;
    the files written before the first bad one are taken back, the folder not left."""
    voice = tmp_path / "voice"
    voice.mkdir()
    clean = load_audio(ljspeech_clips / "wavs" / "LJ001-0008.wav")
    save_audio(voice / "a_good.wav", clean, 22050)
    save_audio(voice / "b_at16k.wav", resample(clean, 22050, 16000), 16000)
    save_audio(voice / "c_stereo.wav", torch.stack([clean, 0.5 * clean]), 22050)
    save_audio(voice / "d_short.wav", clean[:4000], 22050)
    save_audio(voice / "e_silent.wav", clean * 5e-4, 22050)
    # at another rate and too short there too: --resample would not save it
    save_audio(voice / "f_short16k.wav", resample(clean[:4000], 22050, 16000), 16000)
    (voice / "g_bad.wav").write_text("not audio")
    out = tmp_path / "new" / "out"
    options = dict(split="random", valid_fraction=0.0, test_fraction=0.0)
    with pytest.raises(RefusedFiles) as caught:
        prepare_dataset(voice, out, **options)
    error = caught.value
    reasons = {r.path.name: r.reason for r in error.refused}
    assert sorted(reasons) == [*NOT_AT_22K, *BAD]
    assert reasons["b_at16k.wav"] == "sample rate 16000 Hz, expected 22050 Hz"
    assert reasons["c_stereo.wav"] == "has 2 channels"
    assert reasons["f_short16k.wav"].startswith("too short: 4001 samples at 22050 Hz, less")
    assert reasons["g_bad.wav"].startswith("not a readable audio file")
    assert error.problem == (
        "6 file(s) refused (1 unreadable, 1 multi-channel, 1 at another sample rate, "
        "1 silent, 2 too short)"
    )
    assert error.remedies == (
        remedy("to convert the sample rates", resample=True),
        remedy("to average the channels", mixdown=True),
        remedy("to leave out the rest", skip_bad=True),
    )
    assert error.unfixable == 4
    lines = str(error).splitlines()
    assert lines[0] == (
        f"{voice}: {error.problem}; set resample=True to convert the sample rates, "
        "mixdown=True to average the channels and skip_bad=True to leave out the rest"
    )
    assert lines[1:3] == [
        f"  {voice / 'b_at16k.wav'}: {reasons['b_at16k.wav']}; set resample=True to convert it",
        f"  {voice / 'c_stereo.wav'}: has 2 channels; set mixdown=True to average them",
    ]
    assert len(lines) == 7
    assert not (tmp_path / "new").exists()

    # b and c are written into out/wavs before d is refused: taken back again
    seen = []

    def progress(done, total, path):
        seen.append(sorted(p.name for p in out.rglob("*")) if out.is_dir() else [])

    with pytest.raises(RefusedFiles) as caught:
        prepare_dataset(voice, out, **options, resample=True, mixdown=True, progress=progress)
    assert seen[2] == [".prepare-incomplete.json", "b_at16k.wav", "c_stereo.wav", "wavs"]
    assert [r.path.name for r in caught.value.refused] == BAD
    # its length at 22050 Hz, computed above, is the one resampling it gives
    assert caught.value.refused[2].reason == reasons["f_short16k.wav"]
    assert caught.value.remedies == (remedy("to leave them out", skip_bad=True),)
    assert not (tmp_path / "new").exists()
    summary = prepare_dataset(voice, out, **options, resample=True, mixdown=True, skip_bad=True)
    assert summary.rewritten == 2 and len(summary.rejected) == 4


NOT_AT_22K = ["b_at16k.wav", "c_stereo.wav"]  # --resample and --mixdown fix these
BAD = ["d_short.wav", "e_silent.wav", "f_short16k.wav", "g_bad.wav"]


def test_a_path_that_is_not_utf8_is_refused_by_name(tmp_path, ljspeech_clips):
    """A file named in another encoding crashed the run with a UnicodeEncodeError: its path
    cannot go into a filelist (UTF-8 text), so it is refused by name, and left out with
    skip_bad; the other files of its folder are read and listed."""
    voice = tmp_path / "voice"
    voice.mkdir()
    clip = ljspeech_clips / "wavs" / f"{TRAIN[0]}.wav"
    (voice / "good.wav").write_bytes(clip.read_bytes())
    bad = voice / os.fsdecode(b"bad\xffname.wav")
    bad.write_bytes(clip.read_bytes())
    options = dict(split="random", valid_fraction=0, test_fraction=0)
    with pytest.raises(RefusedFiles) as caught:
        prepare_dataset(voice, tmp_path / "out", **options)
    assert caught.value.problem == "1 file(s) refused (1 with a path that is not UTF-8)"
    [refused] = caught.value.refused
    assert refused.path == bad and refused.reason.startswith("path is not valid UTF-8")
    summary = prepare_dataset(voice, tmp_path / "out", skip_bad=True, **options)
    assert [r.path for r in summary.rejected] == [bad]
    assert read_filelist(tmp_path / "out" / "train.txt") == [voice / "good.wav"]


def test_source_fingerprint_is_of_what_the_scan_reads(tmp_path):
    """The fingerprint left out linked folders (so a change there went unseen), and a name
    that is not UTF-8 crashed it."""
    voice, elsewhere = tmp_path / "voice", tmp_path / "elsewhere"
    voice.mkdir()
    elsewhere.mkdir()
    (voice / "a.wav").write_bytes(b"a")
    (elsewhere / "b.wav").write_bytes(b"b")
    (voice / "linked").symlink_to(elsewhere, target_is_directory=True)
    (voice / "up").symlink_to(voice, target_is_directory=True)  # a loop ends
    before = source_fingerprint(voice)
    (elsewhere / "b.wav").write_bytes(b"bb")
    assert source_fingerprint(voice) != before
    before = source_fingerprint(voice)
    (voice / os.fsdecode(b"bad\xffname.wav")).write_bytes(b"c")
    assert source_fingerprint(voice) != before


def test_random_split_is_drawn_from_the_accepted_files(tmp_path, ljspeech_clips):
    clips = sorted((ljspeech_clips / "wavs").glob("*.wav"))[:6]
    clean, mixed = tmp_path / "clean", tmp_path / "mixed"
    for folder in (clean, mixed):
        folder.mkdir()
        for clip in clips:
            (folder / clip.name).write_bytes(clip.read_bytes())
    for i in range(8):  # bad files that must not take the place of held-out ones
        (mixed / f"bad{i}.wav").write_bytes(b"")
    options = dict(split="random", valid_fraction=0.2, test_fraction=0.2, seed=3, skip_bad=True)
    a = prepare_dataset(clean, tmp_path / "a", **options)
    b = prepare_dataset(mixed, tmp_path / "b", **options)
    assert len(b.rejected) == 8 and a.counts == b.counts == {"train": 4, "valid": 1, "test": 1}
    for part in ("train", "valid", "test"):
        names_a = [p.name for p in read_filelist(tmp_path / "a" / f"{part}.txt")]
        names_b = [p.name for p in read_filelist(tmp_path / "b" / f"{part}.txt")]
        assert names_a == names_b, part

    only_bad = tmp_path / "only_bad"
    only_bad.mkdir()
    (only_bad / "x.wav").write_text("not audio")
    with pytest.raises(InputError, match="no usable audio: all 1 file"):
        prepare_dataset(only_bad, tmp_path / "c", skip_bad=True)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "vocoder", "prepare", *map(str, args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prepare(broken_dataset, tmp_path):
    out = tmp_path / "out"
    bad = broken_dataset / "wavs" / "x.wav"

    result = run_cli(broken_dataset, "--out", out)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    # Not a terminal: no bar, progress goes to the log; the errors are at the end: the
    # file, then the count with the flag that lets the run through.
    lines = [line for line in result.stderr.splitlines() if not line.startswith("prepare: ")]
    assert len(lines) == 2 and lines[0].startswith(f"error: {bad}: not a readable audio file")
    assert lines[0].endswith(")")  # no flag fixes it: the summary line says --skip-bad
    assert lines[1] == (
        f"error: {broken_dataset}: 1 file(s) refused (1 unreadable): "
        "pass --skip-bad to leave them out"
    )
    assert not out.exists()

    result = run_cli(broken_dataset, "--out", out, "--skip-bad")
    assert result.returncode == 0, result.stderr
    assert "rejected 1 file(s):" in result.stdout and str(bad) in result.stdout
    assert "train" in result.stdout and "hours" in result.stdout

    result = run_cli(broken_dataset, "--out", out, "--skip-bad")
    assert result.returncode == 2 and "--force" in result.stderr
    assert "Traceback" not in result.stderr

    result = run_cli(broken_dataset, "--out", out, "--skip-bad", "--mel-preset", "hifigan")
    assert result.returncode == 2 and "different mel config" in result.stderr

    result = run_cli("--help")
    assert result.returncode == 0 and "examples:" in result.stdout
    assert "--skip-bad" in result.stdout and "--splits-dir" in result.stdout


def test_check_prepared_names_the_manifest_and_the_setting(dataset, tmp_path, caplog):
    out = tmp_path / "out"
    prepare_dataset(dataset, out)  # tacotron2 at 22050 Hz, hop 256
    check_prepared(out, MelConfig())
    with pytest.raises(InputError) as caught:
        check_prepared(out, MelConfig.preset("tacotron2", hop_length=300, n_fft=2048))
    assert caught.value.source == str(out / "manifest.json")
    assert "hop_length (256 there, 300 here)" in caught.value.problem
    assert "n_fft (1024 there, 2048 here)" in caught.value.problem
    assert "sample_rate" not in caught.value.problem and "\n" not in str(caught.value)
    # a longer training segment than the clips were checked for pads the short ones: said
    with caplog.at_level(logging.WARNING, logger="vocoder.data.prepare"):
        check_prepared(out, MelConfig(), segment_length=16000)
        assert not caplog.records
        check_prepared(out, MelConfig(), segment_length=16001)
    assert "checked to hold 16000 samples, but data.segment_length is 16001" in caplog.text
    # filelists written by hand (no manifest) are not checked
    (out / "manifest.json").unlink()
    check_prepared(out, MelConfig.preset("hifigan"))
    # a folder that holds neither (the recordings, not what prepare made of them)
    with pytest.raises(InputError) as error:
        check_prepared(dataset / "wavs", MelConfig())
    assert str(error.value) == (
        f"{dataset / 'wavs'}: holds no train.txt or manifest.json: not a folder vocoder "
        "prepare made"
    )


def test_cli_prepare_takes_the_run_config(dataset, tmp_path):
    """--config: the manifest holds the config's features, and its segment length rules."""
    conf = REPO / "recipes" / "custom_voice" / "conf" / "waveflow-24k-hop300.yaml"
    out = tmp_path / "out"
    result = run_cli(dataset, "--out", out, "--config", conf, "--resample")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    features = load_experiment_config(conf).features
    assert manifest["mel_config"] == {**manifest["mel_config"], "hop_length": 300, "n_fft": 2048}
    assert manifest["mel_config_hash"] == mel_config_hash(features)
    assert manifest["segment_length"] == 16200
    check_prepared(out, features)

    result = run_cli(dataset, "--out", tmp_path / "o2", "--config", conf, "--sample-rate", "22050")
    assert result.returncode == 2 and "drop --sample-rate" in result.stderr
    assert not (tmp_path / "o2").exists()

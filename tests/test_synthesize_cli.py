"""`vocoder export` and `vocoder synthesize` end to end, as a user runs them (subprocesses)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vocoder.checkpoint import export_model
from vocoder.cli import build_parser, main
from vocoder.cli import synthesize as synthesize_cli
from vocoder.cli.synthesize import collect_inputs
from vocoder.errors import InputError
from vocoder.features import MelConfig
from vocoder.inference.engine import Synthesizer
from vocoder.inference.sizing import MAX_BATCH
from vocoder.melio import DbNormalization
from vocoder.models import ModelConfig, build_model

REPO = Path(__file__).resolve().parents[1]
WAV = "LJ002-0020.wav"  # 33949 samples, the shortest LJ Speech clip in tests/data
MEL = "LJ001-0028.npy"  # [80, 511], a reference mel


def vocoder(*args: str, preexec_fn=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vocoder", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # as conftest: one thread per test
        preexec_fn=preexec_fn,
    )


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A tiny NanoFlow (80 mels, hop 256), exported in training form, then through
    `vocoder export` to its inference form."""
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    config = ModelConfig(
        family="nanoflow", n_flows=2, n_layers=2, n_group=8, channels=8, embedding_dim=8
    )
    model = build_model(config)
    with torch.no_grad():
        for projection in model.projections:
            projection.weight.normal_(0.0, 0.05)
    export_model(model, MelConfig(), folder / "trained")
    result = vocoder("export", folder / "trained.safetensors", "--out", folder / "tiny")
    assert result.returncode == 0, result.stderr
    assert "inference form" in result.stdout
    assert (folder / "tiny.safetensors").is_file() and (folder / "tiny.json").is_file()
    again = vocoder("export", folder / "trained.safetensors", "--out", folder / "tiny")
    assert again.returncode == 2
    assert again.stderr == (
        f"error: {folder / 'tiny.safetensors'}: already exists (and 1 more); refusing to "
        "overwrite it; pass --force to replace it\n"
    )
    return folder / "tiny.safetensors"


def test_synthesize_mels_and_audio_end_to_end(model_file, ljspeech_clips, tmp_path):
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    shutil.copy(ljspeech_clips / "wavs" / WAV, inputs / "sub" / WAV)
    mel_file = ljspeech_clips / "mels_tacotron2" / MEL
    out = tmp_path / "out"
    result = vocoder(
        "synthesize", "--model", model_file, inputs, mel_file, "--out", out, "--seed", 1
    )
    assert result.returncode == 0, result.stderr
    wav_out, mel_out = out / "sub" / WAV, out / "LJ001-0028.wav"
    copy, from_mel = sf.info(str(wav_out)), sf.info(str(mel_out))
    assert copy.samplerate == from_mel.samplerate == 22050
    assert copy.frames == sf.info(str(inputs / "sub" / WAV)).frames  # trimmed to the input
    assert from_mel.frames == np.load(mel_file).shape[1] * 256
    audio, _ = sf.read(str(mel_out))
    assert np.isfinite(audio).all() and audio.std() > 1e-3
    assert "x real time" in result.stdout and str(out) in result.stdout
    assert "Traceback" not in result.stderr

    before = {p: p.read_bytes() for p in (wav_out, mel_out)}
    refused = vocoder("synthesize", "--model", model_file, inputs, mel_file, "--out", out)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()]
    assert "already exists" in refused.stderr and "--force" in refused.stderr
    assert all(p.read_bytes() == data for p, data in before.items())

    forced = vocoder(
        "synthesize", "--model", model_file, inputs, mel_file, "--out", out, "--force",
        "--seed", 2, "--batch-size", 2, "--chunk-seconds", 1, "--denoise", 0.05,
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert sf.info(str(wav_out)).frames == copy.frames
    assert sf.info(str(mel_out)).frames == from_mel.frames
    assert mel_out.read_bytes() != before[mel_out]


@pytest.mark.parametrize("broken", ["nan.npy", "corrupt.wav"])
def test_a_broken_input_stops_everything_with_one_line(
    broken, model_file, ljspeech_clips, tmp_path
):
    inputs = tmp_path / "in"
    inputs.mkdir()
    if broken == "nan.npy":
        shutil.copy(ljspeech_clips / "mels_tacotron2" / MEL, inputs / "a-good.npy")
    else:  # a folder of audio (in a folder of mels, audio files are taken for outputs)
        shutil.copy(ljspeech_clips / "wavs" / WAV, inputs / "a-good.wav")
    bad = inputs / broken
    if broken == "nan.npy":
        mel = np.load(ljspeech_clips / "mels_tacotron2" / MEL)[:, :50]
        mel[3, 7] = np.nan
        np.save(bad, mel)
    else:
        bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(100))
    out = tmp_path / "out"
    result = vocoder("synthesize", "--model", model_file, inputs, "--out", out)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and broken in lines[0]
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.rglob("*"))  # nothing written, not even the good one


def test_a_file_list_names_inputs_relative_to_its_folder(model_file, ljspeech_clips, tmp_path):
    mel = np.load(ljspeech_clips / "mels_tacotron2" / MEL)[:, :20]
    lists = tmp_path / "lists"
    (lists / "sub").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    np.save(lists / "sub" / "a.npy", mel)
    np.save(tmp_path / "elsewhere" / "b.npy", mel[:, :12])
    listing = lists / "files.txt"
    # relative to the list's folder, not to the working directory (the repository)
    listing.write_text("# two mels\n\nsub/a.npy\n  ../elsewhere/b.npy  \n")
    out = tmp_path / "out"
    result = vocoder("synthesize", "--model", model_file, listing, "--out", out, "--seed", 1)
    assert result.returncode == 0, result.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.wav")) == [
        "b.wav",  # reaches above the list's folder: named by its stem
        "sub/a.wav",  # keeps its path below the list's folder
    ]
    assert sf.info(str(out / "sub" / "a.wav")).frames == 20 * 256
    assert sf.info(str(out / "b.wav")).frames == 12 * 256
    assert "2 file(s)" in result.stdout

    # errors name the list and the line
    listing.write_text("sub/a.npy\n\nsub/missing.npy\n")
    with pytest.raises(InputError) as info:
        collect_inputs([str(listing)], out)
    assert info.value.source == f"{listing}:3" and "missing.npy" in info.value.problem
    listing.write_text("sub/a.npy\nother.txt\n")
    with pytest.raises(InputError, match="cannot name another file list") as info:
        collect_inputs([str(listing)], out)
    assert info.value.source == f"{listing}:2"
    # a byte-order mark (Windows editors write one) is not part of the first entry
    listing.write_bytes(b"\xef\xbb\xbf# from Notepad\r\nsub/a.npy\r\n")
    jobs = collect_inputs([str(listing)], out)
    assert [job.source for job in jobs] == [lists / "sub" / "a.npy"]
    listing.write_text("# nothing\n\n")
    with pytest.raises(InputError, match="names no files"):
        collect_inputs([str(listing)], out)
    # a file named twice (by the list and as a folder's member) is synthesized once
    listing.write_text("sub/a.npy\n")
    jobs = collect_inputs([str(listing), str(lists)], tmp_path / "out2")
    assert [job.output for job in jobs] == [tmp_path / "out2" / "sub" / "a.wav"]


def test_totals_add_up_and_warnings_say_so(model_file, tmp_path):
    # a clip whose length is not a whole number of hops, and a log10 mel (a warning)
    clip = REPO / "app" / "examples" / "LJ050-0030.wav"  # 42397 samples: 165.6 hops
    mel = tmp_path / "log10.npy"
    np.save(mel, np.full((80, 20), -5.0, np.float32))
    out = tmp_path / "out"
    result = vocoder(
        "synthesize", "--model", model_file, clip, mel, "--out", out, "--seed", 0,
        "--batch-size", 2,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    samples = sf.info(str(out / "LJ050-0030.wav")).frames + sf.info(str(out / "log10.wav")).frames
    assert samples == 42397 + 20 * 256
    # the total counts the audio written, not the padding synthesized past a clip's end
    assert f"synthesized 2 file(s), {samples / 22050:.2f} s of audio" in result.stdout
    warning, again = result.stderr.strip().splitlines()
    assert warning.startswith(f"warning: {mel}: mel floor -5.00") and "log10" in warning
    assert again == (
        "warning: 1 of 1 mel(s) look like another mel convention (each said above): "
        "check --mel-format"
    )  # the other input is audio


def test_earlier_outputs_inside_an_input_folder_are_not_inputs(tmp_path):
    folder = tmp_path / "mels"
    (folder / "wav").mkdir(parents=True)
    np.save(folder / "a.npy", np.full((80, 20), -5.0, np.float32))
    sf.write(folder / "wav" / "a.wav", np.zeros(5120, np.float32), 22050)  # a first run's
    # a rerun (with --force) replaces a.wav instead of refusing it as "an input too"
    jobs = collect_inputs([str(folder)], folder / "wav")
    assert [(job.source, job.output) for job in jobs] == [
        (folder / "a.npy", folder / "wav" / "a.wav")
    ]
    with pytest.raises(InputError, match="is an input too"):  # named as the input itself
        collect_inputs([str(folder / "wav")], folder / "wav")
    # an earlier run into another folder: its audio is not taken for inputs (it was
    # synthesized again, and moved the seed of every file after it)
    jobs = collect_inputs([str(folder)], tmp_path / "second")
    assert [job.source for job in jobs] == [folder / "a.npy"]
    # a folder of audio only is copy-synthesized; audio named by itself is an input
    assert [job.source for job in collect_inputs([str(folder / "wav")], tmp_path / "o")] == [
        folder / "wav" / "a.wav"
    ]
    sf.write(folder / "b.wav", np.zeros(5120, np.float32), 22050)
    assert [job.source for job in collect_inputs([str(folder)], tmp_path / "o")] == [
        folder / "a.npy"
    ]
    named = collect_inputs([str(folder), str(folder / "b.wav")], tmp_path / "o")
    assert [job.source for job in named] == [folder / "a.npy", folder / "b.wav"]


def test_meanvar_stats_are_checked_against_the_model_and_named(
    model_file, ljspeech_clips, tmp_path, capsys
):
    ln = np.load(ljspeech_clips / "mels_tacotron2" / MEL)
    log10 = ln / np.log(10)
    mean, scale = log10.mean(axis=1), log10.std(axis=1)
    np.save(tmp_path / "m.npy", (log10 - mean[:, None]) / scale[:, None])
    np.save(tmp_path / "stats.npy", np.stack([mean, scale]))
    np.save(tmp_path / "short.npy", np.stack([mean, scale])[:, :79])
    args = ["synthesize", "--model", str(model_file), str(tmp_path / "m.npy"), "--seed", "0"]
    args += ["--mel-format", "meanvar", "--stats"]
    assert main([*args, str(tmp_path / "stats.npy"), "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    # the stats file is named (the mel was, and only once it had been read)
    assert main([*args, str(tmp_path / "short.npy"), "--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'short.npy'}: statistics have 79 bins, the model 80\n"
    )
    assert not (tmp_path / "b").exists()


def test_the_symmetric_db_hint_can_be_followed(model_file, ljspeech_clips, tmp_path, caplog):
    """The range warning said "with the symmetric normalization", which no flag could set."""
    ln = np.load(ljspeech_clips / "mels_tacotron2" / MEL)
    db = DbNormalization(symmetric=True).from_ln(torch.from_numpy(ln)).clamp(-4, 4)
    np.save(tmp_path / "sym.npy", db.numpy())
    # the same mel in ln, with the cells the normalization clipped at its floor
    np.save(tmp_path / "ln.npy", DbNormalization(symmetric=True).to_ln(db).numpy())
    base = ["synthesize", "--model", str(model_file), "--seed", "0", "--precision", "fp32"]
    assert main([*base, str(tmp_path / "sym.npy"), "--out", str(tmp_path / "a")]) == 0
    hint = "pass --mel-format db-normalized --db-normalization symmetric=true"
    assert hint in caplog.text
    # and again after the totals, where a run of thousands of files ends
    assert caplog.records[-1].getMessage() == (
        "1 of 1 mel(s) look like another mel convention (each said above): check --mel-format"
    )
    caplog.clear()
    follow = ["--mel-format", "db-normalized", "--db-normalization", "symmetric=true"]
    assert main([*base, str(tmp_path / "sym.npy"), *follow, "--out", str(tmp_path / "b")]) == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING"]
    assert main([*base, str(tmp_path / "ln.npy"), "--out", str(tmp_path / "c")]) == 0
    followed, _ = sf.read(str(tmp_path / "b" / "sym.wav"))
    reference, _ = sf.read(str(tmp_path / "c" / "ln.wav"))
    assert np.abs(followed - reference).max() <= 2 / 32768


def test_each_mel_is_read_again_for_its_batch(model_file, ljspeech_clips, tmp_path, monkeypatch):
    """Mels are not held from the check to the synthesis (thousands filled the memory): a
    file changed in between is caught, not synthesized from a stale copy."""
    mel = tmp_path / "m.npy"
    shutil.copy(ljspeech_clips / "mels_tacotron2" / MEL, mel)
    check = synthesize_cli._check_inputs

    def check_then_change(jobs, *args):
        check(jobs, *args)
        np.save(mel, np.load(mel)[:, :100])

    monkeypatch.setattr(synthesize_cli, "_check_inputs", check_then_change)
    args = ["synthesize", "--model", str(model_file), str(mel), "--out", str(tmp_path / "o")]
    with pytest.raises(InputError, match="changed while the run was synthesizing"):
        synthesize_cli.run(build_parser("synthesize").parse_args(args))
    assert not (tmp_path / "o").exists()


def test_cpu_synthesizes_utterances_together_unless_told(model_file, tmp_path, monkeypatch):
    sizes = []
    original = Synthesizer.synthesize_batch

    def recording(self, mels, *args, **kwargs):
        sizes.append(len(mels))
        return original(self, mels, *args, **kwargs)

    monkeypatch.setattr(Synthesizer, "synthesize_batch", recording)
    mels = []
    for i in range(MAX_BATCH + 1):
        mels.append(tmp_path / f"m{i}.npy")
        np.save(mels[-1], np.full((80, 10 + i), -5.0, np.float32))
    common = ["synthesize", "--model", str(model_file), *map(str, mels), "--device", "cpu"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    # the CPU row engine lays a batch end to end, no slower than one at a time (README)
    assert sizes == [MAX_BATCH, 1]
    sizes.clear()
    assert main([*common, "--out", str(tmp_path / "b"), "--batch-size", "2"]) == 0
    assert sizes == [2] * (MAX_BATCH // 2) + [1]

"""`vocoder synthesize` under stress: levels, converted inputs, streamed FLAC, a full disk,
SIGTERM (subprocesses, as a user or an operator meets them)."""

from __future__ import annotations

import ctypes
import errno
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from test_audio import orphan_of_a_killed_write
from test_synthesize_cli import REPO, WAV, vocoder

from vocoder.audio import pcm16_clipped, save_audio
from vocoder.checkpoint import export_model
from vocoder.features import MelConfig
from vocoder.models import ModelConfig, build_model

PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2  # linux/prctl.h, capability.h


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A tiny NanoFlow (80 mels, hop 256) whose output is about sigma * noise."""
    torch.manual_seed(0)
    config = ModelConfig(
        family="nanoflow", n_flows=2, n_layers=2, n_group=8, channels=8, embedding_dim=8
    )
    weights, _ = export_model(build_model(config), MelConfig(), tmp_path_factory.mktemp("m") / "t")
    return weights


def streamed_flac(source: Path, target: Path) -> Path:
    """`source` as a FLAC whose STREAMINFO says "total samples: 0", as a streaming encoder
    writes it (allowed by the FLAC format: length unknown)."""
    audio, rate = sf.read(str(source), dtype="int16")
    sf.write(str(target), audio, rate, subtype="PCM_16")
    data = bytearray(target.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO comes first
    # STREAMINFO starts at byte 8; its total-samples field is the low 4 bits of byte 13
    # and bytes 14 to 17 (36 bits)
    data[8 + 13] &= 0xF0
    data[8 + 14 : 8 + 18] = b"\0\0\0\0"
    target.write_bytes(bytes(data))
    assert sf.info(str(target)).frames != len(audio)  # libsndfile no longer knows the length
    return target


def test_clipping_is_reported_and_peak_normalize_prevents_it(model_file, ljspeech_clips, tmp_path):
    mel = ljspeech_clips / "mels_tacotron2" / "LJ001-0028.npy"
    loud = ["synthesize", "--model", model_file, mel, "--seed", "1", "--sigma", "4"]
    result = vocoder(*loud, "--out", tmp_path / "a")
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith(str(tmp_path / "a")))
    assert "sample(s) clipped, peak" in line and "dBFS" in line
    assert "1 of 1 file(s) clipped" in result.stdout.splitlines()[-1]
    result = vocoder(*loud, "--out", tmp_path / "b", "--peak-normalize", "-1")
    assert result.returncode == 0, result.stderr
    audio, _ = sf.read(str(tmp_path / "b" / "LJ001-0028.wav"))
    assert np.abs(audio).max() == pytest.approx(10 ** (-1 / 20), abs=1 / 32768)
    assert "nothing clipped" in result.stdout.splitlines()[-1]
    # 0 dBFS: the largest level 16-bit PCM stores; it called every file clipped before
    result = vocoder(*loud, "--out", tmp_path / "d", "--peak-normalize", "0")
    assert result.returncode == 0 and "nothing clipped" in result.stdout.splitlines()[-1]
    audio, _ = sf.read(str(tmp_path / "d" / "LJ001-0028.wav"), dtype="int16")
    assert np.abs(audio.astype(np.int32)).max() == 32767
    for wrong in ("3", "-inf", "-1e9", "nan"):  # -inf wrote silence and said nothing
        bad = vocoder(*loud, "--out", tmp_path / "c", f"--peak-normalize={wrong}")
        assert bad.returncode == 2, wrong
        assert "--peak-normalize must be between -90 and 0 dBFS" in bad.stderr, bad.stderr
    assert not (tmp_path / "c").exists()


def test_clipping_counts_what_16_bit_pcm_cannot_store():
    lsb = 1 / 32768
    audio = torch.tensor([-1.0, -1.0 - 0.4 * lsb, 1 - lsb, 1 - 0.4 * lsb, -1.0 - 0.6 * lsb, 1.0])
    assert pcm16_clipped(audio).tolist() == [False, False, False, True, True, True]


def test_resampled_or_mixed_down_inputs_are_named(model_file, ljspeech_clips, tmp_path):
    audio, rate = sf.read(str(ljspeech_clips / "wavs" / WAV))
    stereo = np.stack([audio, audio], axis=1)
    sf.write(str(tmp_path / "stereo44k.wav"), np.repeat(stereo, 2, axis=0), 2 * rate)
    result = vocoder(
        "synthesize", "--model", model_file, tmp_path / "stereo44k.wav", "--out", tmp_path / "o"
    )
    assert result.returncode == 0, result.stderr
    assert (
        f"{tmp_path / 'stereo44k.wav'}: 2 channels mixed down to mono, resampled 44100 -> "
        "22050 Hz" in result.stderr
    )


def test_a_streamed_flac_is_read_by_decoding(model_file, ljspeech_clips, tmp_path):
    flac = streamed_flac(ljspeech_clips / "wavs" / WAV, tmp_path / "streamed.flac")
    result = vocoder("synthesize", "--model", model_file, flac, "--out", tmp_path / "o")
    assert result.returncode == 0, result.stderr
    assert sf.info(str(tmp_path / "o" / "streamed.wav")).frames == 33949


def limit_file_size(size: int):
    """For a subprocess: files larger than `size` bytes fail to write (EFBIG), as on a full
    disk. SIGXFSZ, which would kill the process instead, is ignored."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return apply


def run_limited(size: int, *args) -> subprocess.CompletedProcess:
    """`vocoder *args` in a subprocess whose files cannot grow over `size` bytes."""
    return vocoder(*args, preexec_fn=limit_file_size(size))


def test_a_full_disk_is_one_line_and_earlier_outputs_stay(model_file, ljspeech_clips, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    earlier = out / "earlier.wav"
    earlier.write_bytes(b"RIFF an earlier output")
    mel = ljspeech_clips / "mels_tacotron2" / "LJ001-0028.npy"  # 511 frames: 262 kB of wav
    result = run_limited(100_000, "synthesize", "--model", model_file, mel, "--out", out)
    assert result.returncode == 2, result.stderr
    message = os.strerror(errno.EFBIG)
    assert result.stderr.strip().splitlines() == [
        f"error: {out / 'LJ001-0028.wav'}: could not be written: {message[0].lower()}"
        f"{message[1:]} (out of disk space, quota or file size limit)"
    ], result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["earlier.wav"]  # no half file, no temp
    assert earlier.read_bytes() == b"RIFF an earlier output"


def test_sigterm_leaves_no_empty_output_folder(model_file, tmp_path):
    mel = tmp_path / "long.npy"
    np.save(mel, np.full((80, 20000), -5.0, dtype=np.float32))  # 5.1 M samples to make
    out = tmp_path / "new" / "out"
    command = [sys.executable, "-m", "vocoder", "synthesize", "--model", str(model_file)]
    process = subprocess.Popen(
        [*command, str(mel), "--out", str(out)],
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not out.is_dir() and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read().decode()
            time.sleep(0.005)
        assert out.is_dir(), "the output folder never appeared"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=120)
    err = process.stderr.read().decode()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.endswith("terminated\n") and "Traceback" not in err
    assert not (tmp_path / "new").exists()  # both folders made for the run are gone


def mel_folder(folder: Path, ljspeech_clips: Path, count: int, frames: int) -> Path:
    """`count` mels of `frames` frames cut from one real LJ Speech mel, each from its own
    offset (so no two are alike), in `folder`."""
    whole = np.load(ljspeech_clips / "mels_tacotron2" / "LJ001-0028.npy")  # 511 frames
    folder.mkdir(parents=True)
    for i in range(count):
        start = (i * 37) % (whole.shape[1] - frames)
        np.save(folder / f"u{i:03d}.npy", whole[:, start : start + frames])
    return folder


def finished(folder: Path) -> list[str]:
    """The wavs written in `folder` (pathlib's glob also matches the hidden temporaries)."""
    return sorted(p.name for p in folder.glob("*.wav") if not p.name.startswith("."))


def test_an_interrupted_run_is_finished_by_skip_existing_as_it_would_have_ended(
    model_file, ljspeech_clips, tmp_path
):
    mels = mel_folder(tmp_path / "mels", ljspeech_clips, 16, 300)
    common = ["--model", model_file, "--seed", "5", "--batch-size", "1", "--threads", "1"]
    whole = vocoder("synthesize", mels, "--out", tmp_path / "whole", *common)
    assert whole.returncode == 0, whole.stderr
    part = tmp_path / "part"
    process = subprocess.Popen(
        [sys.executable, "-m", "vocoder", "synthesize", str(mels), "--out", str(part)]
        + [str(a) for a in common],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not finished(part) and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()
            time.sleep(0.005)
    finally:
        process.send_signal(signal.SIGINT)
        err = process.communicate(timeout=120)[1]
    assert process.returncode == 130, err
    written = finished(part)
    assert 0 < len(written) < 16, written
    assert (
        f"wrote {len(written)} of 16 file(s); the same command with --skip-existing --seed 5 "
        "writes the others as this run would have\n"
    ) in err
    refused = vocoder("synthesize", mels, "--out", part, *common)
    assert refused.returncode == 2 and "already exists" in refused.stderr
    orphan = orphan_of_a_killed_write(part / "u015.wav")  # as a SIGKILL mid-write leaves
    finish = vocoder("synthesize", mels, "--out", part, *common, "--skip-existing")
    assert finish.returncode == 0, finish.stderr
    assert f"left out {len(written)} of 16 input(s): their outputs exist" in finish.stdout
    assert f"synthesized {16 - len(written)} file(s)" in finish.stdout
    for wav in sorted((tmp_path / "whole").glob("*.wav")):
        assert (part / wav.name).read_bytes() == wav.read_bytes(), wav.name
    assert not orphan.exists() and len(list(part.iterdir())) == 16
    again = vocoder("synthesize", mels, "--out", part, *common, "--skip-existing")
    assert again.returncode == 0 and "left out 16 of 16" in again.stdout
    both = vocoder("synthesize", mels, "--out", part, *common, "--skip-existing", "--force")
    assert both.returncode == 2
    assert "--force and --skip-existing contradict each other" in both.stderr


def test_every_unusable_input_is_said_before_anything_is_synthesized(
    model_file, ljspeech_clips, tmp_path
):
    mels = mel_folder(tmp_path / "mels", ljspeech_clips, 3, 40)
    (mels / "empty.npy").write_bytes(b"")
    np.save(mels / "nan.npy", np.full((80, 40), np.nan, dtype=np.float32))
    result = vocoder("synthesize", mels, "--out", tmp_path / "out", "--model", model_file)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"error: {mels / 'empty.npy'}: ")
    assert lines[1].startswith(f"error: {mels / 'nan.npy'}: ")
    assert lines[2] == "error: nothing synthesized: 2 of 5 inputs cannot be used (each said above)"
    assert not (tmp_path / "out").exists()


def test_linked_folders_are_followed_and_broken_links_said(model_file, ljspeech_clips, tmp_path):
    elsewhere = mel_folder(tmp_path / "elsewhere", ljspeech_clips, 2, 40)
    mels = mel_folder(tmp_path / "mels", ljspeech_clips, 1, 40)
    (mels / "linked").symlink_to(elsewhere, target_is_directory=True)
    (mels / "linked" / "loop").symlink_to(mels, target_is_directory=True)  # back up: once
    mel_folder(mels / "zreal", ljspeech_clips, 1, 40)
    (mels / "alias").symlink_to(mels / "zreal", target_is_directory=True)  # the real one wins
    common = ["--model", model_file, "--seed", "1"]
    done = vocoder("synthesize", mels, "--out", tmp_path / "out", *common)
    assert done.returncode == 0, done.stderr
    made = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.wav"))
    assert made == ["linked/u000.wav", "linked/u001.wav", "u000.wav", "zreal/u000.wav"]
    for broken_link, target in (("gone.npy", "nowhere.npy"), ("more", "unmounted")):
        (mels / broken_link).symlink_to(tmp_path / target)
        broken = vocoder("synthesize", mels, "--out", tmp_path / "out2", *common)
        assert broken.returncode == 2
        assert broken.stderr == (
            f"error: {mels / broken_link}: a broken link (to {tmp_path / target})\n"
        )
        (mels / broken_link).unlink()


def without_reading_past_permissions() -> None:
    """Run before exec: the program then cannot read past file permissions, as root can
    (root gets the capabilities of the bounding set at exec; two are dropped from it)."""
    if os.geteuid() == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if libc.prctl(PR_CAPBSET_DROP, capability) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_an_unreadable_folder_is_said_not_left_out(model_file, ljspeech_clips, tmp_path):
    mels = mel_folder(tmp_path / "mels", ljspeech_clips, 1, 40)
    locked = mel_folder(mels / "locked", ljspeech_clips, 1, 40)
    tmp_path.chmod(0o755)
    mels.chmod(0o755)
    locked.chmod(0)
    try:
        result = vocoder(
            "synthesize", mels, "--out", tmp_path / "out", "--model", model_file,
            preexec_fn=without_reading_past_permissions,
        )  # fmt: skip
    finally:
        locked.chmod(0o755)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {locked}: cannot read this folder (permission")


def test_every_input_not_found_is_said(model_file, ljspeech_clips, tmp_path):
    mels = mel_folder(tmp_path / "mels", ljspeech_clips, 1, 40)
    listing = tmp_path / "list.txt"
    listing.write_text("mels/u000.npy\nmels/gone.npy\n\nmels/lost.npy\n")
    result = vocoder(
        "synthesize", tmp_path / "nope", listing, mels, "--out", tmp_path / "out",
        "--model", model_file,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        # named by the list and the folder: one input (it was synthesized twice, two seeds)
        f"{mels / 'u000.npy'}: named twice; synthesized once, to "
        f"{tmp_path / 'out' / 'mels' / 'u000.wav'}",
        f"error: {tmp_path / 'nope'}: no such file or folder",
        f"error: {listing}:2: {tmp_path / 'mels' / 'gone.npy'}: no such file or folder",
        f"error: {listing}:4: {tmp_path / 'mels' / 'lost.npy'}: no such file or folder",
        "error: nothing synthesized: 3 of 4 inputs cannot be found or used (each said above)",
    ]
    assert not (tmp_path / "out").exists()
    # inputs that are there but cannot be read are said in the same run (they were said
    # only once the missing ones had been dealt with)
    (mels / "empty.npy").write_bytes(b"")
    np.save(mels / "wrong-bins.npy", np.zeros((64, 40), dtype=np.float32))
    result = vocoder(
        "synthesize", tmp_path / "nope", mels, "--out", tmp_path / "out", "--model", model_file
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 4, lines
    assert lines[0] == f"error: {tmp_path / 'nope'}: no such file or folder"
    assert lines[1].startswith(f"error: {mels / 'empty.npy'}: ")
    assert lines[2].startswith(f"error: {mels / 'wrong-bins.npy'}: ")
    assert lines[3] == (
        "error: nothing synthesized: 3 of 4 inputs cannot be found or used (each said above)"
    )
    assert not (tmp_path / "out").exists()
    # found but left out by --skip-existing, a missing input is still said
    vocoder("synthesize", mels / "u000.npy", "--out", tmp_path / "done", "--model", model_file)
    skipped = vocoder(
        "synthesize", mels / "u000.npy", tmp_path / "nope", "--out", tmp_path / "done",
        "--model", model_file, "--skip-existing",
    )  # fmt: skip
    assert skipped.returncode == 2
    assert skipped.stderr == f"error: {tmp_path / 'nope'}: no such file or folder\n"
    # an output that exists is said with the missing input, not before it
    refused = vocoder(
        "synthesize", mels / "u000.npy", tmp_path / "nope", "--out", tmp_path / "done",
        "--model", model_file,
    )  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        f"error: {tmp_path / 'nope'}: no such file or folder",
        f"error: {tmp_path / 'done' / 'u000.wav'}: already exists; refusing to overwrite it; "
        "pass --force to replace it",
        "error: nothing synthesized: 2 inputs or outputs cannot be used (each said above)",
    ]


def test_recordings_beside_their_mels_are_never_replaced_or_taken_for_done(
    model_file, ljspeech_clips, tmp_path
):
    """A folder of mels with their recordings, synthesized into itself: the recordings are
    outputs' names that exist but are not vocoder's audio. `--force` replaced them (the
    refusal even advised it) and `--skip-existing` took them for finished outputs."""
    data = mel_folder(tmp_path / "ds", ljspeech_clips, 2, 40)
    recording = (ljspeech_clips / "wavs" / WAV).read_bytes()
    for name in ("u000", "u001"):
        (data / f"{name}.wav").write_bytes(recording)
    for flag in ((), ("--force",), ("--skip-existing",)):
        result = vocoder("synthesize", data, "--out", data, "--model", model_file, *flag)
        assert result.returncode == 2, (flag, result.stderr)
        assert result.stderr.splitlines()[-1] == (
            f"error: {data / 'u000.wav'}: exists (and 1 more) and is not audio vocoder "
            "synthesized (a recording, or an output of a vocoder older than the tag); it is "
            "neither replaced nor skipped: choose another --out folder, or move it aside"
        ), flag
        assert all((data / f"{n}.wav").read_bytes() == recording for n in ("u000", "u001"))


def test_earlier_outputs_in_an_input_folder_are_not_inputs(model_file, ljspeech_clips, tmp_path):
    """Audio vocoder synthesized is tagged so: a rerun into an audio folder resumes (it
    refused its own outputs as inputs), and a second run whose output folder lies in the
    input folder does not copy-synthesize the first run's outputs (it did, moving seeds)."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a", "b"):
        sf.write(
            str(clips / f"{name}.flac"),
            sf.read(str(ljspeech_clips / "wavs" / WAV))[0][:8000],
            22050,
        )
    common = ["--model", model_file, "--seed", "3"]
    first = vocoder("synthesize", clips, "--out", clips, *common)
    assert first.returncode == 0, first.stderr
    assert finished(clips) == ["a.wav", "b.wav"]
    assert sf.SoundFile(str(clips / "a.wav")).software.startswith("vocoder synthesis")
    (clips / "b.wav").unlink()  # as an interrupted run leaves it
    again = vocoder("synthesize", clips, "--out", clips, *common, "--skip-existing")
    assert again.returncode == 0, again.stderr
    assert f"{clips}: left out 1 earlier output(s) of vocoder" in again.stderr
    assert "synthesized 1 file(s)" in again.stdout and finished(clips) == ["a.wav", "b.wav"]
    assert "no --seed" not in again.stderr
    (clips / "b.wav").unlink()
    unseeded = vocoder(
        "synthesize", clips, "--out", clips, "--model", model_file, "--skip-existing"
    )
    assert "no --seed: the files left get new noise" in unseeded.stderr
    forced = vocoder("synthesize", clips, "--out", clips, *common, "--force")
    assert forced.returncode == 0 and "synthesized 2 file(s)" in forced.stdout  # its own
    second = vocoder("synthesize", clips, "--out", clips / "gen2", *common)
    assert second.returncode == 0, second.stderr
    assert finished(clips / "gen2") == ["a.wav", "b.wav"]
    assert (clips / "gen2" / "a.wav").read_bytes() == (clips / "a.wav").read_bytes()  # seeds
    only_outputs = vocoder("synthesize", clips / "gen2", "--out", tmp_path / "o", *common)
    assert only_outputs.returncode == 2
    assert "holds only audio that vocoder synthesized (2)" in only_outputs.stderr


def test_outputs_another_run_writes_meanwhile_are_skipped(
    model_file, ljspeech_clips, tmp_path, monkeypatch, capsys
):
    """Two `--skip-existing` runs sharing an output folder: what the other wrote since this
    one started is left, before synthesis or at the write (the second run died on it)."""
    from vocoder.cli import main
    from vocoder.cli import synthesize as command

    mels = mel_folder(tmp_path / "mels", ljspeech_clips, 3, 40)
    out = tmp_path / "out"
    load = command.Synthesizer.load

    def load_beside_another_run(*args, **kwargs):
        synth = load(*args, **kwargs)
        synthesize_batch = synth.synthesize_batch

        def with_another_writer(mels, **options):
            audio = synthesize_batch(mels, **options)
            for name in ("u000", "u001"):  # the other run's outputs land now
                if not (out / f"{name}.wav").exists():
                    save_audio(out / f"{name}.wav", audio[0], 22050, synthesized=True)
            return audio

        synth.synthesize_batch = with_another_writer
        return synth

    monkeypatch.setattr(command.Synthesizer, "load", load_beside_another_run)
    common = [str(mels), "--out", str(out), "--model", str(model_file), "--batch-size", "1"]
    assert main(["synthesize", *common, "--skip-existing"]) == 0
    assert (
        "synthesized 1 file(s) (2 more written meanwhile by another run)" in capsys.readouterr().out
    )
    assert finished(out) == ["u000.wav", "u001.wav", "u002.wav"]


def test_a_name_that_is_not_utf8_and_an_empty_out(model_file, ljspeech_clips, tmp_path):
    """Under a UTF-8 locale, printing such a name crashed the run after writing its audio."""
    mels = mel_folder(tmp_path / "mels", ljspeech_clips, 1, 40)
    os.rename(mels / "u000.npy", os.fsencode(mels) + b"/caf\xe9.npy")
    result = subprocess.run(
        [sys.executable, "-m", "vocoder", "synthesize", str(mels), "--out", str(tmp_path / "o")]
        + ["--model", str(model_file)],
        capture_output=True,
        cwd=REPO,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONIOENCODING": "utf-8"},
    )
    assert result.returncode == 0, result.stderr.decode()
    assert b"caf\\udce9.wav" in result.stdout
    assert os.path.isfile(os.fsencode(tmp_path / "o") + b"/caf\xe9.wav")
    empty = vocoder("synthesize", mels, "--out", "", "--model", model_file)  # an unset $OUT
    assert empty.returncode == 2
    assert "argument --out/-o: an empty path (an unset variable?)" in empty.stderr


def test_inputs_that_share_an_output_are_all_counted(model_file, ljspeech_clips, tmp_path):
    a = mel_folder(tmp_path / "a", ljspeech_clips, 2, 40)
    b = mel_folder(tmp_path / "b", ljspeech_clips, 2, 40)
    out = tmp_path / "o"
    result = vocoder("synthesize", a, b, a / "u000.npy", "--out", out, "--model", model_file)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"error: {b / 'u000.npy'}: its output {out / 'u000.wav'} is also that of "
        f"{a / 'u000.npy'} (and 1 more input(s) share an output)"
    )

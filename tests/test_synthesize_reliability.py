"""`vocoder synthesize` under stress: levels, converted inputs, streamed FLAC, a full disk,
SIGTERM (subprocesses, as a user or an operator meets them)."""

from __future__ import annotations

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
from test_synthesize_cli import REPO, WAV, vocoder

from vocoder.audio import pcm16_clipped
from vocoder.checkpoint import export_model
from vocoder.features import MelConfig
from vocoder.models import ModelConfig, build_model


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

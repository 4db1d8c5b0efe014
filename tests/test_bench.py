"""The benchmark scripts' own logic (their figures are quoted in the README, not tested)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from inference_speed import parse_args  # noqa: E402


def test_quick_fills_in_defaults_and_keeps_what_was_given():
    quick = parse_args(["--quick"])
    assert (quick.models, quick.cases, quick.repeats) == (
        "waveflow-h16-r64,nanoflow-h16-r128",
        "1x1",
        1,
    )
    given = parse_args(["--quick", "--repeats", "5", "--models", "waveflow-h16-r64"])
    assert (given.models, given.cases, given.repeats) == ("waveflow-h16-r64", "1x1", 5)
    assert parse_args([]).cases == "1x1,1x10,16x1,16x10" and parse_args([]).repeats == 3


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_gpu_check_refuses_a_machine_without_cuda_before_making_anything(ljspeech_clips, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "OUT": str(out), "WORK": str(work), "PYTHON": sys.executable}
    script = ["bash", str(REPO / "bench" / "gpu_check.sh")]
    missing = subprocess.run(
        script, env={**env, "DATA_SRC": str(tmp_path / "none")}, capture_output=True, text=True
    )
    assert missing.returncode == 2 and "no ljspeech-mini copy" in missing.stderr
    # before, it went on through every step, each failing, and exited 0
    no_gpu = subprocess.run(
        script, env={**env, "DATA_SRC": str(ljspeech_clips)}, capture_output=True, text=True
    )
    assert no_gpu.returncode == 2 and "no CUDA GPU here" in no_gpu.stderr
    assert not out.exists() and not work.exists()


@pytest.mark.parametrize(
    ("script", "option", "missing"),
    [("imported_cpu.py", "--checkpoint", "none.pt"), ("train_precision.py", "--data", "none")],
)
def test_a_bench_without_its_input_says_which_option_in_one_line(tmp_path, script, option, missing):
    """Their defaults live in ../shared beside the development checkout, not in a clone."""
    run = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), option, str(tmp_path / missing)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert f"error: {tmp_path / missing}: no such" in last and f"pass {option}" in last


def test_mel_range_chunks_counts_the_false_alarms_by_verdict(ljspeech_clips):
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "mel_range_chunks.py"), "--files", "2",
         "--wavs", str(ljspeech_clips / "wavs")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    assert [int(row[0]) for row in rows] == [1, 5, 10, 16, 20, 24, 32, 40, 48, 64]
    assert all(int(row[1]) > 0 and 0 <= int(row[2]) <= int(row[1]) for row in rows)

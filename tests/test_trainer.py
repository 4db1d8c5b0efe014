"""The trainer: configs, exact resume (clean stop and SIGKILL), guards, EMA, fine-tuning."""

from __future__ import annotations

import errno
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_synthesize_reliability import run_limited

from vocoder.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from vocoder.cli import main
from vocoder.errors import ConfigError
from vocoder.evaluate import evaluate
from vocoder.models import build_model
from vocoder.precision import cpu_bf16_units, default_precision, onednn_bf16
from vocoder.train import run_dir as run_dir_module
from vocoder.train.config import load_experiment_config
from vocoder.train.ema import EMA
from vocoder.train.logging import read_log
from vocoder.train.resume import init_source, init_weights
from vocoder.train.retention import non_finite_tensor
from vocoder.train.run_dir import LOCK_FILE, RunLock
from vocoder.train.signals import StopRequest
from vocoder.train.step import LogLikelihood, train_step
from vocoder.train.trainer import train

REPO = Path(__file__).resolve().parents[1]


def write_filelists(folder: Path, corpus: Path, n_train: int = 6, n_valid: int = 1):
    """train.txt / valid.txt from the corpus's TRAIN ids only (never its test ids)."""
    ids = (corpus / "train.txt").read_text().split()
    wavs = corpus / "wavs"
    folder.mkdir(parents=True, exist_ok=True)
    parts = {"train": ids[:n_train], "valid": ids[n_train : n_train + n_valid]}
    for part, names in parts.items():
        (folder / f"{part}.txt").write_text("".join(f"{wavs / n}.wav\n" for n in names))
    return folder


def tiny_config(tmp_path: Path, corpus: Path, **train) -> Path:
    data = write_filelists(tmp_path / "data", corpus)
    config = {
        "features": {"preset": "tacotron2"},
        "model": {
            "preset": "waveflow-h16-r64",
            "n_flows": 2,
            "n_layers": 2,
            "n_group": 8,
            "channels": 8,
        },
        "data": {
            "prepared": str(data),
            "segment_length": 2048,
            "batch_size": 2,
            "num_workers": 0,
            "valid_max_files": 1,
            "valid_audio_clips": 1,
        },
        "train": {
            "max_steps": 8,
            "lr": 2e-3,
            "log_every": 1,
            "valid_every": 4,
            "checkpoint_every": 100,
            "seed": 7,
            "device": "cpu",
            **train,
        },
    }
    path = tmp_path / "conf.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in read_log(run_dir)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ljspeech_clips):
    """An uninterrupted 8-step run (3 batches per epoch: it crosses two epoch boundaries)."""
    tmp = tmp_path_factory.mktemp("reference")
    conf = tiny_config(tmp, ljspeech_clips)
    run = tmp / "run"
    assert main(["train", "--config", str(conf), "--out", str(run)]) == 0
    return conf, run


# ---- configs ----


def test_presets_overrides_and_resolved_config(reference):
    conf, run = reference
    config = load_experiment_config(conf, ["model.channels=12", "train.lr=1.0e-4"])
    assert config.model.channels == 12 and config.model.family == "waveflow"
    assert config.train.lr == 1e-4 and config.features.hop_length == 256
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert "preset" not in saved["model"] and saved["model"]["channels"] == 8
    assert Path(saved["data"]["prepared"]).is_absolute()


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.hop_length=128", "model.hop_length 128 conflicts with features.hop_length 256"),
        ("model.n_mels=64", "model.n_mels 64 conflicts with features.n_mels 80"),
        ("data.segment_length=2000", "not a multiple of hop_length 256 .try 1792 or 2048"),
        ("train.precision=fp8", "train.precision"),
        ("train.bogus=1", "unknown key"),
        # inf passed "> 0": every step then non-finite, and a NaN checkpoint written
        ("train.lr=.inf", "train.lr must be a finite number above 0, got inf"),
        ("train.lr=.nan", "train.lr must be a finite number above 0, got nan"),
        # numpy's generators refuse a negative seed at the first batch, after the run began
        ("train.seed=-1", r"train.seed must be in \[0, 2\^32\), got -1"),
        ("train.seed=4294967296", r"train.seed must be in \[0, 2\^32\), got 4294967296"),
        ("features.clamp_min=0", "clamp_min must be above 0"),
    ],
)
def test_config_errors_are_clear(reference, override, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment_config(reference[0], [override])


def test_hop_must_be_a_multiple_of_n_group(reference):
    # with that, a segment that is a whole number of hops is a whole number of columns too
    with pytest.raises(ConfigError, match="hop_length 256 must be a multiple of n_group 24"):
        load_experiment_config(reference[0], ["model.n_group=24"])


# ---- the run folder ----


def test_reference_run_logs_and_checkpoints(reference):
    _, run = reference
    steps = losses(run)
    assert sorted(steps) == list(range(1, 9))
    assert all(math.isfinite(v) for v in steps.values())
    assert [p.name for p in list_checkpoints(run)] == ["step-00000008.pt"]
    state = load_checkpoint(latest_checkpoint(run))
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (8, 2, 2)
    valid = read_log(run, kind="valid")
    assert [e["step"] for e in valid] == [4, 8] and all(math.isfinite(e["ll"]) for e in valid)
    # TensorBoard holds the scalars, the validation audio and mel images
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"audio": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    assert {"train/loss", "train/ll", "train/grad_norm", "train/lr", "valid/ll"} <= set(
        tags["scalars"]
    )
    assert any(t.endswith("/synthesized") for t in tags["audio"])
    assert any("mel_synthesized" in t for t in tags["images"])


def test_data_option_sets_the_prepared_folder(reference, tmp_path, ljspeech_clips, monkeypatch):
    conf, _ = reference
    data = write_filelists(tmp_path / "yes", ljspeech_clips)  # a name YAML would read as true
    monkeypatch.chdir(tmp_path)
    args = ["train", "--config", str(conf), "--out", "run", "--max-steps", "1"]
    assert main([*args, "data.prepared=/nowhere", "--data", "yes"]) == 0  # --data wins
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["data"]["prepared"] == str(data)
    assert main([*args, "--force", "--data", "missing"]) == 2


def test_refuses_non_empty_run_dir(reference, tmp_path, capsys):
    conf, _ = reference
    run = tmp_path / "run"
    assert main(["train", "--config", str(conf), "--out", str(run), "--max-steps", "1"]) == 0
    assert main(["train", "--config", str(conf), "--out", str(run)]) == 2
    assert "is not empty; pass --resume" in capsys.readouterr().err


@pytest.mark.parametrize("how", ["", "--force", "--resume"])
def test_a_folder_of_other_files_is_never_cleared_for_a_run(reference, tmp_path, capsys, how):
    """A fresh run deletes an earlier run's eval/ and wav/: in a folder holding no run,
    they are someone's files (a prepare output, recordings), kept."""
    conf, _ = reference
    run = tmp_path / "voice"
    (run / "wav").mkdir(parents=True)
    (run / "wav" / "take-01.wav").write_text("mine")
    (run / "notes.txt").write_text("mine")
    argv = ["train", "--config", str(conf), "--out", str(run), *how.split()]
    assert main(argv) == 2
    assert f"{run}: is not empty and holds no run; train into another folder" in (
        capsys.readouterr().err
    )
    assert (run / "wav" / "take-01.wav").read_text() == "mine"
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt", "wav"]


def test_refuses_to_train_on_test_files(reference, tmp_path, capsys, ljspeech_clips):
    conf, _ = reference
    test = tmp_path / "test.txt"
    test.write_text(f"{ljspeech_clips / 'wavs' / 'LJ001-0002'}.wav\n")  # a training clip
    args = ["train", "--config", str(conf), "--out", str(tmp_path / "run")]
    assert main([*args, f"data.test={test}"]) == 2
    assert "1 training file(s) are in the test list: LJ001-0002" in capsys.readouterr().err


def test_force_starts_over(reference, tmp_path):
    conf, _ = reference
    run = tmp_path / "run"
    assert main(["train", "--config", str(conf), "--out", str(run), "--max-steps", "3"]) == 0
    (run / "notes.txt").write_text("mine")
    args = ["train", "--config", str(conf), "--out", str(run), "--max-steps", "2", "--force"]
    assert main(args) == 0
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002.pt"]
    assert sorted(losses(run)) == [1, 2]
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files go
    # the recipes' evaluate and synthesize outputs describe the old run: they go too
    (run / "eval").mkdir()
    (run / "eval" / "report.json").write_text("{}")
    (run / "wav").mkdir()
    assert main(args) == 0
    assert not (run / "eval").exists() and not (run / "wav").exists()


def test_rolling_back_sets_the_later_checkpoints_aside(reference, tmp_path, caplog, capsys):
    conf, _ = reference
    run = tmp_path / "run"
    args = ["train", "--config", str(conf), "--out", str(run), "train.checkpoint_every=2"]
    # overrides on both sides of an option (argparse alone refused the second one)
    assert main([*args, "--max-steps", "6", "train.valid_every=100"]) == 0
    early = checkpoint_path(run, 2)
    assert main(["train", "--out", str(run), "--resume", str(early), "--max-steps", "3"]) == 0
    # steps 4 and 6 belong to the abandoned line: out of the way, not deleted
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002.pt", "step-00000003.pt"]
    aside = run / "checkpoints" / "set-aside-1"
    assert sorted(p.name for p in aside.iterdir()) == ["step-00000004.pt", "step-00000006.pt"]
    assert "moved the 2 later checkpoint(s) of the run" in caplog.text
    # "go on where it stopped" now means step 3, where it took the old step 6 before
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "4"]) == 0
    assert sorted(losses(run)) == [1, 2, 3, 4]
    assert load_checkpoint(latest_checkpoint(run))["step"] == 4
    # resuming a set-aside checkpoint says how to go back to that line (it said "another
    # run's checkpoints"), with --out or without
    capsys.readouterr()
    for out in (["--out", str(run)], []):
        assert main(["train", *out, "--resume", str(aside / "step-00000006.pt")]) == 2
        err = capsys.readouterr().err
        assert "was set aside by a rollback; to go back to that line, move the files" in err
    assert load_checkpoint(latest_checkpoint(run))["step"] == 4


def test_a_file_system_without_locks_trains_unlocked(tmp_path, monkeypatch, caplog):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(run_dir_module.fcntl, "flock", no_locks)
    lock = RunLock(tmp_path / "run")  # said, not refused as "another trainer"
    assert "cannot lock the run folder" in caplog.text and "another trainer" not in caplog.text
    lock.release()
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_a_second_trainer_on_the_same_run_is_refused(reference, tmp_path, capsys):
    conf, _ = reference
    run = tmp_path / "run"
    assert main(["train", "--config", str(conf), "--out", str(run), "--max-steps", "2"]) == 0
    capsys.readouterr()
    holder = RunLock(run)  # what a trainer still running holds
    try:
        assert main(["train", "--out", str(run), "--resume", "--max-steps", "3"]) == 2
        err = capsys.readouterr().err
        assert f"{run}: another trainer (pid {os.getpid()}) is writing this run" in err
        assert main(["train", "--config", str(conf), "--out", str(run), "--force"]) == 2
        assert [p.name for p in list_checkpoints(run)] == ["step-00000002.pt"]  # untouched
    finally:
        holder.release()
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "3"]) == 0
    assert not (run / LOCK_FILE).exists()  # released and deleted
    # the lock file of a SIGKILLed run (held by no one) neither blocks nor makes the
    # folder "not empty"
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / LOCK_FILE).write_text("12345\n")
    assert main(["train", "--config", str(conf), "--out", str(fresh), "--max-steps", "1"]) == 0


def test_a_max_steps_behind_the_run_is_refused(reference, tmp_path, capsys):
    conf, _ = reference
    run = tmp_path / "run"
    assert main(["train", "--config", str(conf), "--out", str(run), "--max-steps", "3"]) == 0
    before = sorted(p.name for p in run.rglob("*"))
    capsys.readouterr()
    # it said "from step 3 to 2", "finished at step 3" and exited 0, rewriting config.yaml
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "the run is at step 3, past train.max_steps 2; raise it to train on" in err
    assert sorted(p.name for p in run.rglob("*")) == before


def test_a_mistake_in_an_override_is_blamed_on_the_override(reference, tmp_path, capsys):
    conf, _ = reference
    args = ["train", "--config", str(conf), "--out", str(tmp_path / "run")]
    for override, problem in [
        ("train.lrr=1", "override train.lrr=1: train: unknown key(s) lrr"),
        ("train.lr=abc", "override train.lr=abc: train.lr: expected a number, got 'abc'"),
        ("trian.lr=1", "override trian.lr=1: unknown section(s) trian"),
        ("model.n_group=7", "override model.n_group=7: model: hop_length 256 must be a multiple"),
    ]:
        assert main([*args, override]) == 2
        assert capsys.readouterr().err.startswith(f"error: {problem}")
    assert main([*args, "--max-steps", "0"]) == 2
    assert capsys.readouterr().err == "error: --max-steps must be positive, got 0\n"
    conf.with_name("bad.yaml").write_text(conf.read_text().replace("lr: 0.002", "lr: abc"))
    assert (
        main(["train", "--config", str(conf.with_name("bad.yaml")), "--out", str(tmp_path / "r")])
        == 2
    )
    assert capsys.readouterr().err.startswith(f"error: {conf.with_name('bad.yaml')}: train.lr")
    # the file's mistake, with an override beside it: both are named, not the override alone
    bad = ["train", "--config", str(conf.with_name("bad.yaml")), "--out", str(tmp_path / "r")]
    assert main([*bad, "--max-steps", "5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {conf.with_name('bad.yaml')} with train.max_steps=5: train.lr")
    assert not (tmp_path / "run").exists()


def test_a_torchrun_worker_stops_when_its_launcher_is_gone(monkeypatch):
    stop = StopRequest(watch_parent=True)
    assert not stop.poll()
    monkeypatch.setattr(os, "getppid", lambda: 1)  # adopted: the launcher was SIGKILLed
    assert stop.poll() and stop.requested
    assert not StopRequest().poll()  # a single process outlives its shell (nohup)


# ---- exact resume ----


def test_resume_after_clean_stop_gives_the_same_losses(reference, tmp_path):
    conf, ref_run = reference
    run = tmp_path / "run"
    # stop at step 5: mid-epoch (3 batches per epoch)
    assert main(["train", "--config", str(conf), "--out", str(run), "--max-steps", "5"]) == 0
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "8"]) == 0
    expected, got = losses(ref_run), losses(run)
    assert sorted(got) == list(range(1, 9))
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step
    a = load_checkpoint(latest_checkpoint(ref_run))["model"]
    b = load_checkpoint(latest_checkpoint(run))["model"]
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_resume_after_sigkill_gives_the_same_losses(reference, tmp_path):
    conf, ref_run = reference
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "vocoder", "train", "--config", str(conf), "--out", str(run),
        "train.max_steps=100000", "train.checkpoint_every=2", "train.valid_every=100000",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not list_checkpoints(run) and time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read().decode()
            time.sleep(0.01)
        assert list_checkpoints(run), "no checkpoint within 120 s"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    killed_at = load_checkpoint(latest_checkpoint(run))["step"]
    assert killed_at < 8, "the run got too far before the kill to test a resume"
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "8"]) == 0
    expected, got = losses(ref_run), losses(run)
    assert sorted(got) == list(range(1, 9))  # steps logged after the kill were dropped
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-6, abs=1e-7), step


def test_a_repeated_sigterm_still_waits_for_the_checkpoint_and_a_second_ctrl_c_does_not():
    stop, before = StopRequest(), signal.getsignal(signal.SIGTERM)
    with stop.installed():
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # `kill` twice, or a process manager's repeat
        assert stop.requested and stop.signal == signal.SIGTERM  # exits 143 after saving
        with pytest.raises(KeyboardInterrupt):  # Ctrl-C now: stop at once
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGTERM) == before  # the handlers are put back


@pytest.mark.parametrize("workers", [0, 2])
def test_sigterm_stops_after_the_step_with_a_checkpoint(reference, tmp_path, workers):
    """SIGTERM to the whole process group (as `timeout`, Ctrl-C or a scheduler send it)."""
    conf, ref_run = reference
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "vocoder", "train", "--config", str(conf), "--out", str(run),
        "train.max_steps=100000", "train.valid_every=100000", f"data.num_workers={workers}",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while not losses(run) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err[-2000:]  # a script stops too
    stopped = load_checkpoint(latest_checkpoint(run))["step"]
    assert f"stopped at step {stopped}" in out and "stop requested" in err
    assert sorted(losses(run)) == list(range(1, stopped + 1))


def test_resume_keeps_the_learning_rate_schedule(reference, tmp_path):
    conf, _ = reference
    run = tmp_path / "run"
    args = ["train", "--config", str(conf), "--out", str(run), "train.lr_halve_every=2"]
    assert main([*args, "--max-steps", "3"]) == 0  # halved once before the stop
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "5"]) == 0
    assert [e["lr"] for e in read_log(run)] == [2e-3, 2e-3, 1e-3, 1e-3, 5e-4]


def test_resume_applies_a_new_learning_rate(reference, tmp_path):
    conf, _ = reference
    run = tmp_path / "run"
    args = ["train", "--config", str(conf), "--out", str(run)]
    assert main([*args, "--max-steps", "2", "train.lr_halve_every=2"]) == 0
    assert [e["lr"] for e in read_log(run)] == [2e-3, 2e-3]  # the rate each step used
    resume = ["train", "--out", str(run), "--resume", "--max-steps", "5"]
    assert main([*resume, "train.lr=1.0e-4", "train.lr_halve_every=4"]) == 0
    assert [e["lr"] for e in read_log(run)][2:] == [1e-4, 1e-4, 5e-5]  # halved after step 4


def test_a_run_begun_with_auto_precision_resumes_with_its_config_given(reference, tmp_path):
    """The run keeps the precision `auto` chose when it began; the --config's `auto` (the
    default) agrees with it, as a recipe passes --config with --resume."""
    conf, _ = reference
    run = tmp_path / "run"
    args = ["train", "--config", str(conf), "--out", str(run), "train.valid_every=100"]
    assert main([*args, "--max-steps", "1"]) == 0
    chosen = yaml.safe_load((run / "config.yaml").read_text())["train"]["precision"]
    assert chosen == default_precision(torch.device("cpu"))
    assert main([*args, "--resume", "--max-steps", "2"]) == 0
    assert sorted(losses(run)) == [1, 2]
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["precision"] == chosen


def test_resume_refuses_a_changed_model(reference, tmp_path, capsys):
    conf, _ = reference
    run = tmp_path / "run"
    assert main(["train", "--config", str(conf), "--out", str(run), "--max-steps", "1"]) == 0
    assert main(["train", "--out", str(run), "--resume", "model.channels=16"]) == 2
    assert "model config changed: channels (8 there, 16 here)" in capsys.readouterr().err
    other = tmp_path / "other.yaml"
    data = yaml.safe_load(conf.read_text())
    data["train"]["lr"] = 1e-4
    other.write_text(yaml.safe_dump(data))
    assert main(["train", "--config", str(other), "--out", str(run), "--resume"]) == 2
    assert "train.lr" in capsys.readouterr().err


def test_resume_refuses_other_training_clips(reference, ljspeech_clips, tmp_path, capsys):
    """Another voice's folder, or a re-split whose test list holds clips the run has trained
    on, is not resumed (a recipe's run folder does not depend on its data)."""
    conf, _ = reference
    run = tmp_path / "run"
    assert main(["train", "--config", str(conf), "--out", str(run), "--max-steps", "1"]) == 0
    data = Path(yaml.safe_load(conf.read_text())["data"]["prepared"])
    trained = (data / "train.txt").read_text().splitlines()
    other = tmp_path / "other"
    other.mkdir()
    (other / "train.txt").write_text("\n".join(trained[1:]) + "\n")
    (other / "valid.txt").write_text((data / "valid.txt").read_text())
    resume = ["train", "--config", str(conf), "--out", str(run), "--resume", "--max-steps", "2"]
    assert main([*resume, f"data.prepared={other}"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume: the run trained on 6 clips, the training list now has 5" in err
    assert (
        f"gone: 1 clip(s) ({Path(trained[0]).stem})" in err
        and "pass --force instead of resuming" in err
    )
    # as many clips, one of them another: not the same data either
    unseen = (data / "valid.txt").read_text().splitlines()[0]
    (other / "train.txt").write_text("\n".join([*trained[1:], unseen]) + "\n")
    assert main([*resume, f"data.prepared={other}"]) == 2
    err = capsys.readouterr().err
    assert "the run trained on 6 clips, the training list now has 6" in err
    assert f"gone: 1 clip(s) ({Path(trained[0]).stem}); new: 1 clip(s) ({Path(unseen).stem})" in err
    (other / "test.txt").write_text(trained[2] + "\n")  # a test clip it trained on
    (other / "train.txt").write_text("\n".join(trained[:2] + trained[3:]) + "\n")
    assert main([*resume, f"data.prepared={other}"]) == 2
    err = capsys.readouterr().err
    assert f"has trained on 1 clip(s) ({Path(trained[2]).stem}), which the test list" in err
    assert sorted(losses(run)) == [1]  # nothing trained, the run untouched
    (other / "test.txt").unlink()
    (other / "train.txt").write_text("".join(f"{line}\n" for line in reversed(trained)))
    assert main([*resume, f"data.prepared={other}"]) == 0  # the same clips, listed anew
    assert sorted(losses(run)) == [1, 2]


def test_resume_refuses_an_init_from_the_run_did_not_start_from(reference, tmp_path, capsys):
    """Resuming keeps the run's own weights: an init_from given then is refused, not written
    into config.yaml as if the run had started from it."""
    conf, ref_run = reference
    run = tmp_path / "run"
    args = ["train", "--config", str(conf), "--out", str(run)]
    assert main([*args, "--max-steps", "1"]) == 0
    init = f"train.init_from={ref_run}"
    assert main([*args, "--resume", "--max-steps", "2", init]) == 2
    assert "init_from only starts a new run" in capsys.readouterr().err
    assert yaml.safe_load((run / "config.yaml").read_text())["train"].get("init_from") is None
    seeded = tmp_path / "seeded"  # begun from it, it resumes with the same init_from
    seeded_args = ["train", "--config", str(conf), "--out", str(seeded), init]
    assert main([*seeded_args, "--max-steps", "1"]) == 0
    assert main([*seeded_args, "--resume", "--max-steps", "2"]) == 0
    assert sorted(losses(seeded)) == [1, 2]


def test_a_missing_mel_is_refused_before_training(reference, tmp_path, capsys):
    """data.mel_dir without some training file's mel: one line naming it before the first
    step (it was found at the first batch that drew the file: a worker's traceback)."""
    conf, _ = reference
    data = Path(yaml.safe_load(conf.read_text())["data"]["prepared"])
    files = [Path(line) for line in (data / "train.txt").read_text().split()]
    mels = tmp_path / "mels"
    mels.mkdir()
    for f in files[1:]:
        np.save(mels / f"{f.stem}.npy", np.full((80, 400), -5.0, np.float32))
    run = tmp_path / "run"
    args = ["train", "--config", str(conf), "--out", str(run), f"data.mel_dir={mels}"]
    assert main([*args, "data.num_workers=2"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {mels}: has no mel for 1 of the 6 training files: {files[0].stem}.npy\n"
    assert not (run / "checkpoints").exists()


def test_an_empty_validation_list_is_said(reference, tmp_path, caplog):
    conf, _ = reference
    empty = tmp_path / "valid.txt"
    empty.write_text("")
    run = tmp_path / "run"
    args = ["train", "--config", str(conf), "--out", str(run), "--max-steps", "1"]
    assert main([*args, f"data.valid={empty}"]) == 0
    assert f"{empty} lists no files: validation is off" in caplog.text


# ---- one step, EMA, fine-tuning ----


def test_non_finite_step_is_skipped_without_touching_weights(reference):
    config = load_experiment_config(reference[0])
    torch.manual_seed(0)
    model = build_model(config.model)
    objective = LogLikelihood(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    audio, mel = 0.1 * torch.randn(2, 2048), torch.randn(2, 80, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    poisoned = audio.clone()
    poisoned[0, 100] = math.nan
    result = train_step(objective, optimizer, scaler, poisoned, mel, grad_clip=5.0)
    assert result.skipped and not math.isfinite(result.loss)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    result = train_step(objective, optimizer, scaler, audio, mel, grad_clip=5.0)
    assert not result.skipped and math.isfinite(result.loss)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_ema_is_a_moving_average():
    model = torch.nn.Linear(2, 1)
    ema = EMA(model, decay=0.75)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(4.0)
    ema.update(model)
    assert torch.allclose(ema.shadow["weight"], start + 1.0)  # 0.75 * w0 + 0.25 * (w0 + 4)


def test_ema_run_checkpoints_ema_weights(reference, tmp_path):
    conf, _ = reference
    run = tmp_path / "run"
    args = ["train", "--config", str(conf), "--out", str(run), "--max-steps", "3"]
    assert main([*args, "train.ema_decay=0.5"]) == 0
    state = load_checkpoint(latest_checkpoint(run))
    assert state["ema"] is not None
    assert any(not torch.equal(state["ema"][k], state["model"][k]) for k in state["model"])
    model, info = load_model(run)
    assert info.weights == "ema" and info.step == 3
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state["ema"].items())


def test_init_from_loads_weights_and_checks_the_config(reference):
    conf, ref_run = reference
    config = load_experiment_config(conf)
    model = build_model(config.model)
    init_weights(model, config, latest_checkpoint(ref_run))
    trained = load_checkpoint(latest_checkpoint(ref_run))["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in trained.items())
    other = load_experiment_config(conf, ["model.channels=16"])
    with pytest.raises(ConfigError, match=r"model config differs: channels \(8 there, 16 here\)"):
        init_weights(build_model(other.model), other, latest_checkpoint(ref_run))


def test_init_from_is_checked_before_force_clears_the_run(reference, tmp_path, capsys):
    """A refused init_from left the run folder emptied by --force (its checkpoints deleted
    before the refusal); one inside that folder was deleted, then not found."""
    conf, ref_run = reference
    run = tmp_path / "run"
    args = ["train", "--config", str(conf), "--out", str(run), "--force", "--max-steps", "1"]
    assert main(args[:-3]) == 0
    (run / "link.pt").symlink_to(latest_checkpoint(ref_run))  # the folder's, though not in it
    kept = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    for init, problem in [
        (tmp_path / "missing.pt", "missing.pt: no such file"),
        (latest_checkpoint(run), "lies in the run folder"),
        (run / "link.pt", "lies in the run folder"),
        (f"{ref_run} model.channels=16", "channels (8 there, 16 here); to fine-tune it, set "),
        # the mel convention first: the model's copies of it follow
        (f"{ref_run} features.sample_rate=24000", "set features.sample_rate=22050"),
    ]:
        assert main([*args, *f"train.init_from={init}".split()]) == 2
        assert problem in capsys.readouterr().err, problem
        assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == kept


def test_init_from_names_as_model_does_and_a_resume_keeps_its_record(reference, tmp_path):
    """The default upsampler strides written out were "another model"; a resume given the
    config without init_from was refused, and init_from=null erased the run's record; a
    pretrained model's name was taken for a path in the working directory."""
    conf, ref_run = reference
    run = tmp_path / "seeded"
    args = ["train", "--config", str(conf), "--out", str(run), "model.upsample_strides=[16,16]"]
    assert main([*args, "--max-steps", "1", f"train.init_from={ref_run}"]) == 0
    assert main([*args[:-1], "--resume", "--max-steps", "2"]) == 0  # strides left out: same
    assert main([*args, "--resume", "--max-steps", "3", "train.init_from=null"]) == 0
    recorded = yaml.safe_load((run / "config.yaml").read_text())["train"]["init_from"]
    state = load_checkpoint(latest_checkpoint(run))
    assert recorded == str(ref_run) and state["step"] == 3
    # the clips the init_from weights were trained on stay on record (evaluate, exports)
    seen = load_checkpoint(latest_checkpoint(ref_run))["train_ids"]
    assert state["started_from"] == {"init_from": str(ref_run), "train_ids": seen}
    named = load_experiment_config(conf, ["train.init_from=waveflow-small-cpu"])
    assert named.train.init_from == "waveflow-small-cpu"
    with pytest.raises(ConfigError, match=r"waveflow-small-cpu.safetensors: its model config"):
        init_source(named, tmp_path / "fresh", force=False)


def test_fine_tuning_says_when_its_test_list_holds_clips_the_init_weights_learnt(
    reference, tmp_path, caplog
):
    """Another split of the data the init_from weights were trained on: their clips in
    its test list scored as test clips without a word."""
    conf, ref_run = reference
    seen = load_checkpoint(latest_checkpoint(ref_run))["train_ids"]
    data = yaml.safe_load((ref_run / "config.yaml").read_text())["data"]["prepared"]
    resplit = tmp_path / "resplit"
    resplit.mkdir()
    lines = (Path(data) / "train.txt").read_text().splitlines()
    held = next(line for line in lines if Path(line).stem == seen[0])
    (resplit / "train.txt").write_text("".join(f"{x}\n" for x in lines if x != held))
    (resplit / "test.txt").write_text(f"{held}\n")
    args = ["train", "--config", str(conf), "--out", str(tmp_path / "run"), "--max-steps", "1"]
    assert main([*args, f"data.prepared={resplit}", f"train.init_from={ref_run}"]) == 0
    assert f"the test list holds 1 clip(s) the init_from weights were trained on ({seen[0]})" in (
        caplog.text
    )


def test_force_keeps_the_earlier_run_when_it_refuses_the_config(reference, tmp_path, capsys):
    """--force deleted the earlier run, then refused the new config's data (a batch larger
    than the clips, a validation list that is not there): an emptied folder was left."""
    conf, ref_run = reference
    run = shutil.copytree(ref_run, tmp_path / "run")
    kept = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    args = ["train", "--config", str(conf), "--out", str(run), "--force", "--max-steps", "1"]
    for override, problem in [
        ("data.batch_size=64", "make no batch of 64"),
        (f"data.valid={tmp_path / 'none.txt'}", "none.txt"),
    ]:
        assert main([*args, override]) == 2
        assert problem in capsys.readouterr().err, problem
        assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == kept


def test_train_gives_the_callers_generators_and_dtype_their_way(reference, tmp_path):
    """A resumed train() left Python's, numpy's and torch's generators at the checkpoint's
    states (a fresh one, torch's at the run's seed); under a float64 default, models were
    built in float64 and training, evaluation and exports failed or mixed dtypes."""
    conf, ref_run = reference
    run = shutil.copytree(ref_run, tmp_path / "run")
    config = load_experiment_config(conf, ["train.max_steps=9"])

    def seed_all(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def draw() -> tuple:
        return random.random(), float(np.random.rand()), float(torch.rand((), dtype=torch.float32))

    seed_all(2)
    expected = draw()
    seed_all(2)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert train(config, run, resume=True).step == 9
        assert draw() == expected
        model, info = load_model(run)
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        clip = Path(config.data.prepared) / "train.txt"
        report = evaluate(model, info.features, [Path(clip.read_text().split()[0])])
        assert math.isfinite(report.ll)
    finally:
        torch.set_default_dtype(default)


def test_a_stop_event_ends_a_run_in_another_thread_with_a_checkpoint(reference, tmp_path):
    """Signals reach only the main thread: a train() in a thread (a GUI's, a notebook's
    worker) could be stopped only by raising from its progress callback, saving nothing."""
    conf, _ = reference
    config = load_experiment_config(conf, ["train.max_steps=1000", "train.valid_every=1000"])
    event, results = threading.Event(), []

    def progress(p) -> None:
        if p.step == 2:
            event.set()

    def run() -> None:
        results.append(train(config, tmp_path / "run", progress=progress, stop_event=event))

    worker = threading.Thread(target=run)
    worker.start()
    worker.join(timeout=300)
    (result,) = results
    assert result.stopped_early and result.stop_signal is None
    assert load_checkpoint(result.checkpoint)["step"] == result.step < 1000
    with pytest.raises(ConfigError, match=r"expected an ExperimentConfig .* got str"):
        train(str(conf), tmp_path / "other")  # a path where the config goes


def test_auto_precision_is_the_default_and_the_run_config_records_the_devices_best(reference):
    conf, run = reference  # trained without train.precision in its config
    assert "precision" not in yaml.safe_load(conf.read_text())["train"]
    assert load_experiment_config(conf).train.precision == "auto"
    recorded = yaml.safe_load((run / "config.yaml").read_text())["train"]["precision"]
    assert recorded == default_precision(torch.device("cpu"))
    assert recorded == ("bf16" if cpu_bf16_units() and onednn_bf16() else "fp32")


def test_loader_processes_are_capped_at_the_cores(reference, tmp_path, monkeypatch, caplog):
    """More data.num_workers than cores only take turns (and PyTorch warns): one core
    here, so one loader process, said once."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    caplog.set_level("INFO")
    conf, _ = reference
    run = tmp_path / "run"
    args = ["train", "--config", str(conf), "--out", str(run), "--max-steps", "2"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*args, "data.num_workers=3", "train.valid_every=100"]) == 0
    assert not [w for w in caught if "worker" in str(w.message)]
    assert "data.num_workers 3: 1 loader process(es), one a CPU core here" in caplog.text


def test_a_stated_precision_trains_on_cpu_as_stated(reference, tmp_path):
    """Both precisions train, and differently: from the same weights on the same batches,
    the third step scores otherwise in bf16 (autocast on) than in fp32, by bf16's rounding
    only. (The first two cannot tell: a WaveFlow's projections start at zero, so step 1's
    coupling is the identity whatever its network computes, and the network gets its first
    gradient only then; at step 2 the projections are ~lr, too small for bf16's rounding of
    the network to show in a float32 loss. The coupling itself is float32 in both.)"""
    conf, _ = reference
    third_loss = {}
    for precision in ("fp32", "bf16"):
        run = tmp_path / precision
        args = ["train", "--config", str(conf), "--out", str(run), "--max-steps", "3"]
        assert main([*args, f"train.precision={precision}", "train.valid_every=100"]) == 0
        assert all(math.isfinite(v) for v in losses(run).values())
        recorded = yaml.safe_load((run / "config.yaml").read_text())["train"]["precision"]
        assert recorded == precision
        third_loss[precision] = losses(run)[3]
    assert third_loss["fp32"] != third_loss["bf16"]
    assert abs(third_loss["fp32"] - third_loss["bf16"]) < 1e-3, third_loss  # 2.6e-5 seen


# ---- what a resume resumes ----


def poison_optimizer(path: Path) -> None:
    """One NaN in a checkpoint's Adam state, as a bad step or a bad disk would leave it."""
    state = load_checkpoint(path)
    first = next(iter(state["optimizer"]["state"].values()))
    first["exp_avg"].view(-1)[0] = float("nan")
    save_checkpoint(path, state, overwrite=True)


def test_resume_falls_back_from_a_non_finite_checkpoint(reference, tmp_path, caplog):
    conf, _ = reference
    run = tmp_path / "run"
    args = ["train", "--config", str(conf), "--out", str(run), "--max-steps", "6"]
    assert main([*args, "train.checkpoint_every=2", "train.valid_every=100"]) == 0
    poison_optimizer(checkpoint_path(run, 6))
    # a checkpoint named explicitly is refused
    explicit = ["train", "--out", str(run), "--resume", str(checkpoint_path(run, 6))]
    assert main([*explicit, "--max-steps", "8"]) == 2
    # the run folder falls back to its newest finite checkpoint (4, not 2), saying so
    caplog.clear()
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "8"]) == 0
    assert "resuming from " in caplog.text and "step-00000004.pt" in caplog.text
    got = losses(run)
    assert all(math.isfinite(got[step]) for step in (5, 6, 7, 8)), got
    assert non_finite_tensor(load_checkpoint(latest_checkpoint(run))) is None


def test_explicit_non_finite_checkpoint_is_refused(reference, tmp_path, capsys):
    conf, ref_run = reference
    run = tmp_path / "run"
    run.mkdir()
    bad = run / "step-00000008.pt"
    shutil.copy(latest_checkpoint(ref_run), bad)
    poison_optimizer(bad)
    assert main(["train", "--out", str(tmp_path / "new"), "--resume", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "step-00000008.pt: cannot resume: it holds non-finite values (optimizer.state." in err


def test_a_run_whose_steps_are_all_skipped_fails(reference, tmp_path, capsys):
    conf, _ = reference
    run = tmp_path / "run"
    # an absurd rate: step 1 updates the weights to overflow, every later step is non-finite
    args = ["train", "--config", str(conf), "--out", str(run), "--max-steps", "1"]
    assert main([*args, "train.lr=1.0e30", "train.valid_every=100"]) == 0
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "3"]) == 2
    assert "all 2 steps were skipped" in capsys.readouterr().err


def test_resume_before_the_first_checkpoint_uses_the_run_config(reference, tmp_path):
    conf, _ = reference
    run = tmp_path / "run"
    assert main(["train", "--config", str(conf), "--out", str(run), "--max-steps", "1"]) == 0
    shutil.rmtree(run / "checkpoints")  # as a kill before the first checkpoint leaves it
    assert (run / "config.yaml").is_file()
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "2"]) == 0
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002.pt"]


def test_a_full_disk_is_one_line_and_keeps_earlier_checkpoints(reference, tmp_path):
    conf, _ = reference
    run = tmp_path / "run"
    base = ["train", "--config", str(conf), "--out", str(run)]
    assert main([*base, "--max-steps", "2", "train.valid_every=100"]) == 0
    earlier = checkpoint_path(run, 2).read_bytes()

    # files over 20 kB fail to write (EFBIG), as on a full disk
    result = run_limited(
        20_000, "train", "--out", run, "--resume", "--max-steps", "4", "train.checkpoint_every=2"
    )
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {checkpoint_path(run, 4)}: could not be written"), last
    assert "Traceback" not in result.stderr
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-00000002.pt"]
    assert checkpoint_path(run, 2).read_bytes() == earlier


def test_a_stop_during_validation_ends_it_and_saves_that_step(reference, tmp_path, monkeypatch):
    """Validation on a CPU can outlast the 30 s the --nproc launcher gives a stopping run
    (it then killed the job with no checkpoint); one process trained a step more and saved
    twice. Now validation ends at the stop request and that step is saved, once."""
    from vocoder.train import trainer

    conf, _ = reference
    run = tmp_path / "run"
    validate = trainer.validate

    def signalled_while_validating(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # as the launcher's signal lands mid-validation
        return validate(*args, **kwargs)

    monkeypatch.setattr(trainer, "validate", signalled_while_validating)
    command = ["train", "--config", str(conf), "--out", str(run), "train.max_steps=100"]
    assert main([*command, "train.valid_every=2", "train.checkpoint_every=100"]) == 143
    assert [load_checkpoint(p)["step"] for p in list_checkpoints(run)] == [2]
    assert sorted(losses(run)) == [1, 2]


def test_validation_ends_at_a_stop_request(reference, tmp_path):
    from vocoder.train.logging import TrainLog
    from vocoder.train.validation import validate, validation_set

    conf, _ = reference
    config = load_experiment_config(conf)
    item = validation_set(config)[0]
    model = build_model(config.model).train()
    infer = model.infer
    calls = {"all": 0, "in_clip": 0}
    clip = []

    def infer_in_progress(*args, **kwargs):
        clip.append(True)
        try:
            return infer(*args, **kwargs)
        finally:
            clip.pop()

    model.infer = infer_in_progress

    def count(stop_in_clip_after: int | None) -> bool:
        calls["all"] += 1
        calls["in_clip"] += bool(clip)
        return stop_in_clip_after is not None and calls["in_clip"] > stop_in_clip_after

    train_log = TrainLog(tmp_path, enabled=False)
    scores = validate(model, [item, item], config, 1, train_log, stop=lambda: count(None))
    assert scores is not None and math.isfinite(scores["ll"])
    whole = dict(calls)
    assert whole["in_clip"] > 20  # asked all through the clip's synthesis, not only between
    calls.update({"all": 0, "in_clip": 0})
    assert validate(model, [item, item], config, 1, train_log, stop=lambda: count(5)) is None
    assert calls["in_clip"] == 6 and calls["all"] < whole["all"] / 2  # ended inside the clip
    assert model.training  # as it was
    assert not any(module._forward_pre_hooks for module in model.modules())


@pytest.mark.parametrize("form", ["--out RUN --resume", "--resume RUN"])
def test_resume_falls_back_from_an_unreadable_checkpoint(reference, tmp_path, caplog, form):
    conf, _ = reference
    run = tmp_path / "run"
    args = ["train", "--config", str(conf), "--out", str(run), "--max-steps", "4"]
    assert main([*args, "train.checkpoint_every=2", "train.valid_every=100"]) == 0
    newest = checkpoint_path(run, 4)
    newest.write_bytes(newest.read_bytes()[:1000])  # as a failing disk leaves it
    caplog.clear()
    resume = [str(run) if word == "RUN" else word for word in form.split()]
    assert main(["train", *resume, "--max-steps", "5"]) == 0
    assert f"{newest} cannot be resumed (not a readable checkpoint" in caplog.text
    assert f"resuming from {checkpoint_path(run, 2)}, the newest usable" in caplog.text
    assert sorted(losses(run)) == [1, 2, 3, 4, 5]


def test_resume_with_another_batch_size_says_the_data_order_changes(reference, tmp_path, caplog):
    conf, _ = reference
    run = tmp_path / "run"
    assert main(["train", "--config", str(conf), "--out", str(run), "--max-steps", "2"]) == 0
    caplog.clear()
    resume = ["train", "--out", str(run), "--resume", "--max-steps", "3"]
    assert main([*resume, "data.batch_size=1"]) == 0
    assert "trained with data.batch_size 2, this run has 1: the rest of epoch 0" in caplog.text

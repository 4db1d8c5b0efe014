"""DDP on CPU: `torchrun --nproc_per_node=2 -m vocoder train` with gloo, three steps."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from vocoder.checkpoint import list_checkpoints, load_checkpoint
from vocoder.train.distributed import DistInfo, all_reduce_mean, setup, weights_digest
from vocoder.train.logging import read_log
from vocoder.train.trainer import DIGEST_ENV

REPO = Path(__file__).resolve().parents[1]


def test_two_process_gloo_run_keeps_replicas_identical(tmp_path, ljspeech_clips):
    ids = (ljspeech_clips / "train.txt").read_text().split()[:4]  # train ids only
    train_list = tmp_path / "train.txt"
    train_list.write_text("".join(f"{ljspeech_clips / 'wavs' / i}.wav\n" for i in ids))
    config = {
        "model": {"preset": "nanoflow-h16-r128", "n_flows": 2, "n_layers": 2, "n_group": 8,
                  "channels": 8, "embedding_dim": 8},
        "data": {"train": str(train_list), "segment_length": 2048, "batch_size": 1,
                 "num_workers": 0},
        "train": {"max_steps": 3, "log_every": 1, "checkpoint_every": 2, "seed": 3,
                  "device": "cpu"},
    }  # fmt: skip
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    digest = tmp_path / "digest"
    env = {**os.environ, DIGEST_ENV: str(digest), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "vocoder", "train", "--config", str(conf), "--out", str(run),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Grad strides do not match" not in done.stderr  # DDP's warning on bf16 1x1 convs

    # both ranks ended with bit-identical weights (each wrote its own digest)
    digests = [Path(f"{digest}.rank{r}").read_text().strip() for r in (0, 1)]
    assert len(digests[0]) == 64 and digests[0] == digests[1]
    # exactly one set of checkpoints and one log, written by rank 0
    assert [p.name for p in list_checkpoints(run)] == ["step-00000002.pt", "step-00000003.pt"]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    assert [e["step"] for e in read_log(run)] == [1, 2, 3]
    assert len(list((run / "tensorboard").iterdir())) == 1
    assert done.stdout.count("finished at step 3") == 1
    # the checkpoint holds those same weights; 2 ranks x 2 files each make one epoch of 2
    state = load_checkpoint(run / "checkpoints" / "step-00000003.pt")
    assert (state["epoch"], state["batch_in_epoch"]) == (1, 1)
    from vocoder.models import build_model, model_config_from_dict

    model = build_model(model_config_from_dict(state["config"]["model"]))
    model.load_state_dict(state["model"])
    assert weights_digest(model) == digests[0]

    # resumed on one process, the run is told its global batch and data order change
    assert state["world_size"] == 2
    command = [sys.executable, "-m", "vocoder", "train", "--out", str(run), "--resume"]
    resumed = subprocess.run(
        [*command, "--max-steps", "4"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "trained on 2 process(es), this run has 1: the global batch" in resumed.stderr


def test_workers_checkpoint_and_stop_when_torchrun_is_killed(tmp_path, ljspeech_clips):
    """torchrun starts its workers in sessions of their own: SIGKILLed, it left them
    training on, unseen, into the run folder."""
    conf, run = _endless_run(tmp_path, ljspeech_clips)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "vocoder", "train", "--config", str(conf), "--out", str(run),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 180
        while not read_log(run) and time.monotonic() < deadline:
            assert launcher.poll() is None, "torchrun ended before training"
            time.sleep(0.05)
        assert read_log(run), "no step within 180 s"
        assert len(_workers(run)) == 2
    finally:
        launcher.kill()
        launcher.wait()
    deadline = time.monotonic() + 120
    while _workers(run) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = _workers(run)
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans, "the workers trained on after torchrun was killed"
    # it stopped after a step, with a checkpoint of that step: nothing lost
    stopped = load_checkpoint(list_checkpoints(run)[-1])["step"]
    assert [e["step"] for e in read_log(run)] == list(range(1, stopped + 1))


def test_nproc_stops_as_one_process_does_and_says_which_process_died(tmp_path, ljspeech_clips):
    """`vocoder train --nproc 2`: SIGTERM exits 143 after a checkpoint with no launcher
    traceback (torchrun's own exits 1 with one); a worker killed outright is named, and
    the other stops with one line instead of gloo's traceback."""
    conf, run = _endless_run(tmp_path, ljspeech_clips)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def start(*extra: str) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"stderr{len(list(tmp_path.glob('stderr*')))}.txt"
        command = [sys.executable, "-m", "vocoder", "train", "--nproc", "2", *extra]
        with log.open("w") as err:
            launcher = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=err, text=True
            )
        return launcher, log

    def wait_for_step(launcher: subprocess.Popen, after: int) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert launcher.poll() is None, "the launcher ended before training"
            if any(e["step"] > after for e in read_log(run)):
                return
            time.sleep(0.05)
        raise AssertionError("no step within 180 s")

    launcher, log = start("--config", str(conf), "--out", str(run))
    try:
        wait_for_step(launcher, 0)
        launcher.send_signal(signal.SIGTERM)
        out, _ = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    err = log.read_text()
    assert launcher.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "SignalException" not in err, err[-3000:]
    assert err.count("stop requested") == 1 and err.count("training waveflow") == 1
    step = load_checkpoint(list_checkpoints(run)[-1])["step"]
    assert out.count(f"stopped at step {step}; checkpoint:") == 1

    launcher, log = start("--out", str(run), "--resume")
    try:
        wait_for_step(launcher, step)
        workers = _children(launcher.pid)
        assert len(workers) == 2
        os.kill(workers[-1], signal.SIGKILL)
        launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    err = log.read_text()
    assert launcher.returncode == 128 + signal.SIGKILL, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    killed = [line for line in err.splitlines() if "was killed by SIGKILL" in line]
    assert len(killed) == 1 and killed[0].startswith("error: training process ")
    assert "another training process of the job stopped" in err, err[-3000:]


def test_nproc_says_a_mistake_once_before_launching(tmp_path, ljspeech_clips):
    """A data folder that is not there, or a run folder holding another run, is one line
    from the launcher, not one a process."""
    conf, run = _endless_run(tmp_path, ljspeech_clips)
    missing = tmp_path / "no-data"
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    for extra, problem in [
        (["--out", str(run), f"data.prepared={missing}"], f"{missing}: no such folder"),
        (["--out", str(tmp_path / "taken")], f"{tmp_path / 'taken'}: "),
    ]:
        command = [sys.executable, "-m", "vocoder", "train", "--nproc", "2", "--config", str(conf)]
        done = subprocess.run(
            [*command, *extra], cwd=REPO, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("error: ") == 1 and problem in done.stderr, done.stderr
    assert not run.exists()


def test_nproc_notes_once_what_the_start_checks_note(tmp_path, ljspeech_clips):
    """The launcher's start checks keep their notes to themselves: the first process says
    them (a data folder without a manifest was noted twice)."""
    conf, run = _endless_run(tmp_path, ljspeech_clips)
    data = tmp_path / "handmade"
    data.mkdir()
    shutil.copy(tmp_path / "train.txt", data / "train.txt")
    (data / "test.txt").write_text("")
    command = [sys.executable, "-m", "vocoder", "train", "--nproc", "2", "--config", str(conf)]
    done = subprocess.run(
        [*command, "--out", str(run), "--max-steps", "1", f"data.prepared={data}"],
        cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("no manifest; the mel convention is not checked") == 1


def test_nproc_processes_end_without_the_interpreters_teardown(tmp_path, ljspeech_clips):
    """A training process of the job exits without the interpreter's teardown (its output
    flushed first): gloo's threads, still releasing the last collective, aborted one with
    SIGABRT after a run that had succeeded. The launcher ends as any process does."""
    conf, run = _endless_run(tmp_path, ljspeech_clips)
    site, marks = tmp_path / "site", tmp_path / "teardowns"
    site.mkdir()
    marks.mkdir()
    (site / "sitecustomize.py").write_text(
        "import atexit, os, pathlib\n"
        "atexit.register(lambda: pathlib.Path(os.environ['TEARDOWN_MARKS'],\n"
        "    f\"{os.getpid()}-world{os.environ.get('WORLD_SIZE', '1')}\").touch())\n"
    )
    path = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "TEARDOWN_MARKS": str(marks), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "vocoder", "train", "--nproc", "2", "--config", str(conf)]
    done = subprocess.run(
        [*command, "--out", str(run), "--max-steps", "1"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("finished at step 1; checkpoint: ") == 1, done.stdout
    assert [p.name.split("-")[1] for p in marks.iterdir()] == ["world1"]  # the launcher's


def test_nproc_runs_the_same_command_in_each_process():
    from vocoder.cli import build_parser
    from vocoder.cli.train import worker_command

    for argv in (
        ["train", "--nproc", "4", "--config", "c.yaml", "--out", "exp/r", "--resume",
         "train.lr=1e-4", "--max-steps", "9", "--force", "data.batch_size=2"],
        ["train", "--nproc", "2", "--config", "c d.yaml", "--out=-run", "--verbose",
         "--resume", "exp/-r/checkpoints/step-00000002.pt", "--data=-data"],
    ):  # fmt: skip
        args = build_parser("train").parse_args(argv)
        again = build_parser("train").parse_args(worker_command(args))
        assert {**vars(args), "nproc": 1} == vars(again)
    anywhere = build_parser("train").parse_args(["-v", "train", "--nproc", "2", "--out", "r"])
    assert "--verbose" in worker_command(anywhere)


def test_nproc_is_refused_below_one_and_under_torchrun(tmp_path, monkeypatch, capsys):
    from vocoder.cli import main

    assert main(["train", "--nproc", "0", "--config", "c.yaml"]) == 2
    assert capsys.readouterr().err == "error: --nproc must be at least 1, got 0\n"
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(["train", "--nproc", "2", "--config", "c.yaml"]) == 2
    assert "under torchrun leave it out" in capsys.readouterr().err


def test_nproc_needs_a_gpu_a_process_where_it_trains_on_gpus():
    from vocoder.cli.train import check_processes_fit
    from vocoder.errors import ConfigError

    check_processes_fit("auto", 4, 0)  # no GPU: gloo processes share the CPU
    check_processes_fit("cpu", 4, 8)
    check_processes_fit("cuda", 4, 4)
    with pytest.raises(ConfigError, match=r"--nproc 4: this machine has 2 CUDA GPU\(s\)"):
        check_processes_fit("auto", 4, 2)
    with pytest.raises(ConfigError, match="train.device cuda:1 names one GPU"):
        check_processes_fit("cuda:1", 2, 4)


def test_a_lost_peer_is_one_line_only_in_a_job():
    from vocoder.train.distributed import PeerLost, peer_lost

    cpu = torch.device("cpu")
    job, alone = DistInfo(1, 1, 2, cpu), DistInfo(0, 0, 1, cpu)
    gloo = RuntimeError("[../gloo/transport/tcp/pair.cc:547] Connection closed by peer [::1]:7")
    lost = peer_lost(gloo, job)
    assert isinstance(lost, PeerLost) and str(lost).startswith("training process 1: another")
    assert "Connection closed by peer" in str(lost)
    assert peer_lost(gloo, alone) is None
    assert peer_lost(RuntimeError("CUDA out of memory"), job) is None
    nccl = "NCCL error: remote process exited or there was a network error"
    assert isinstance(peer_lost(torch.distributed.DistBackendError(nccl), job), PeerLost)
    # NCCL's other errors (set-up, timeouts) are not said to be a lost peer
    assert peer_lost(torch.distributed.DistBackendError("NCCL error: invalid usage"), job) is None


def test_single_process_helpers_are_no_ops():
    info = setup("cpu")
    assert info == DistInfo(rank=0, local_rank=0, world_size=1, device=torch.device("cpu"))
    assert info.is_main and not info.enabled
    value = torch.tensor([1.5, 2.0])
    assert torch.equal(all_reduce_mean(value, info), value)


def _workers(run: Path) -> list[int]:
    """The live processes training into `run` (found by their command lines)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(run).encode() in words and b"torch.distributed.run" not in words and state != "Z":
            found.append(int(entry.name))
    return found


def _children(pid: int) -> list[int]:
    """The live child processes of `pid`, in pid order."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def _endless_run(tmp_path: Path, clips: Path) -> tuple[Path, Path]:
    """A config of a tiny WaveFlow training until stopped (logging every step, never
    checkpointing on its own), and its run folder."""
    ids = (clips / "train.txt").read_text().split()[:4]
    train_list = tmp_path / "train.txt"
    train_list.write_text("".join(f"{clips / 'wavs' / i}.wav\n" for i in ids))
    config = {
        "model": {"preset": "waveflow-h16-r64", "n_flows": 2, "n_layers": 2, "n_group": 8,
                  "channels": 8},
        "data": {"train": str(train_list), "segment_length": 2048, "batch_size": 1,
                 "num_workers": 0},
        "train": {"max_steps": 100000, "log_every": 1, "checkpoint_every": 100000,
                  "seed": 3, "device": "cpu", "precision": "fp32"},
    }  # fmt: skip
    conf = tmp_path / "conf.yaml"
    conf.write_text(yaml.safe_dump(config))
    return conf, tmp_path / "run"


def test_nproc_says_a_refused_resume_once(tmp_path, ljspeech_clips):
    """The launcher checks the checkpoint a resume continues from (and the training files)
    before it starts any process: each process said the same refusal, a line each."""
    from vocoder.checkpoint import checkpoint_path

    conf, run = _endless_run(tmp_path, ljspeech_clips)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "vocoder", "train"]
    first = [*command, "--config", str(conf), "--out", str(run), "--max-steps", "1"]
    done = subprocess.run(first, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    newest = checkpoint_path(run, 1)
    newest.write_bytes(newest.read_bytes()[:1000])  # as a failing disk leaves it
    resume = [*command, "--nproc", "2", "--out", str(run), "--resume", "--max-steps", "2"]
    done = subprocess.run(resume, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: {newest}: cannot resume: not a readable checkpoint: a truncated or damaged "
        "zip archive; no earlier checkpoint of the run is usable either"
    ]


def test_nproc_saves_the_step_whose_validation_a_stop_cut_short(tmp_path, ljspeech_clips):
    """A stop during rank 0's validation: that step is saved at once (the launcher kills a
    job still validating after 30 s, and a long validation on a CPU took longer)."""
    conf, run = _endless_run(tmp_path, ljspeech_clips)
    valid = tmp_path / "valid.txt"  # a long validation: 60 utterances of 6 s
    valid.write_text(f"{ljspeech_clips / 'wavs' / 'LJ001-0026.wav'}\n" * 60)
    config = yaml.safe_load(conf.read_text())
    config["data"].update(valid=str(valid), valid_max_files=60, valid_audio_clips=0)
    config["train"].update(valid_every=2)
    conf.write_text(yaml.safe_dump(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "vocoder", "train", "--nproc", "2", "--config", str(conf)]
    launcher = subprocess.Popen(
        [*command, "--out", str(run)], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while not any(e["step"] >= 2 for e in read_log(run)):  # step 2 logged: validating
            assert launcher.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        launcher.send_signal(signal.SIGTERM)
        out, err = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    assert launcher.returncode == 143, err[-3000:]
    assert "step 2: validation cut short by the stop request" in err, err[-3000:]
    saved = [load_checkpoint(p)["step"] for p in list_checkpoints(run)]
    assert saved[0] == 2 and saved[-1] in (2, 3), saved

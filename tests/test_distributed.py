"""DDP on CPU: `torchrun --nproc_per_node=2 -m vocoder train` with gloo, three steps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    ids = (ljspeech_clips / "train.txt").read_text().split()[:4]
    train_list = tmp_path / "train.txt"
    train_list.write_text("".join(f"{ljspeech_clips / 'wavs' / i}.wav\n" for i in ids))
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
    run = tmp_path / "run"
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

"""`vocoder train`: train a model from a YAML config; resumable; torchrun for several GPUs."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from vocoder.checkpoint import CHECKPOINT_DIR, latest_checkpoint, load_checkpoint
from vocoder.cli.outputs import output_folders
from vocoder.config import differences, load_mapping
from vocoder.errors import ConfigError, InputError
from vocoder.models.config import explicit_strides
from vocoder.train.config import (
    ExperimentConfig,
    experiment_to_dict,
    load_experiment_config,
)
from vocoder.train.run_dir import CONFIG_FILE
from vocoder.train.trainer import Progress, check_startable, train

log = logging.getLogger(__name__)

# Bookkeeping that may differ between a run's config and the --config it is resumed with;
# the --config's values win.
CHANGEABLE_ON_RESUME = {
    "train.max_steps",
    "train.log_every",
    "train.valid_every",
    "train.checkpoint_every",
    "train.keep_last",
    "train.device",
    "data.num_workers",
}

EPILOG = """\
examples:
  vocoder train --config recipes/ljspeech/conf/waveflow-r64.yaml --data data/ljspeech \\
      --out exp/waveflow-r64
  vocoder train --out exp/waveflow-r64 --resume                  # continue where it stopped
  vocoder train --out exp/waveflow-r64 --resume --max-steps 2000000
  vocoder train --nproc 4 --config conf.yaml --out exp/run       # 4 GPUs of this machine
  torchrun --nnodes 2 --nproc_per_node 4 ... -m vocoder train --config conf.yaml  # 2 machines

Overrides are key.path=value pairs (values parsed as YAML), e.g. train.lr=2.0e-4
model.channels=64 data.batch_size=16. When resuming, the run folder's config.yaml is the
config; --config may be given too, and must agree with it apart from overrides and
bookkeeping (max_steps, log/valid/checkpoint intervals, keep_last, device, num_workers).
Floats may be written 2e-4 too: YAML reads that as a string, and float fields convert it.
Ctrl-C (or SIGTERM) stops after the current step and saves a checkpoint; the exit status
is then 130 (143 for SIGTERM), so a script does not go on as if training had finished.
--nproc N runs N processes (DDP, one per GPU; gloo on a CPU) as torchrun --standalone
would, and exits as one process does; several machines take torchrun itself.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "--config",
        type=Path,
        metavar="CONF.yaml",
        help="experiment config (optional with --resume)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        metavar="DIR",
        help="a `vocoder prepare` folder (train/valid/test.txt): the same as data.prepared=DIR",
    )
    parser.add_argument(
        "--out", type=Path, metavar="EXP_DIR", help="run folder (default: exp/<config name>)"
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="PATH",
        help="continue the run in EXP_DIR (or from the checkpoint / run folder PATH)",
    )
    parser.add_argument(
        "--max-steps",
        type=int,
        metavar="N",
        help="train until step N (default: the config's train.max_steps)",
    )
    parser.add_argument(
        "--force", action="store_true", help="start over in a non-empty EXP_DIR (deletes its run)"
    )
    parser.add_argument(
        "--nproc",
        type=int,
        default=1,
        metavar="N",
        help="training processes on this machine, one per GPU (default 1; see below)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key.path=value", help="config overrides (see below)"
    )


def run(args: argparse.Namespace) -> int:
    resume, overrides = _split_resume(args.resume, list(args.overrides))
    if args.data is not None:  # quoted: the value is parsed as YAML, and a path is a string
        overrides.append(f"data.prepared={json.dumps(str(args.data))}")
    if args.max_steps is not None and args.max_steps <= 0:
        raise ConfigError(f"--max-steps must be positive, got {args.max_steps}")
    if args.max_steps is not None:
        overrides.append(f"train.max_steps={args.max_steps}")
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be at least 1, got {args.nproc}")
    if args.nproc != 1 and "LOCAL_RANK" in os.environ:
        raise ConfigError("--nproc launches the processes itself: under torchrun leave it out")
    if resume is not False and args.force:
        raise ConfigError("--resume and --force contradict each other; pick one")
    run_dir = args.out
    if run_dir is None and isinstance(resume, str):  # the run folder of that checkpoint
        path = Path(resume)
        run_dir = path if path.is_dir() else path.parent.parent
        if run_dir.name == CHECKPOINT_DIR:  # checkpoints/set-aside-N/step-*.pt
            run_dir = run_dir.parent
    if run_dir is None:
        if args.config is None:
            raise ConfigError("give --config (and optionally --out), or --out with --resume")
        run_dir = Path("exp") / args.config.stem
    config = resolve_config(args.config, run_dir, resume, overrides)
    if args.nproc != 1:
        check_processes_fit(config.train.device, args.nproc, torch.cuda.device_count())
        # a mistake is said once, by the launcher; what is only noted, by the first process
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            check_startable(config, run_dir, resume, args.force, thorough=True)
        finally:
            logging.disable(previous)
        return launch_workers(args)
    rank = int(os.environ.get("RANK", "0"))
    show_bar = rank == 0 and sys.stderr.isatty()
    # rank 0 makes the run folder (and removes it again, empty, when the run fails to start)
    with output_folders([run_dir]) if rank == 0 else contextlib.nullcontext():
        if not show_bar:
            result = train(config, run_dir, resume=resume, force=args.force)
        else:
            bar = ProgressBar()
            try:
                with logging_redirect_tqdm():
                    result = train(config, run_dir, resume=resume, force=args.force, progress=bar)
            finally:
                bar.close()
    if rank == 0:
        state = "stopped" if result.stopped_early else "finished"
        print(f"{state} at step {result.step}; checkpoint: {result.checkpoint}")
    if result.stopped_early:  # the shell's code for death by that signal: scripts stop too
        return 128 + (result.stop_signal or signal.SIGTERM)
    return 0


def check_processes_fit(device: str, nproc: int, gpus: int) -> None:
    """`ConfigError` unless --nproc processes on `device` get a GPU each (any number share
    the CPU): `gpus` is the machine's CUDA GPU count."""
    if device.startswith("cuda:"):
        raise ConfigError(
            f"train.device {device} names one GPU, and --nproc gives each process its own: "
            "set train.device to cuda or auto"
        )
    if device in ("cuda", "auto") and gpus and nproc > gpus:
        raise ConfigError(f"--nproc {nproc}: this machine has {gpus} CUDA GPU(s), one a process")


def worker_command(args: argparse.Namespace) -> list[str]:
    """The `vocoder train` arguments each of --nproc's processes runs: these, less --nproc."""
    argv = ["train"]
    for flag, value in (
        ("--config", args.config),
        ("--data", args.data),
        ("--out", args.out),
        ("--max-steps", args.max_steps),
    ):
        if value is not None:  # one word: a value may begin with "-"
            argv.append(f"{flag}={value}")
    if args.resume is True:
        argv.append("--resume")
    elif args.resume:
        argv.append(f"--resume={args.resume}")
    if args.force:
        argv.append("--force")
    if getattr(args, "verbose", False) or getattr(args, "verbose_anywhere", False):
        argv.append("--verbose")
    return argv + list(args.overrides)


def launch_workers(args: argparse.Namespace) -> int:
    """Run `worker_command(args)` in --nproc processes as `torchrun --standalone` does, and
    exit as one of them would: 130/143 when stopped by a signal (they save a checkpoint
    first), a failed worker's status when one fails (each says why in its own line)."""
    import torch.distributed.run as torchrun
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    # quiet the launcher's notices of stopping or losing workers: the workers say why in
    # lines of their own and a kill is worded below (each of its loggers sets its own level)
    for name in ["torch.distributed.run", *logging.root.manager.loggerDict]:
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    launch = torchrun.parse_args(
        ["--standalone", f"--nproc-per-node={args.nproc}", "-m", "vocoder", *worker_command(args)]
    )
    try:
        torchrun.run(launch)
    except SignalException as e:  # the workers got it too, and checkpointed
        return 128 + e.sigval
    except ChildFailedError as e:
        # a process killed by a signal nobody handled (SIGKILL, the OOM killer) is the cause
        # and the others' errors its consequence, though they may be seen to end first
        killed = [(r, f) for r, f in sorted(e.failures.items()) if f.exitcode < 0]
        rank, failure = killed[0] if killed else e.get_first_failure()
        if failure.exitcode < 0:
            try:
                name = signal.Signals(-failure.exitcode).name
            except ValueError:  # a real-time signal has no name
                name = f"signal {-failure.exitcode}"
            log.error("training process %d was killed by %s", rank, name)
            return 128 - failure.exitcode
        return failure.exitcode
    return 0


def resolve_config(
    config_path: Path | None, run_dir: Path, resume: bool | str, overrides: list[str]
) -> ExperimentConfig:
    """The config of the run: --config for a new run, the saved one when resuming.

    Resuming, the run folder's `config.yaml` (or the resumed checkpoint's config) is the
    base and the overrides apply on top; a --config given as well must agree with it.
    """
    saved_path = run_dir / CONFIG_FILE
    base = None
    if resume is not False:
        if isinstance(resume, str):
            checkpoint = Path(resume)
            if checkpoint.is_dir():
                folder, checkpoint = checkpoint, latest_checkpoint(checkpoint)
                if checkpoint is None:
                    raise InputError(resume, "no checkpoint to resume from")
                if (folder / CONFIG_FILE).is_file():  # read, not the latest: it may be damaged
                    base = load_mapping(folder / CONFIG_FILE)
            if base is None:
                base = load_checkpoint(checkpoint)["config"]
        elif saved_path.is_file():  # also a run killed before its first checkpoint
            base = load_mapping(saved_path)
        elif (latest := latest_checkpoint(run_dir)) is not None:
            base = load_checkpoint(latest)["config"]
    if base is None:
        if config_path is None:
            raise ConfigError(f"--config is needed: {run_dir} holds no run to resume")
        return load_experiment_config(config_path, overrides)
    # init_from seeded the run's weights when it began: the record stays, whether the
    # config repeats it or not (a different one is refused: `check_init_from`)
    started_from = (base.get("train") or {}).get("init_from")
    config = _keep_init_from(load_experiment_config(None, overrides, base=base), started_from)
    if config_path is None:
        return config
    given = _keep_init_from(load_experiment_config(config_path, overrides), started_from)
    if given.train.precision == "auto":  # resolved when the run began; the run keeps it
        given = replace(given, train=replace(given.train, precision=config.train.precision))
    changed = [
        d
        for d in differences(_comparable(config), _comparable(given))
        if d.split(" ")[0] not in CHANGEABLE_ON_RESUME
    ]
    if changed:
        raise ConfigError(
            f"{config_path} differs from the run's config in {', '.join(changed)}; to "
            "change a setting on resume pass it as an override (key.path=value), or start "
            "a new run"
        )
    return given


def _comparable(config: ExperimentConfig) -> dict:
    """`config` as plain data, the model's default upsampler strides written out."""
    data = experiment_to_dict(config)
    return {**data, "model": explicit_strides(data["model"])}


def _keep_init_from(config: ExperimentConfig, started_from: str | None) -> ExperimentConfig:
    """`config` with the resumed run's init_from where it names none (or null)."""
    if config.train.init_from is not None or started_from is None:
        return config
    return replace(config, train=replace(config.train, init_from=started_from))


class ProgressBar:
    """A tqdm bar fed by the trainer's progress reports."""

    def __init__(self):
        self.bar: tqdm | None = None

    def __call__(self, p: Progress) -> None:
        if self.bar is None:
            self.bar = tqdm(
                total=p.max_steps, initial=p.start_step, unit="step", dynamic_ncols=True
            )
        self.bar.update(p.step - self.bar.n)
        postfix = {"loss": f"{p.loss:.3f}", "LL": f"{-p.loss:.3f}", "it/s": f"{p.steps_per_s:.2f}"}
        if p.skipped:
            postfix["skipped"] = p.skipped
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _split_resume(resume: bool | str, overrides: list[str]) -> tuple[bool | str, list[str]]:
    """`--resume a.b=1` means a bare --resume followed by an override, not a path."""
    if isinstance(resume, str) and "=" in resume and not os.path.exists(resume):
        return True, [resume, *overrides]
    return resume, overrides


__all__ = [
    "add_arguments",
    "check_processes_fit",
    "launch_workers",
    "run",
    "resolve_config",
    "worker_command",
]

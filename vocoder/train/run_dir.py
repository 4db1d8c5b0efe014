"""The run folder: claiming it (fresh, resumed or forced), locking it while a trainer
writes it, clearing it, setting aside what a rollback abandons, writing its config."""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

import yaml

from vocoder.checkpoint import CHECKPOINT_DIR, latest_checkpoint, list_checkpoints
from vocoder.errors import InputError, remedy
from vocoder.files import atomic_output
from vocoder.train.config import ExperimentConfig, experiment_to_dict
from vocoder.train.logging import LOG_FILE, TENSORBOARD_DIR

log = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; two trainers are then not caught
    fcntl = None

HELD = (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES)  # flock's "someone holds it"

CONFIG_FILE = "config.yaml"
LOCK_FILE = ".trainer.lock"
SET_ASIDE = "set-aside-"  # checkpoints/set-aside-N/: a line a rollback abandoned
# `eval` and `wav`: what the recipes' evaluate and synthesize stages write into a run
RUN_ARTIFACTS = (CONFIG_FILE, CHECKPOINT_DIR, TENSORBOARD_DIR, LOG_FILE, "eval", "wav")


def claim_run_dir(run_dir: Path, resume: bool | str | Path, force: bool) -> Path | None:
    """The checkpoint to resume from (None: a fresh run), after checking the folder is ours."""
    if resume is not False and resume is not None and resume is not True:
        path = Path(resume)
        found = latest_checkpoint(path) if path.is_dir() else path
        if found is None or not found.is_file():
            raise InputError(path, "no checkpoint to resume from")
        aside = found.parent
        if aside.name.startswith(SET_ASIDE) and aside.parent.name == CHECKPOINT_DIR:
            raise InputError(
                found,
                f"was set aside by a rollback; to go back to that line, move the files of "
                f"{aside} back into {aside.parent} (and the newer ones out), then resume the run",
            )
        mine = latest_checkpoint(run_dir)
        if mine is not None and mine.parent.resolve() != found.parent.resolve():
            raise InputError(
                run_dir, f"holds another run's checkpoints; resume {found} into an empty folder"
            )
        return found
    if resume is True:
        found = latest_checkpoint(run_dir)
        if found is not None:
            return found
        _refuse_other_files(run_dir)
        log.info("%s has no checkpoint yet: starting a new run", run_dir)
        return None
    if run_dir.is_file():
        raise InputError(run_dir, "is a file, not a run folder")
    _refuse_other_files(run_dir)
    if _holds_files(run_dir) and not force:
        raise InputError(
            run_dir,
            "is not empty",
            [remedy("to continue its run", resume=True), remedy("to start over", force=True)],
        )
    return None


def _refuse_other_files(run_dir: Path) -> None:
    """A fresh run deletes an earlier run's artifacts (`eval/` and `wav/` too): a folder
    that holds files but no run is someone else's, and refused."""
    holds_run = any((run_dir / name).exists() for name in (CONFIG_FILE, CHECKPOINT_DIR, LOG_FILE))
    if _holds_files(run_dir) and not holds_run:
        raise InputError(run_dir, "is not empty and holds no run; train into another folder")


def _holds_files(run_dir: Path) -> bool:
    """Whether `run_dir` is a folder holding anything but a trainer's lock."""
    return run_dir.is_dir() and any(p.name != LOCK_FILE for p in run_dir.iterdir())


def clear_run(run_dir: Path, fresh: bool) -> None:
    """For a fresh run, delete an earlier run's artifacts (the caller was allowed to).

    Resuming, only the temporary files of a checkpoint write cut short by a kill go.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    if not fresh:
        for stale in (run_dir / "checkpoints").glob(".step-*"):
            stale.unlink(missing_ok=True)
        return
    for name in RUN_ARTIFACTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


class RunLock:
    """The one trainer writing a run folder holds this; a second one is refused.

    An advisory lock on `LOCK_FILE` (with the holder's pid in it), which the system drops
    when the holder exits however it dies, so a killed run never leaves the folder locked.
    A release deletes the file, so a finished or failed run leaves none behind.
    """

    def __init__(self, run_dir: Path):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / LOCK_FILE
        self._fd: int | None = None
        if fcntl is None:
            return
        while self._fd is None:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                if e.errno not in HELD:  # a file system without locks (NFS without lockd)
                    log.warning("%s: cannot lock the run folder (%s); not locked", run_dir, e)
                    self.path.unlink(missing_ok=True)
                    return
                raise InputError(
                    run_dir,
                    f"another trainer (pid {holder}) is writing this run; wait for it to stop, "
                    "or train into another folder",
                ) from None
            if _same_file(fd, self.path):
                self._fd = fd
            else:  # its holder released (deleted) it between our open and lock: again
                os.close(fd)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)  # while still held: no one else has it
            os.close(self._fd)  # closing drops the lock
            self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), path.stat()
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def set_aside_later_checkpoints(run_dir: Path, resume_from: Path) -> Path | None:
    """Rolling back: move the run's checkpoints after `resume_from` into a folder of their own.

    Left in place they would be the run's latest, which a later `--resume`, `synthesize` or
    `evaluate` would take for this run's. Returns the folder they went to (None: none).
    """
    checkpoints = [p.resolve() for p in list_checkpoints(run_dir)]
    if resume_from.resolve() not in checkpoints:
        return None
    later = checkpoints[checkpoints.index(resume_from.resolve()) + 1 :]
    if not later:
        return None
    n = 1
    while (run_dir / CHECKPOINT_DIR / f"{SET_ASIDE}{n}").exists():
        n += 1
    folder = run_dir / CHECKPOINT_DIR / f"{SET_ASIDE}{n}"
    folder.mkdir()
    for path in later:
        path.rename(folder / path.name)
    log.warning(
        "resuming from %s: moved the %d later checkpoint(s) of the run (%s .. %s) to %s",
        resume_from.name,
        len(later),
        later[0].name,
        later[-1].name,
        folder,
    )
    return folder


def write_config(run_dir: Path, config: ExperimentConfig) -> None:
    """The run's config.yaml (atomically; it says what the checkpoints were trained with)."""
    text = yaml.safe_dump(experiment_to_dict(config), sort_keys=False)
    with atomic_output(run_dir / CONFIG_FILE, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


__all__ = [
    "CONFIG_FILE",
    "LOCK_FILE",
    "RUN_ARTIFACTS",
    "RunLock",
    "claim_run_dir",
    "clear_run",
    "set_aside_later_checkpoints",
    "write_config",
]

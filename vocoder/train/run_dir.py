"""The run folder: claiming it (fresh, resumed or forced), clearing it, writing its config."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import yaml

from vocoder.checkpoint import latest_checkpoint
from vocoder.errors import InputError, remedy
from vocoder.files import atomic_output
from vocoder.train.config import ExperimentConfig, experiment_to_dict
from vocoder.train.logging import LOG_FILE, TENSORBOARD_DIR

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
RUN_ARTIFACTS = (CONFIG_FILE, "checkpoints", TENSORBOARD_DIR, LOG_FILE)


def claim_run_dir(run_dir: Path, resume: bool | str | Path, force: bool) -> Path | None:
    """The checkpoint to resume from (None: a fresh run), after checking the folder is ours."""
    if resume is not False and resume is not None and resume is not True:
        path = Path(resume)
        found = latest_checkpoint(path) if path.is_dir() else path
        if found is None or not found.is_file():
            raise InputError(path, "no checkpoint to resume from")
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
        log.info("%s has no checkpoint yet: starting a new run", run_dir)
        return None
    if run_dir.is_file():
        raise InputError(run_dir, "is a file, not a run folder")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not force:
        raise InputError(
            run_dir,
            "is not empty",
            [remedy("to continue its run", resume=True), remedy("to start over", force=True)],
        )
    return None


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


def write_config(run_dir: Path, config: ExperimentConfig) -> None:
    """The run's config.yaml (atomically; it says what the checkpoints were trained with)."""
    text = yaml.safe_dump(experiment_to_dict(config), sort_keys=False)
    with atomic_output(run_dir / CONFIG_FILE, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


__all__ = ["CONFIG_FILE", "RUN_ARTIFACTS", "claim_run_dir", "clear_run", "write_config"]

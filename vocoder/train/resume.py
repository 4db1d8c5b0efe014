"""The training state a checkpoint holds, and restoring it (resume) or other weights (fine-tune)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from vocoder.checkpoint import (
    ModelInfo,
    capture_rng_state,
    lineage,
    list_checkpoints,
    load_checkpoint,
    load_model,
    restore_rng_state,
)
from vocoder.config import differences, to_dict
from vocoder.errors import ConfigError, InputError, remedy, some_of
from vocoder.model_source import resolve_model_source
from vocoder.models import FlowVocoder
from vocoder.models.config import explicit_strides
from vocoder.train.config import ExperimentConfig, experiment_to_dict
from vocoder.train.retention import non_finite_tensor

log = logging.getLogger(__name__)


def training_state(
    model,
    optimizer,
    scheduler,
    scaler,
    ema,
    config,
    step,
    epoch,
    batch_in_epoch,
    world_size=1,
    train_ids=None,
    started_from=None,
) -> dict:
    """Everything a resumed run needs to see the batches an uninterrupted one would.

    `train_ids`: the sorted stems of the training files, so that a resume on other data (or
    on a split whose test clips this run trained on) is refused (`check_same_data`).
    `started_from`: what the init_from weights carry (`lineage`), for exports and evaluate."""
    return {
        "config": experiment_to_dict(config),
        "model": model.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "step": step,
        "epoch": epoch,
        "batch_in_epoch": batch_in_epoch,
        "world_size": world_size,  # the global batch and data order depend on it
        "train_ids": train_ids,
        "started_from": started_from,
        "rng": capture_rng_state(),
    }


def load_resumable(path: Path, device: torch.device, fall_back: bool) -> tuple[Path, dict]:
    """The checkpoint at `path` when it can be read and its weights and optimizer state are
    finite; else, with `fall_back` (resuming a run folder), the newest such one before it,
    said in a warning (a kill mid-save leaves no half-written file, but a disk can)."""
    candidates = [path]
    if fall_back:
        candidates += [p for p in reversed(list_checkpoints(path.parent)) if p != path]
    first_bad = ""
    for candidate in candidates:
        try:
            state = load_checkpoint(candidate, map_location=device)
        except InputError as e:
            if not fall_back:
                raise
            bad = e.problem
        else:
            bad = non_finite_tensor(state)
            if bad is None:
                if candidate != path:
                    log.warning(
                        "%s cannot be resumed (%s): resuming from %s, the newest usable checkpoint",
                        path,
                        first_bad,
                        candidate,
                    )
                return candidate, state
            bad = f"it holds non-finite values ({bad})"
        if candidate == path:
            first_bad = bad
    more = "; no earlier checkpoint of the run is usable either" if fall_back else ""
    raise InputError(path, f"cannot resume: {first_bad}{more}")


def check_same_model(state: dict, config: ExperimentConfig, path: Path) -> None:
    """A run resumes only with the model config it was saved with."""
    saved = explicit_strides(state["config"].get("model", {}))
    changes = differences(saved, explicit_strides(to_dict(config.model)))
    if changes:
        raise ConfigError(f"{path}: cannot resume: the model config changed: {', '.join(changes)}")


def check_same_data(state: dict, train_ids: list[str], test_ids: set[str], path: Path) -> None:
    """A run resumes only on the training clips it was trained on: not on another voice's
    folder, nor on a split that now tests on clips it has trained on. (Checkpoints older
    than this record are not checked.)"""
    saved = state.get("train_ids")
    if saved is None:
        return
    start_over = remedy("instead of resuming, to start this run over on the new data", force=True)
    seen_in_test = sorted(set(saved) & test_ids)
    if seen_in_test:
        raise InputError(
            path,
            f"cannot resume: the run has trained on {_some(seen_in_test)}, which the test "
            "list now holds; scores on them would not be test scores",
            [start_over],
        )
    if saved != train_ids:
        gone, new = sorted(set(saved) - set(train_ids)), sorted(set(train_ids) - set(saved))
        changes = "; ".join(
            f"{label} {_some(ids)}" for label, ids in (("gone:", gone), ("new:", new)) if ids
        )
        raise InputError(
            path,
            f"cannot resume: the run trained on {len(saved)} clips, the training list now "
            f"has {len(train_ids)} ({changes}); is this the same data? To train on more "
            "data, start a new run from this one (train.init_from)",
            [start_over],
        )


def check_init_from(state: dict, config: ExperimentConfig, path: Path) -> None:
    """`train.init_from` seeds a fresh run; a resumed one keeps its own weights, so an
    init_from the run did not start from is refused rather than recorded untrue."""
    wanted = config.train.init_from
    started_from = state["config"].get("train", {}).get("init_from")
    if wanted and wanted != started_from:
        raise InputError(
            path,
            f"train.init_from {wanted}: this run already has checkpoints (step "
            f"{state['step']}) and resumes from them; init_from only starts a new run "
            "(train into another folder)",
            [remedy("instead of resuming, to start this one over from it", force=True)],
        )


def _some(ids: list[str]) -> str:
    return f"{len(ids)} clip(s) ({some_of(ids)})"


def restore_training_state(
    state: dict, model, optimizer, scheduler, scaler, ema, config: ExperimentConfig, world_size=1
) -> tuple[int, int, int]:
    """Load `state` into the training objects; (step, epoch, batch_in_epoch) to go on from.

    A different process count or batch size than the checkpoint's is warned about: the
    rest of the epoch is not the data the run would have seen."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    if ema is not None:
        ema.load_state_dict(state.get("ema") or model.state_dict())
    step = state["step"]
    saved = state.get("world_size", world_size)  # older checkpoints do not say
    if saved != world_size:
        batch = config.data.batch_size
        log.warning(
            "the checkpoint was trained on %d process(es), this run has %d: the global batch "
            "changes from %d to %d, and the rest of epoch %d is not the data order it would "
            "have had",
            saved,
            world_size,
            saved * batch,
            world_size * batch,
            state["epoch"],
        )
    saved_batch = state["config"].get("data", {}).get("batch_size", config.data.batch_size)
    if saved_batch != config.data.batch_size:  # the epoch resumes after batches of this size
        log.warning(
            "the checkpoint was trained with data.batch_size %d, this run has %d: the rest "
            "of epoch %d is not the data order it would have had",
            saved_batch,
            config.data.batch_size,
            state["epoch"],
        )
    set_schedule(optimizer, scheduler, config.train.lr, config.train.lr_halve_every, step)
    restore_rng_state(state["rng"])
    return step, state["epoch"], state["batch_in_epoch"]


def set_schedule(optimizer, scheduler, lr: float, halve_every: int, step: int) -> None:
    """The config's lr schedule at `step` (a resumed optimizer would keep the saved one)."""
    scheduler.step_size = halve_every
    scheduler.base_lrs = [lr] * len(optimizer.param_groups)
    current = lr * 0.5 ** (step // halve_every)
    for group in optimizer.param_groups:
        group["initial_lr"] = lr
        group["lr"] = current
    scheduler._last_lr = [current] * len(optimizer.param_groups)


def init_source(config: ExperimentConfig, run_dir: Path, force: bool) -> Path:
    """The weights `train.init_from` names, checked before a fresh run clears its folder:
    a file, run folder or export, a published checkpoint (imported once into the cache) or
    a pretrained model's name, as `--model` takes, holding training-form weights of the
    config's model and mel convention."""
    given = str(config.train.init_from)
    path = resolve_model_source(given)
    named = Path(os.path.abspath(os.path.expanduser(given)))  # a link in the folder too
    if force and any(_inside(p, Path(run_dir)) for p in (named, path.resolve())):
        raise InputError(
            given,
            f"train.init_from lies in the run folder {run_dir}, which --force clears first; "
            "copy it out, or train into another folder",
        )
    load_init_weights(config, path)
    return path


def _inside(path: Path, folder: Path) -> bool:
    """Whether `path` is `folder` or lies below it (the folder's links resolved)."""
    folder = folder.resolve()
    return any(p in (folder, Path(os.path.abspath(folder))) for p in (path, *path.parents))


def load_init_weights(config: ExperimentConfig, path: Path) -> tuple[FlowVocoder, ModelInfo]:
    """The model at `path`, refused unless it is training-form and of the config's model and
    mel convention (what to set to match it is said)."""
    source, info = load_model(path)
    if info.form != "training":
        raise InputError(
            path,
            "init_from needs training-form weights (a .pt checkpoint or an export of a "
            "training-form model), not an inference-form export",
        )
    # the mel convention first: the model's copies of it follow from features
    for name, theirs, mine in (
        ("features", info.features, config.features),
        ("model", info.model, config.model),
    ):
        theirs, mine = to_dict(theirs), to_dict(mine)
        if name == "model":
            theirs, mine = explicit_strides(theirs), explicit_strides(mine)
        changes = differences(theirs, mine)
        if changes:
            settings = " ".join(  # one shell word each, as overrides are given
                f"{name}.{key}={json.dumps(value, separators=(',', ':'))}"
                for key, value in theirs.items()
                if value != mine.get(key)
            )
            raise ConfigError(
                f"train.init_from {path}: its {name} config differs: {', '.join(changes)}; "
                f"to fine-tune it, set {settings}"
            )
    return source, info


def init_weights(model: FlowVocoder, config: ExperimentConfig, path: Path) -> dict:
    """Start from another run's (or an export's, or a published model's) weights: the
    fine-tuning start. `path`: what `init_source` resolved. Returns what those weights
    carry into this run's checkpoints (`lineage`)."""
    source, info = load_init_weights(config, path)
    model.load_state_dict(source.state_dict())
    given = config.train.init_from
    named = path if str(path) == given else f"{given} ({path})"
    at_step = "" if info.step is None else f", step {info.step}"
    log.info("initialised from %s (%s weights%s)", named, info.weights, at_step)
    return {"init_from": given, **lineage(info.metadata)}


__all__ = [
    "training_state",
    "load_resumable",
    "check_same_model",
    "restore_training_state",
    "set_schedule",
    "init_source",
    "init_weights",
]

"""The training loop: maximum likelihood on random audio segments, resumable, DDP-ready.

`train(config, run_dir)` reads top to bottom: join the job, claim the run folder, build the
data, model, optimizer (Adam), schedule (StepLR, halving) and EMA, restore a checkpoint,
then loop: forward under autocast, backward, clip, step, log, validate, checkpoint.

Guarantees:
- Resumable to the batch: a checkpoint holds the step, the epoch and the batch within it,
  and the samplers and segment choices are functions of (seed, epoch), so a resumed run
  sees exactly the batches an uninterrupted one would (same losses on CPU).
- Nothing poisons the weights: a step whose loss or gradient is not finite is skipped (no
  optimizer step, counted, warned about); 100 in a row stop the run.
- Only rank 0 writes, and it holds the run folder's lock: a second trainer is refused.
  SIGINT/SIGTERM stop all ranks after the current step, with a checkpoint, and so does
  the death of torchrun (its workers would train on unseen); a SIGKILL loses at most the
  steps since the last checkpoint.
- Resuming from an earlier checkpoint of the same run (a rollback) moves the later ones
  aside, so that they are not taken for this run's latest.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler

from vocoder.checkpoint import (
    capture_rng_state,
    checkpoint_path,
    restore_rng_state,
    save_checkpoint,
)
from vocoder.data.prepare import check_prepared
from vocoder.data.segments import SegmentDataset, check_mels_exist
from vocoder.errors import ConfigError, VocoderError, some_of
from vocoder.models import build_model
from vocoder.precision import default_precision
from vocoder.train import distributed
from vocoder.train.config import ExperimentConfig
from vocoder.train.data import (
    SkipSampler,
    check_no_test_files,
    filelist_files,
    loader_workers,
    optional_path,
    stems_of_test_list,
)
from vocoder.train.ema import EMA
from vocoder.train.logging import TrainLog
from vocoder.train.resume import (
    check_init_from,
    check_same_data,
    check_same_model,
    init_source,
    init_weights,
    load_resumable,
    restore_training_state,
    training_state,
)
from vocoder.train.retention import prune_checkpoints
from vocoder.train.run_dir import (
    RunLock,
    claim_run_dir,
    clear_run,
    set_aside_later_checkpoints,
    write_config,
)
from vocoder.train.signals import StopRequest, leave_stop_signals_to_the_trainer
from vocoder.train.stats import RunningStats, log_stats_line
from vocoder.train.step import LogLikelihood, train_step
from vocoder.train.validation import validate, validation_set

log = logging.getLogger(__name__)

MAX_BAD_STEPS_IN_A_ROW = 100
# Set to a path prefix: each rank writes its final weight digest to PREFIX.rankN (tests).
DIGEST_ENV = "VOCODER_DEBUG_WEIGHTS_DIGEST"


@dataclass(frozen=True)
class Progress:
    """What rank 0 reports after every step (for a progress bar)."""

    step: int
    max_steps: int
    start_step: int
    loss: float
    steps_per_s: float
    skipped: int


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path | None
    skipped_steps: int
    stopped_early: bool  # by SIGINT/SIGTERM
    stop_signal: int | None = None  # the signal this process got, if it got one


ProgressCallback = Callable[[Progress], None]


def check_startable(
    config: ExperimentConfig,
    run_dir: Path,
    resume: bool | str | Path,
    force: bool,
    thorough: bool = False,
) -> tuple[Path | None, Path | None]:
    """What `train` checks before it makes anything: the run folder is ours to write (or
    to resume: the checkpoint, None for a fresh run), a fresh run's init_from is weights of
    its model (their file, or None), and the data folder fits the mel convention; returns
    (checkpoint to resume, init_from file). A launcher of several processes asks it first,
    `thorough`, so that a mistake is said once, not once a process: then the training
    files, and the checkpoint a resume continues from, are checked too."""
    resume_from = claim_run_dir(Path(run_dir), resume, force)
    init_path = None
    if config.train.init_from and resume_from is None:  # before --force clears the folder
        init_path = init_source(config, Path(run_dir), force)
    if config.data.prepared is not None:
        check_prepared(config.data.prepared, config.features, config.data.segment_length)
    if thorough:
        _, train_ids, test_ids = training_files(config)
        if resume_from is not None:
            resume_from, state = load_resumable(
                resume_from, torch.device("cpu"), fall_back=_from_folder(resume)
            )
            check_resumable(state, config, resume_from, train_ids, test_ids)
    return resume_from, init_path


def training_files(config: ExperimentConfig) -> tuple[list[Path], list[str], set[str]]:
    """The training files, their ids (sorted stems) and the test list's ids, checked apart."""
    train_files = filelist_files(config.data.filelist("train"), "train")
    test_ids = stems_of_test_list(config)
    check_no_test_files(train_files, test_ids)
    return train_files, sorted(p.stem for p in train_files), test_ids


def check_resumable(
    state: dict, config: ExperimentConfig, path: Path, train_ids: list[str], test_ids: set[str]
) -> None:
    """A checkpoint resumes only this model, on these clips, below train.max_steps."""
    check_same_model(state, config, path)
    check_same_data(state, train_ids, test_ids, path)
    check_init_from(state, config, path)
    if int(state["step"]) > config.train.max_steps:
        raise ConfigError(
            f"{path}: the run is at step {state['step']}, past train.max_steps "
            f"{config.train.max_steps}; raise it to train on"
        )


def _from_folder(resume: bool | str | Path) -> bool:
    """Whether a resume names a run folder (whose earlier checkpoints it may fall back on)."""
    return resume is True or Path(resume).is_dir()


def train(
    config: ExperimentConfig,
    run_dir: str | Path,
    resume: bool | str | Path = False,
    force: bool = False,
    progress: ProgressCallback | None = None,
    stop_event: threading.Event | None = None,
) -> TrainResult:
    """Train `config` into `run_dir`; see the module docstring.

    `resume`: False starts a new run (`run_dir` must hold no earlier run unless `force`,
    which deletes that run's checkpoints and logs); True continues from `run_dir`'s latest
    checkpoint (or starts fresh when it has none); a path continues from that checkpoint.
    A config it refuses leaves an earlier run as it was, `force` or not; the caller's
    Python, numpy and torch generators are given back as they were. `stop_event`: set (from
    any thread) to end the run after its step with a checkpoint, as SIGINT/SIGTERM do in
    the main thread (`stopped_early` in the result).
    """
    if not isinstance(config, ExperimentConfig):  # a path, say: said, not an AttributeError
        raise ConfigError(
            f"train: expected an ExperimentConfig (load_experiment_config(path)), got "
            f"{type(config).__name__} {config!r}"[:300]
        )
    run_dir = Path(run_dir)
    tc, dc = config.train, config.data
    callers_rng = capture_rng_state()  # seeded and restored for the run, given back after
    dist = distributed.setup(tc.device)
    train_log, lock = None, None
    try:
        # ---- the run folder: every rank decides, then rank 0 alone locks and writes ----
        resume_from, init_path = check_startable(config, run_dir, resume, force)
        if dist.is_main:
            lock = RunLock(run_dir)
        distributed.barrier(dist)
        device = dist.device
        if tc.precision == "fp16" and device.type != "cuda":
            raise ConfigError("train.precision fp16 needs a CUDA device; use bf16 or fp32")
        if tc.precision == "auto":  # the run folder's config.yaml records the choice
            tc = replace(tc, precision=default_precision(device))
            config = replace(config, train=tc)
            log.info("train.precision auto: %s on %s", tc.precision, device)
        torch.manual_seed(tc.seed)

        # ---- data ----
        train_files, train_ids, test_ids = training_files(config)
        if dc.mel_dir is not None:
            check_mels_exist(train_files, Path(dc.mel_dir))
        dataset = SegmentDataset(
            train_files,
            config.features,
            dc.segment_length,
            seed=tc.seed,
            mel_dir=optional_path(dc.mel_dir),
        )
        sampler = DistributedSampler(
            dataset, dist.world_size, dist.rank, shuffle=True, seed=tc.seed, drop_last=True
        )
        batches_per_epoch = len(sampler) // dc.batch_size
        if batches_per_epoch == 0:
            raise ConfigError(
                f"data: {len(dataset)} training files make no batch of {dc.batch_size} "
                f"on each of {dist.world_size} process(es)"
            )
        valid_set = validation_set(config) if dist.is_main else []
        if dist.is_main:  # once the data is checked: --force keeps a run it would refuse
            clear_run(run_dir, fresh=resume_from is None)

        # ---- model, optimizer, schedule, precision, EMA ----
        model = build_model(config.model).to(device)
        started_from = None  # what the init_from weights carry: their origin, their clips
        if init_path is not None:  # resuming, the checkpoint has the weights
            started_from = init_weights(model, config, init_path)
            seen = sorted(set(started_from.get("train_ids", ())) & test_ids)
            if seen and dist.is_main:  # another split of the data those weights learnt
                log.warning(
                    "the test list holds %d clip(s) the init_from weights were trained on "
                    "(%s): scores on them are not test figures (evaluate says so)",
                    len(seen),
                    some_of(seen),
                )
        optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, tc.lr_halve_every, gamma=0.5)
        scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "fp16")
        ema = EMA(model, tc.ema_decay) if tc.ema_decay else None

        # ---- resume ----
        step, epoch, batch_in_epoch = 0, 0, 0
        if resume_from is not None:
            resume_from, state = load_resumable(resume_from, device, fall_back=_from_folder(resume))
            check_resumable(state, config, resume_from, train_ids, test_ids)
            step, epoch, batch_in_epoch = restore_training_state(
                state, model, optimizer, scheduler, scaler, ema, config, dist.world_size
            )
            started_from = state.get("started_from")
            log.info("resumed from %s at step %d (epoch %d)", resume_from, step, epoch)
            if dist.is_main:
                set_aside_later_checkpoints(run_dir, resume_from)
        objective = distributed.wrap(LogLikelihood(model), dist)
        train_log = TrainLog(run_dir, start_step=step, enabled=dist.is_main)
        if dist.is_main:
            write_config(run_dir, config)  # once everything above has been checked
            log.info(
                "training %s (%s parameters) on %s x %d, from step %d to %d; run folder %s",
                config.model.family,
                f"{model.parameter_count():,}",
                device,
                dist.world_size,
                step,
                tc.max_steps,
                run_dir,
            )

        workers = loader_workers(dc.num_workers)
        if workers < dc.num_workers and dist.is_main:
            log.info(
                "data.num_workers %d: %d loader process(es), one a CPU core here",
                dc.num_workers,
                workers,
            )

        # ---- the loop ----
        start_step, skipped, bad_in_a_row = step, 0, 0
        stats_since_log = RunningStats()
        saved = resume_from if resume_from is not None and step >= tc.max_steps else None
        stop = StopRequest(watch_parent=dist.enabled, event=stop_event)
        with stop.installed():
            while step < tc.max_steps and not stop.agreed:
                sampler.set_epoch(epoch)
                dataset.set_epoch(epoch)
                loader = DataLoader(
                    dataset,
                    batch_size=dc.batch_size,
                    sampler=SkipSampler(sampler, batch_in_epoch * dc.batch_size),
                    num_workers=workers,
                    pin_memory=device.type == "cuda",
                    drop_last=True,
                    generator=torch.Generator().manual_seed(tc.seed + epoch),
                    worker_init_fn=leave_stop_signals_to_the_trainer,
                )
                for audio, mel in loader:
                    audio = audio.to(device, non_blocking=True)
                    mel = mel.to(device, non_blocking=True)
                    result = train_step(
                        objective,
                        optimizer,
                        scaler,
                        audio,
                        mel,
                        precision=tc.precision,
                        grad_clip=tc.grad_clip,
                        dist=dist,
                        stop_requested=stop.poll(),
                    )
                    lr = optimizer.param_groups[0]["lr"]  # the rate this step used
                    scheduler.step()
                    step += 1
                    batch_in_epoch += 1
                    stop.agreed = result.stop
                    if result.skipped:
                        skipped += 1
                        bad_in_a_row += 1
                        log.warning(
                            "step %d: non-finite loss or gradient, update skipped (%d so far)",
                            step,
                            skipped,
                        )
                        if bad_in_a_row >= MAX_BAD_STEPS_IN_A_ROW:
                            raise VocoderError(
                                f"training diverged: {bad_in_a_row} steps in a row with a "
                                "non-finite loss or gradient; lower train.lr or use fp32"
                            )
                    else:
                        bad_in_a_row = 0
                        if ema is not None:
                            ema.update(model)
                        stats_since_log.add(result.loss, result.grad_norm)

                    if dist.is_main and progress is not None:
                        rate = stats_since_log.steps_per_s()
                        progress(
                            Progress(step, tc.max_steps, start_step, result.loss, rate, skipped)
                        )
                    if dist.is_main and step % tc.log_every == 0:
                        stats = stats_since_log.summary()
                        stats.update(lr=lr, skipped=skipped)
                        train_log.scalars(step, stats)
                        if progress is None:
                            log_stats_line(step, tc.max_steps, stats)
                        stats_since_log.reset()
                    validated = dist.is_main and bool(valid_set) and step % tc.valid_every == 0
                    if validated:
                        scored = ema.model_like(model) if ema is not None else model
                        scores = validate(
                            scored, valid_set, config, step, train_log, stop=stop.poll
                        )
                        if scores is None:
                            log.info("step %d: validation cut short by the stop request", step)
                        else:
                            log.info("step %d: valid LL %.4f nats/sample", step, scores["ll"])
                    if not dist.enabled:  # one process needs no agreement: a stop asked
                        stop.agreed = stop.agreed or stop.poll()  # in this step ends it
                    done = step >= tc.max_steps or stop.agreed
                    # A stop asked while this process validated alone: the others wait for
                    # it in the next step, and the launcher kills all after 30 s. This
                    # step's weights are whole (replicas agree after each step): save now.
                    stopping_alone = validated and stop.requested and not done
                    if dist.is_main and (step % tc.checkpoint_every == 0 or done or stopping_alone):
                        state = training_state(
                            model,
                            optimizer,
                            scheduler,
                            scaler,
                            ema,
                            config,
                            step,
                            epoch,
                            batch_in_epoch,
                            dist.world_size,
                            train_ids,
                            started_from,
                        )
                        saved = save_checkpoint(
                            checkpoint_path(run_dir, step), state, overwrite=True
                        )
                        prune_checkpoints(run_dir, tc.keep_last)
                        train_log.flush()
                        log.info("step %d: saved %s", step, saved)
                    if done:
                        break
                else:  # the epoch ran out before max_steps
                    epoch += 1
                    batch_in_epoch = 0

        # ---- the end: every replica must hold the same weights ----
        if dist.enabled or os.environ.get(DIGEST_ENV):
            digest = distributed.check_replicas_equal(model, dist)
            if os.environ.get(DIGEST_ENV):
                Path(f"{os.environ[DIGEST_ENV]}.rank{dist.rank}").write_text(digest + "\n")
        distributed.barrier(dist)  # no replica leaves the group while another still uses it
        if skipped and skipped == step - start_step:
            raise VocoderError(
                f"training made no progress: all {skipped} steps were skipped (non-finite loss "
                "or gradient); lower train.lr or use fp32"
            )
        if skipped and dist.is_main:
            log.warning("%d of %d steps were skipped (non-finite)", skipped, step - start_step)
        return TrainResult(
            run_dir,
            step,
            saved,
            skipped,
            stopped_early=stop.agreed and step < tc.max_steps,
            stop_signal=stop.signal,
        )
    except RuntimeError as e:  # a peer's death reaches the others through a collective
        lost = distributed.peer_lost(e, dist)
        if lost is None:
            raise
        raise lost from e  # --verbose shows the collective's own error
    finally:
        if train_log is not None:
            train_log.close()
        if lock is not None:
            lock.release()
        distributed.cleanup(dist)
        restore_rng_state(callers_rng)


__all__ = ["train", "check_startable", "Progress", "TrainResult", "ProgressCallback", "DIGEST_ENV"]

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
- Only rank 0 writes. SIGINT/SIGTERM stop all ranks after the current step, with a
  checkpoint; a SIGKILL loses at most the steps since the last checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from vocoder.checkpoint import (
    capture_rng_state,
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model,
    non_finite_tensor,
    prune_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from vocoder.config import to_dict
from vocoder.data.filelist import read_filelist
from vocoder.data.prepare import check_prepared
from vocoder.data.segments import SegmentDataset, UtteranceDataset
from vocoder.errors import ConfigError, InputError, VocoderError
from vocoder.features import MelSpectrogram
from vocoder.files import atomic_output
from vocoder.models import FlowVocoder, build_model
from vocoder.train import distributed
from vocoder.train.config import ExperimentConfig, experiment_to_dict
from vocoder.train.logging import LOG_FILE, TENSORBOARD_DIR, TrainLog

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
RUN_ARTIFACTS = (CONFIG_FILE, "checkpoints", TENSORBOARD_DIR, LOG_FILE)
MAX_BAD_STEPS_IN_A_ROW = 100
# Set to a path prefix: each rank writes its final weight digest to PREFIX.rankN (tests).
DIGEST_ENV = "VOCODER_DEBUG_WEIGHTS_DIGEST"
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


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


def train(
    config: ExperimentConfig,
    run_dir: str | Path,
    resume: bool | str | Path = False,
    force: bool = False,
    progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train `config` into `run_dir`; see the module docstring.

    `resume`: False starts a new run (`run_dir` must hold no earlier run unless `force`,
    which deletes that run's checkpoints and logs); True continues from `run_dir`'s latest
    checkpoint (or starts fresh when it has none); a path continues from that checkpoint.
    """
    run_dir = Path(run_dir)
    tc, dc = config.train, config.data
    dist = distributed.setup(tc.device)
    train_log = None
    try:
        # ---- the run folder: every rank decides, then rank 0 alone writes ----
        resume_from = _claim_run_dir(run_dir, resume, force)
        distributed.barrier(dist)
        if dist.is_main:
            _clear_run(run_dir, fresh=resume_from is None)
        device = dist.device
        if tc.precision == "fp16" and device.type != "cuda":
            raise ConfigError("train.precision fp16 needs a CUDA device; use bf16 or fp32")
        torch.manual_seed(tc.seed)
        torch.backends.cudnn.benchmark = False

        # ---- data ----
        if dc.prepared is not None:
            check_prepared(dc.prepared, config.features)
        train_files = _files(dc.filelist("train"), "train")
        _check_no_test_files(train_files, config)
        dataset = SegmentDataset(
            train_files, config.features, dc.segment_length, seed=tc.seed, mel_dir=_path(dc.mel_dir)
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
        valid_set = _validation_set(config) if dist.is_main else []

        # ---- model, optimizer, schedule, precision, EMA ----
        model = build_model(config.model).to(device)
        if tc.init_from and resume_from is None:  # resuming, the checkpoint has the weights
            _init_weights(model, config, Path(tc.init_from))
        optimizer = torch.optim.Adam(model.parameters(), lr=tc.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, tc.lr_halve_every, gamma=0.5)
        scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "fp16")
        ema = EMA(model, tc.ema_decay) if tc.ema_decay else None

        # ---- resume ----
        step, epoch, batch_in_epoch = 0, 0, 0
        if resume_from is not None:
            from_folder = resume is True or Path(resume).is_dir()
            resume_from, state = _load_resumable(resume_from, device, fall_back=from_folder)
            _check_same_model(state, config, resume_from)
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            if ema is not None:
                ema.load_state_dict(state.get("ema") or model.state_dict())
            step, epoch, batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
            _set_schedule(optimizer, scheduler, tc.lr, tc.lr_halve_every, step)
            restore_rng_state(state["rng"])
            log.info("resumed from %s at step %d (epoch %d)", resume_from, step, epoch)
        objective = distributed.wrap(LogLikelihood(model), dist)
        train_log = TrainLog(run_dir, start_step=step, enabled=dist.is_main)
        if dist.is_main:
            _write_config(run_dir, config)  # once everything above has been checked
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

        # ---- the loop ----
        start_step, skipped, bad_in_a_row = step, 0, 0
        window = Window()
        saved = resume_from if resume_from is not None and step >= tc.max_steps else None
        stop = StopRequest()
        with stop.installed():
            while step < tc.max_steps and not stop.agreed:
                sampler.set_epoch(epoch)
                dataset.set_epoch(epoch)
                loader = DataLoader(
                    dataset,
                    batch_size=dc.batch_size,
                    sampler=SkipSampler(sampler, batch_in_epoch * dc.batch_size),
                    num_workers=dc.num_workers,
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
                        stop_requested=stop.requested,
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
                        window.add(result.loss, result.grad_norm)

                    if dist.is_main and progress is not None:
                        rate = window.steps_per_s()
                        progress(
                            Progress(step, tc.max_steps, start_step, result.loss, rate, skipped)
                        )
                    if dist.is_main and step % tc.log_every == 0:
                        stats = window.summary()
                        stats.update(lr=lr, skipped=skipped)
                        train_log.scalars(step, stats)
                        if progress is None:
                            _log_line(step, tc.max_steps, stats)
                        window.reset()
                    if dist.is_main and valid_set and step % tc.valid_every == 0:
                        scored = ema.model_like(model) if ema is not None else model
                        scores = validate(scored, valid_set, config, step, train_log)
                        log.info("step %d: valid LL %.4f nats/sample", step, scores["ll"])
                    done = step >= tc.max_steps or stop.agreed
                    if dist.is_main and (step % tc.checkpoint_every == 0 or done):
                        state = _training_state(
                            model,
                            optimizer,
                            scheduler,
                            scaler,
                            ema,
                            config,
                            step,
                            epoch,
                            batch_in_epoch,
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
    finally:
        if train_log is not None:
            train_log.close()
        distributed.cleanup(dist)


# ---- one optimisation step ----


class LogLikelihood(nn.Module):
    """The training objective as a module (so DDP can wrap it): mean LL per sample, `[B]`."""

    def __init__(self, model: FlowVocoder):
        super().__init__()
        self.model = model

    def forward(self, audio: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        return self.model.log_prob(audio, mel)


@dataclass(frozen=True)
class StepResult:
    loss: float  # mean over all ranks
    grad_norm: float  # before clipping
    skipped: bool
    stop: bool  # some rank asked to stop


def train_step(
    objective: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    audio: torch.Tensor,
    mel: torch.Tensor,
    precision: str = "fp32",
    grad_clip: float | None = None,
    dist: distributed.DistInfo | None = None,
    stop_requested: bool = False,
) -> StepResult:
    """Forward, backward, clip and (when everything is finite) step.

    Every rank takes the same decision: the loss is averaged over ranks and the gradient
    norm is computed after DDP's all-reduce. With fp16, overflowing gradients are the
    GradScaler's business (it skips and lowers the scale); they are not counted as bad.
    """
    device_type = audio.device.type
    dtype = AUTOCAST_DTYPES.get(precision)
    autocast = torch.autocast(device_type, dtype=dtype) if dtype else contextlib.nullcontext()
    optimizer.zero_grad(set_to_none=True)
    with autocast:
        ll = objective(audio, mel)
    loss = -ll.float().mean()
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip or math.inf)
    # one collective for both: the mean loss and whether any rank wants to stop
    shared = torch.stack([loss.detach(), torch.tensor(float(stop_requested), device=loss.device)])
    if dist is not None:
        shared = distributed.all_reduce_mean(shared, dist)
    mean_loss, stop = float(shared[0]), bool(shared[1] > 0)
    norm = float(grad_norm)
    skipped = not math.isfinite(mean_loss) or (not math.isfinite(norm) and precision != "fp16")
    if not skipped:
        scaler.step(optimizer)
    scaler.update()
    return StepResult(mean_loss, norm, skipped, stop)


class EMA:
    """Exponential moving average of a model's weights: `avg += (1 - decay) (w - avg)`."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self._model: nn.Module | None = None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                self.shadow[name].lerp_(value, 1.0 - self.decay)
            else:
                self.shadow[name].copy_(value)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            self.shadow[name].copy_(value)

    def model_like(self, model: FlowVocoder) -> FlowVocoder:
        """A model of `model`'s kind holding the averaged weights (one copy, reused)."""
        if self._model is None:
            self._model = build_model(model.config).to(next(model.parameters()).device)
        self._model.load_state_dict(self.shadow)
        return self._model


# ---- validation ----


@torch.no_grad()
def validate(
    model: FlowVocoder,
    items: list[tuple[torch.Tensor, torch.Tensor, str]],
    config: ExperimentConfig,
    step: int,
    train_log: TrainLog,
) -> dict[str, float]:
    """Mean LL over whole validation utterances; a few clips synthesized for TensorBoard."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    to_mel = MelSpectrogram(config.features).to(device)
    lls = []
    for i, (audio, mel, name) in enumerate(items):
        audio, mel = audio.to(device)[None], mel.to(device)[None]
        lls.append(float(model.log_prob(audio, mel)[0]))
        if i < config.data.valid_audio_clips:
            generator = torch.Generator(device).manual_seed(config.train.seed + i)
            fake = model.infer(mel, sigma=config.train.valid_sigma, generator=generator)
            fake = fake[0, : audio.shape[1]].clamp(-1, 1)
            rate = config.features.sample_rate
            train_log.audio(f"valid/{name}/synthesized", fake, step, rate)
            train_log.mel_image(f"valid/{name}/mel_synthesized", to_mel(fake), step)
            if name not in train_log.logged_references:  # once per process is enough
                train_log.audio(f"valid/{name}/reference", audio[0], step, rate)
                train_log.mel_image(f"valid/{name}/mel_reference", mel[0], step)
                train_log.logged_references.add(name)
    model.train(was_training)
    scores = {"ll": sum(lls) / len(lls)}
    train_log.scalars(step, scores, kind="valid")
    return scores


# ---- data helpers ----


class SkipSampler(Sampler[int]):
    """The indices of `sampler` after the first `skip` (to resume mid-epoch)."""

    def __init__(self, sampler: Sampler[int], skip: int):
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        for i, index in enumerate(self.sampler):
            if i >= self.skip:
                yield index

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


def _files(filelist: Path | None, part: str) -> list[Path]:
    if filelist is None:
        raise ConfigError(f"data: no {part} filelist")
    files = read_filelist(filelist)
    if not files:
        raise InputError(filelist, f"the {part} filelist is empty")
    return files


def _check_no_test_files(train_files: list[Path], config: ExperimentConfig) -> None:
    """Refuse to train on any file of the test list (matched by name stem)."""
    test_list = config.data.filelist("test")
    if test_list is None or not test_list.is_file():
        return
    test_stems = {p.stem for p in read_filelist(test_list, check_exists=False)}
    leaked = sorted({p.stem for p in train_files} & test_stems)
    if leaked:
        shown = ", ".join(leaked[:5]) + (" ..." if len(leaked) > 5 else "")
        raise ConfigError(f"data: {len(leaked)} training file(s) are in the test list: {shown}")


def _path(value: str | None) -> Path | None:
    return Path(value) if value is not None else None


def _validation_set(config: ExperimentConfig) -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    """The first `valid_max_files` validation utterances, loaded once."""
    filelist = config.data.filelist("valid")
    if filelist is None or config.data.valid_max_files == 0:
        log.info("no validation filelist: validation is off")
        return []
    files = read_filelist(filelist)[: config.data.valid_max_files]
    dataset = UtteranceDataset(files, config.features, mel_dir=_path(config.data.mel_dir))
    return [dataset[i] for i in range(len(dataset))]


class Window:
    """Running means of the logged scalars and the step rate since the last reset."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.losses: list[float] = []
        self.norms: list[float] = []
        self.steps = 0
        self.start = time.perf_counter()

    def add(self, loss: float, grad_norm: float) -> None:
        self.losses.append(loss)
        if math.isfinite(grad_norm):
            self.norms.append(grad_norm)

    def steps_per_s(self) -> float:
        elapsed = time.perf_counter() - self.start
        return len(self.losses) / elapsed if elapsed > 0 else 0.0

    def summary(self) -> dict[str, float]:
        loss = sum(self.losses) / len(self.losses) if self.losses else math.nan
        norm = sum(self.norms) / len(self.norms) if self.norms else math.nan
        return {"loss": loss, "ll": -loss, "grad_norm": norm, "steps_per_s": self.steps_per_s()}


def _log_line(step: int, max_steps: int, stats: dict[str, float]) -> None:
    rate = stats["steps_per_s"]
    eta = (max_steps - step) / rate if rate > 0 else math.nan
    eta_text = time.strftime("%H:%M:%S", time.gmtime(eta)) if math.isfinite(eta) else "?"
    if math.isfinite(eta) and eta >= 86400:
        eta_text = f"{eta / 86400:.1f} days"
    log.info(
        f"step {step}/{max_steps}  loss {stats['loss']:.4f}  LL {stats['ll']:.4f}  "
        f"grad {stats['grad_norm']:.3g}  lr {stats['lr']:.3g}  {rate:.2f} steps/s  ETA {eta_text}"
    )


# ---- run folder, checkpoints, fine-tuning ----


def _claim_run_dir(run_dir: Path, resume: bool | str | Path, force: bool) -> Path | None:
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
            "is not empty; pass --resume to continue its run or --force to start over",
        )
    return None


def _load_resumable(path: Path, device: torch.device, fall_back: bool) -> tuple[Path, dict]:
    """The checkpoint at `path` when its weights and optimizer state are finite; else, with
    `fall_back` (resuming a run folder), the newest finite one before it, said in a warning."""
    candidates = [path]
    if fall_back:
        candidates += [p for p in reversed(list_checkpoints(path.parent)) if p != path]
    first_bad = ""
    for candidate in candidates:
        state = load_checkpoint(candidate, map_location=device)
        bad = non_finite_tensor(state)
        if bad is None:
            if candidate != path:
                log.warning(
                    "%s holds non-finite values (%s): resuming from %s, the newest finite "
                    "checkpoint",
                    path,
                    first_bad,
                    candidate,
                )
            return candidate, state
        if candidate == path:
            first_bad = bad
    more = "; no earlier checkpoint of the run is finite either" if fall_back else ""
    raise InputError(path, f"cannot resume: it holds non-finite values ({first_bad}){more}")


def _clear_run(run_dir: Path, fresh: bool) -> None:
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


def _write_config(run_dir: Path, config: ExperimentConfig) -> None:
    text = yaml.safe_dump(experiment_to_dict(config), sort_keys=False)
    with atomic_output(run_dir / CONFIG_FILE, overwrite=True) as tmp:
        tmp.write_text(text, encoding="utf-8")


def _training_state(
    model, optimizer, scheduler, scaler, ema, config, step, epoch, batch_in_epoch
) -> dict:
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
        "rng": capture_rng_state(),
    }


def _set_schedule(optimizer, scheduler, lr: float, halve_every: int, step: int) -> None:
    """The config's lr schedule at `step` (a resumed optimizer would keep the saved one)."""
    scheduler.step_size = halve_every
    scheduler.base_lrs = [lr] * len(optimizer.param_groups)
    current = lr * 0.5 ** (step // halve_every)
    for group in optimizer.param_groups:
        group["initial_lr"] = lr
        group["lr"] = current
    scheduler._last_lr = [current] * len(optimizer.param_groups)


def _check_same_model(state: dict, config: ExperimentConfig, path: Path) -> None:
    saved = state["config"].get("model", {})
    wanted = to_dict(config.model)
    diff = [k for k in sorted(set(saved) | set(wanted)) if saved.get(k) != wanted.get(k)]
    if diff:
        changes = ", ".join(f"{k} ({saved.get(k)!r} -> {wanted.get(k)!r})" for k in diff)
        raise ConfigError(f"{path}: cannot resume: the model config changed: {changes}")


def _init_weights(model: FlowVocoder, config: ExperimentConfig, path: Path) -> None:
    """Start from another run's (or an export's) weights: the fine-tuning start."""
    source, info = load_model(path)
    if info.form != "training":
        raise InputError(
            path,
            "init_from needs training-form weights (a .pt checkpoint or an export of a "
            "training-form model), not an inference-form export",
        )
    for name, mine, theirs in (
        ("model", to_dict(config.model), to_dict(info.model)),
        ("features", to_dict(config.features), to_dict(info.features)),
    ):
        diff = [k for k in mine if mine[k] != theirs.get(k)]
        if diff:
            changes = ", ".join(f"{k} ({theirs.get(k)!r} there, {mine[k]!r} here)" for k in diff)
            raise ConfigError(f"train.init_from {path}: its {name} config differs: {changes}")
    model.load_state_dict(source.state_dict())
    log.info("initialised from %s (%s weights, step %s)", path, info.weights, info.step)


def leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """A DataLoader worker moves to a process group of its own.

    Ctrl-C, `timeout` and cluster schedulers signal the whole process group; a worker killed
    by it would make the loader fail the step before the trainer could checkpoint. The
    loader can still stop its workers itself, and they exit when the trainer dies.
    """
    os.setpgrp()


class StopRequest:
    """SIGINT/SIGTERM set a flag; the loop stops (all ranks agreeing) after the step."""

    def __init__(self):
        self.requested = False
        self.agreed = False
        self.signal: int | None = None

    def _handler(self, signum, frame) -> None:
        if self.requested:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.requested = True
        self.signal = signum
        log.warning("stop requested: finishing this step and saving a checkpoint")

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


__all__ = [
    "train",
    "train_step",
    "validate",
    "EMA",
    "LogLikelihood",
    "SkipSampler",
    "Progress",
    "TrainResult",
    "StepResult",
    "CONFIG_FILE",
]

"""Validation during training: likelihood of whole utterances, a few clips for TensorBoard."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator

import torch

from vocoder.data.filelist import read_filelist
from vocoder.data.segments import UtteranceDataset
from vocoder.features import MelSpectrogram
from vocoder.models import FlowVocoder
from vocoder.train.config import ExperimentConfig
from vocoder.train.data import optional_path
from vocoder.train.logging import TrainLog

log = logging.getLogger(__name__)

ValidationItem = tuple[torch.Tensor, torch.Tensor, str]  # audio, mel, name


def validation_set(config: ExperimentConfig) -> list[ValidationItem]:
    """The first `valid_max_files` validation utterances, loaded once."""
    filelist = config.data.filelist("valid")
    if filelist is None or config.data.valid_max_files == 0:
        log.info("no validation filelist: validation is off")
        return []
    files = read_filelist(filelist)[: config.data.valid_max_files]
    if not files:
        log.warning("%s lists no files: validation is off", filelist)
        return []
    dataset = UtteranceDataset(files, config.features, mel_dir=optional_path(config.data.mel_dir))
    return [dataset[i] for i in range(len(dataset))]


@torch.no_grad()
def validate(
    model: FlowVocoder,
    items: list[ValidationItem],
    config: ExperimentConfig,
    step: int,
    train_log: TrainLog,
    stop: Callable[[], bool] | None = None,
) -> dict[str, float] | None:
    """Mean LL over whole validation utterances; a few clips synthesized for TensorBoard.

    `stop`: asked before every module call of the model; when it says True, validation ends
    there and returns None (a stop request must not wait minutes for a clip synthesized on
    a CPU).
    """
    was_training = model.training
    model.eval()
    try:
        with _stoppable(model, stop or (lambda: False)):
            return _validate(model, items, config, step, train_log)
    except _Stopped:
        return None
    finally:
        model.train(was_training)


class _Stopped(Exception):
    """A stop was requested during validation."""


@contextlib.contextmanager
def _stoppable(model: FlowVocoder, stop: Callable[[], bool]) -> Iterator[None]:
    """Meanwhile every module call of `model` first asks `stop`, and raises `_Stopped`."""

    def check(module: torch.nn.Module, args: object) -> None:
        if stop():
            raise _Stopped

    handles = [module.register_forward_pre_hook(check) for module in model.modules()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _validate(
    model: FlowVocoder,
    items: list[ValidationItem],
    config: ExperimentConfig,
    step: int,
    train_log: TrainLog,
) -> dict[str, float]:
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
    scores = {"ll": sum(lls) / len(lls)}
    train_log.scalars(step, scores, kind="valid")
    return scores


__all__ = ["validate", "validation_set", "ValidationItem"]

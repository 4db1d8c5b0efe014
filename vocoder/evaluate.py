"""Test-set likelihood and copy-synthesis quality, with Griffin-Lim as the floor.

For each test utterance: the model's mean log-density of the recording in nats per sample
(whole utterance, the figure papers report; the set's LL is the plain mean over clips),
computed `batch_size` utterances at a time (`batched_log_prob`: padded, with the model
masking the padding so that each clip's figure equals its own unpadded one); then
copy-synthesis: audio from the recording's mel at prior temperature `sigma`, scored against
the recording (`vocoder.metrics`), with its real-time factor; Griffin-Lim from the same mel
is scored the same way, as the floor any neural vocoder should clear.

Every file (and its `mel_dir` mel) is read and checked before any is scored, so a bad file
late in a long list stops the run at once, not after an hour of work.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from vocoder import metrics
from vocoder.audio import audio_info, save_audio
from vocoder.data.segments import UtteranceDataset
from vocoder.errors import ConfigError, InputError
from vocoder.features import MelConfig, MelSpectrogram
from vocoder.files import atomic_output, refuse_existing
from vocoder.griffin_lim import GRIFFIN_LIM_ITERATIONS, griffin_lim
from vocoder.models import FlowVocoder
from vocoder.sigma import DEFAULT_SIGMA

log = logging.getLogger(__name__)

SYSTEMS = ("model", "griffin_lim")
QUALITY_METRICS = ("log_mel_l1", "mcd_db", "pesq_wb", "stoi")
METRICS = (*QUALITY_METRICS, "rtf")


def quality(
    reference: torch.Tensor,
    synthesized: torch.Tensor,
    reference_mel: torch.Tensor,
    to_mel: MelSpectrogram,
    sample_rate: int,
) -> dict[str, float]:
    """log-mel L1, MCD, PESQ-wb and STOI of `synthesized` against `reference` (same length).
    `reference_mel`: `to_mel(reference)`, made once for the systems scored against it (of
    the samples scored, not of a longer recording: a copy then scores 0 under every preset)."""
    synthesized_mel = to_mel(synthesized.to(reference_mel.device)).cpu()
    reference_mel = reference_mel.cpu()
    return {
        "log_mel_l1": metrics.log_mel_l1(reference_mel, synthesized_mel),
        "mcd_db": metrics.mel_cepstral_distortion(reference_mel, synthesized_mel),
        "pesq_wb": metrics.pesq_wb(reference, synthesized, sample_rate),
        "stoi": metrics.stoi(reference, synthesized, sample_rate),
    }


@dataclass(frozen=True)
class SynthesisFailure:
    """Synthesized audio a mean would silently leave out: `problem` says what and what
    follows; `scored`: whether its quality is scored at all."""

    problem: str
    scored: bool


def failed_synthesis(audio: torch.Tensor) -> SynthesisFailure | None:
    """Samples that are not finite (a diverged model: nothing is scored or written), or
    silence (PESQ is undefined); None when neither."""
    bad = int((~torch.isfinite(audio)).sum())
    if bad:
        problem = f"has {bad} sample(s) that are not finite (NaN or inf): not scored or written"
        return SynthesisFailure(problem, scored=False)
    if audio.numel() and not bool(audio.abs().max() > 0):
        return SynthesisFailure("is silent: PESQ is undefined for it", scored=True)
    return None


def batched_log_prob(
    model: FlowVocoder,
    audios: list[torch.Tensor],
    mels: list[torch.Tensor],
    device: str | torch.device = "cpu",
) -> list[float]:
    """Each whole utterance's mean log-density in nats per sample, in one padded batch.

    Equal to `model.log_prob` on each utterance alone (up to float rounding): audio and mels
    are zero-padded to the longest and scored by `model.log_prob` with their lengths, which
    keeps the padding out (families that cannot mask it score each utterance alone).
    """
    device = torch.device(device)
    lengths = torch.tensor([a.shape[-1] for a in audios])
    frames = torch.tensor([m.shape[-1] for m in mels])
    audio = torch.zeros(len(audios), int(lengths.max()), device=device, dtype=torch.float32)
    mel = torch.zeros(
        len(mels), model.config.n_mels, int(frames.max()), device=device, dtype=torch.float32
    )
    for i, (a, m) in enumerate(zip(audios, mels, strict=True)):
        audio[i, : a.shape[-1]] = a.to(device)
        mel[i, :, : m.shape[-1]] = m.to(device)
    return [float(v) for v in model.log_prob(audio, mel, lengths, frames)]


@dataclass
class FileScores:
    name: str
    duration_s: float
    ll: float  # nats per sample
    systems: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class EvalReport:
    """Per-file scores and their means; `info` says what was evaluated and how."""

    files: list[FileScores]
    info: dict[str, Any]

    @property
    def ll(self) -> float:
        return _mean([f.ll for f in self.files])

    def summary(self) -> dict[str, Any]:
        """{"ll": mean LL, "files": count, system: {metric: mean, "scored": {metric: files
        in that mean}}}: an undefined score (NaN) is left out of its mean, and counted."""
        out: dict[str, Any] = {"ll": self.ll, "files": len(self.files)}
        for system in SYSTEMS:
            rows = [f.systems[system] for f in self.files if system in f.systems]
            if rows:
                values = {m: [r.get(m, math.nan) for r in rows] for m in METRICS}
                out[system] = {m: _mean(v) for m, v in values.items()}
                out[system]["scored"] = {m: len(_finite(v)) for m, v in values.items()}
        return out

    def to_dict(self) -> dict[str, Any]:
        return _json_safe(
            {"info": self.info, "summary": self.summary(), "files": [asdict(f) for f in self.files]}
        )

    def csv_text(self) -> str:
        """One row per file and system (LL on the model's rows)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["name", "duration_s", "system", "ll", *METRICS])
        for f in self.files:
            systems = f.systems or {"model": {}}
            for system, scores in systems.items():
                ll = f.ll if system == "model" else math.nan
                values = [_cell(v) for v in (ll, *(scores.get(m, math.nan) for m in METRICS))]
                writer.writerow([f.name, f"{f.duration_s:.3f}", system, *values])
        return buffer.getvalue()


FileCallback = Callable[[int, int, str], None]
"""Called after each file with (files done, files in all, its name)."""

SynthesizeFn = Callable[[torch.Tensor, float, int], torch.Tensor]
"""(mel `[n_mels, F]`, sigma, seed) -> audio `[F * hop]`: the synthesis engine to score."""


@torch.no_grad()
def evaluate(
    model: FlowVocoder,
    features: MelConfig,
    files: list[Path],
    sigma: float = DEFAULT_SIGMA,
    synthesis: bool = True,
    device: str | torch.device = "cpu",
    seed: int = 0,
    mel_dir: Path | None = None,
    audio_dir: Path | None = None,
    info: dict[str, Any] | None = None,
    on_file: FileCallback | None = None,
    synthesize: SynthesizeFn | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
) -> EvalReport:
    """Score `model` on whole utterances; see the module docstring.

    `mel_dir`: condition on these mels (`<stem>.npy`, e.g. a TTS model's) instead of the
    recordings' own; metrics still compare with the recordings. `audio_dir`: also write the
    synthesized audio there (`audio_outputs`; existing files only with `overwrite`, never
    over a file that is scored). `synthesize`: the
    engine whose audio and speed are scored (default: the model's plain `infer`, file i
    seeded with `seed + i`). `batch_size`: utterances whose LL is computed in one pass.
    """
    if not files:
        raise InputError("filelist", "no files to evaluate")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")
    device = torch.device(device)
    model = model if model.inference_form else model.to_inference_form()
    model = model.to(device).eval()
    dataset = UtteranceDataset(files, features)
    conditioning = UtteranceDataset(files, features, mel_dir=mel_dir) if mel_dir else None
    if audio_dir is not None and synthesis:
        check_audio_outputs(files, audio_dir, overwrite)
    rate = features.sample_rate
    for index, path in enumerate(dataset.files):  # all checked before any is scored
        changes = audio_info(path).changes_for(rate)
        if changes:
            log.info("%s: %s", path, changes)
        dataset[index]
        if conditioning is not None:
            conditioning[index]
    to_mel = MelSpectrogram(features).to(device)

    def _score_file(index, audio, cond, name, ll) -> FileScores:
        length = audio.numel()
        scores = FileScores(name=name, duration_s=length / rate, ll=ll)
        if synthesis:
            start = _now(device)
            if synthesize is not None:
                fake = synthesize(cond, sigma, seed + index)
            else:
                generator = torch.Generator(device).manual_seed(seed + index)
                fake = model.infer(cond[None].to(device), sigma=sigma, generator=generator)[0]
            elapsed = _now(device) - start
            fake = fake[:length].float().cpu()
            failure = failed_synthesis(fake)
            if failure is not None:  # said: a mean that leaves the file out would hide it
                log.warning("%s: the model's audio %s", name, failure.problem)
            fake = fake.clamp(-1, 1)
            reference_mel = to_mel(audio.to(device))
            if failure is not None and not failure.scored:
                model_scores = dict.fromkeys(QUALITY_METRICS, math.nan)
            else:
                model_scores = quality(audio, fake, reference_mel, to_mel, rate)
            scores.systems["model"] = {**model_scores, "rtf": elapsed / scores.duration_s}
            start = time.perf_counter()
            floor = griffin_lim(cond, features, length=length, seed=seed).clamp(-1, 1)
            elapsed = time.perf_counter() - start
            floor_scores = quality(audio, floor, reference_mel, to_mel, rate)
            scores.systems["griffin_lim"] = {**floor_scores, "rtf": elapsed / scores.duration_s}
            if audio_dir is not None:
                model_path, floor_path = audio_outputs(Path(audio_dir), name)
                if failure is None or failure.scored:  # NaN cannot be written
                    save_audio(model_path, fake, rate, overwrite=overwrite, synthesized=True)
                save_audio(floor_path, floor, rate, overwrite=overwrite, synthesized=True)
        return scores

    results = []
    group: list[tuple[int, torch.Tensor, torch.Tensor, str]] = []
    for index in range(len(dataset)):
        audio, mel, name = dataset[index]
        cond = conditioning[index][1] if conditioning is not None else mel
        group.append((index, audio, cond, name))
        if len(group) == batch_size or index == len(dataset) - 1:
            audios, conds = [g[1] for g in group], [g[2] for g in group]
            lls = batched_log_prob(model, audios, conds, device)
            for (i, audio, cond, name), ll in zip(group, lls, strict=True):
                results.append(_score_file(i, audio, cond, name, ll))
                if on_file is not None:
                    on_file(i + 1, len(dataset), name)
            group = []

    run_info = {
        "sigma": sigma,
        "seed": seed,
        "synthesis": synthesis,
        "device": str(device),
        "batch_size": batch_size,
        "griffin_lim_iterations": GRIFFIN_LIM_ITERATIONS,
        "mcd_coefficients": metrics.MCD_COEFFICIENTS,
        "mel_dir": str(mel_dir) if mel_dir else None,
        **(info or {}),
    }
    return EvalReport(results, run_info)


def audio_outputs(audio_dir: Path, name: str) -> tuple[Path, Path]:
    """Where a file's synthesized audio and its Griffin-Lim audio go."""
    return audio_dir / f"{name}.wav", audio_dir / f"{name}.griffin_lim.wav"


def check_audio_outputs(files: list[Path], audio_dir: str | Path, overwrite: bool) -> None:
    """Refuse, before any work, outputs that would replace a scored file, another file's
    output, or (without `overwrite`) an existing file."""
    inputs = {Path(f).resolve() for f in files}
    owners: dict[Path, Path] = {}
    for path in files:
        for output in audio_outputs(Path(audio_dir), Path(path).stem):
            if output.resolve() in inputs:
                raise InputError(output, "is a file to score; choose another audio folder")
            if output in owners:
                raise InputError(
                    path, f"its audio would go to {output}, as that of {owners[output]}"
                )
            owners[output] = path
            if not overwrite:
                refuse_existing([output])


def write_report(report: EvalReport, json_path: str | Path, overwrite: bool = False) -> list[Path]:
    """Write the JSON report and a CSV of the same stem beside it, atomically."""
    json_path = Path(json_path)
    csv_path = json_path.with_suffix(".csv")
    if not overwrite:
        refuse_existing([json_path, csv_path])
    with atomic_output(csv_path, overwrite=True) as tmp:
        tmp.write_text(report.csv_text(), encoding="utf-8")
    with atomic_output(json_path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return [json_path, csv_path]


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def _finite(values: list[float]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _mean(values: list[float]) -> float:
    finite = _finite(values)
    return sum(finite) / len(finite) if finite else math.nan


def _cell(value: float) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.6g}"


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


__all__ = [
    "quality",
    "batched_log_prob",
    "evaluate",
    "write_report",
    "audio_outputs",
    "check_audio_outputs",
    "EvalReport",
    "FileScores",
    "SYSTEMS",
    "METRICS",
]

"""`Synthesizer`: the one entry point for turning mels into audio.

    synth = Synthesizer.load("waveflow-small-cpu", device="auto", precision="bf16")
    audio = synth.synthesize(mel, sigma=0.8, seed=0)          # [n_mels, F] -> [F * hop]

What runs underneath: `compile.prepare_for_inference` (folded weights, cached NanoFlow
biases, precision), then for WaveFlow/NanoFlow the incremental row engine
(`incremental`), replayed from CUDA graphs on a GPU (`cuda`), as GEMMs on a CPU (`cpu`),
for the Glow families their parallel inverse. Long mels are synthesized in overlapping
windows (`longform`); the noise of each utterance comes from a `NoiseStream` of its seed,
so results do not depend on chunking, batching or the device (beyond float rounding).
Several utterances are batched exactly: each mel is upsampled alone (the upsampler looks
a frame ahead), then padded, and the row engine masks the padding (see `incremental`; the
CPU engine lays the utterances end to end instead, and a CPU batch holds one of its lanes
at most); the Glow families batch utterances of equal length only.

sigma: the prior temperature, default `DEFAULT_SIGMA` (see `vocoder.sigma`).

Audio comes back as float32 on the CPU, `F * hop_length` samples per `F` mel frames.
A `Synthesizer` may be shared between threads; their device work runs one at a time.
"""

from __future__ import annotations

import logging
import math
import operator
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vocoder.checkpoint import load_model
from vocoder.devices import resolve_device
from vocoder.errors import ConfigError, InputError, VocoderError
from vocoder.features import MelConfig, MelSpectrogram
from vocoder.inference.compile import InferenceModel, RowFlows, prepare_for_inference
from vocoder.inference.cpu import GemmRowInverse
from vocoder.inference.cuda import GraphedRowInverse, graphs_available
from vocoder.inference.denoiser import Denoiser, bias_frames, bias_mel
from vocoder.inference.incremental import IncrementalInverse
from vocoder.inference.inputs import as_float_tensor, native_order, validate_mel
from vocoder.inference.longform import (
    DEFAULT_CROSSFADE,
    NoiseStream,
    WindowInput,
    receptive_context,
    synthesize_in_windows,
)
from vocoder.inference.sizing import MAX_BATCH, default_batch_size, default_budget
from vocoder.melio import DbNormalization, MeanVarStats, MelFormat, convert_mel
from vocoder.model_source import resolve_model_source
from vocoder.models import FlowVocoder
from vocoder.precision import cpu_bf16_units, default_precision
from vocoder.sigma import DEFAULT_SIGMA, check_sigma

log = logging.getLogger(__name__)


# integer PCM -> [-1, 1), as soundfile reads it into float
PCM_SCALE = {torch.int16: 2.0**15, torch.int32: 2.0**31}
PCM_EXPECTED = "expected float samples in [-1, 1] or int16/int32 PCM"


def _seed_integer(value: object) -> int:
    """`value` as an integer seed; `TypeError` for anything else, a bool too (which
    `operator.index` takes as 0 or 1: a flag passed in the seed's place)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"a bool is not a seed: {value!r}")
    return operator.index(value)


def _as_ln(
    mel: Tensor | np.ndarray,
    mel_format: str,
    stats: MeanVarStats | str | Path | None,
    db_normalization: DbNormalization | str | None,
    source: str,
) -> Tensor | np.ndarray:
    """`mel` (`[n_mels, F]` or `[B, n_mels, F]`) converted to the natural-log convention."""
    if stats is not None and mel_format != "meanvar":
        raise ConfigError(f"stats apply to mel_format 'meanvar' only, not {mel_format!r}")
    if db_normalization is not None and mel_format != "db-normalized":
        raise ConfigError(
            f"db_normalization applies to mel_format 'db-normalized' only, not {mel_format!r}"
        )
    if mel_format == "ln":
        return mel
    db = db_normalization
    if isinstance(db, str):
        db = DbNormalization.parse(db, "db_normalization")
    mel = as_float_tensor(mel, source).float()
    if mel.dim() == 3:
        return torch.stack([convert_mel(m, mel_format, stats, db=db) for m in mel])
    if mel.dim() != 2:
        raise InputError(source, f"expected a mel [n_mels, frames], got shape {tuple(mel.shape)}")
    return convert_mel(mel, mel_format, stats, db=db)


def make_row_inverse(
    rows: RowFlows, fast: bool = True, fuse: bool = True
) -> IncrementalInverse | GraphedRowInverse:
    """The best row inverse for `rows`' device: CUDA graphs when `fast` and available, the
    GEMM row steps on a CPU when `fast`, else the eager incremental engine."""
    if fast and graphs_available(rows.device):
        return GraphedRowInverse(rows, fuse=fuse)
    if fast and rows.device.type == "cpu":
        return GemmRowInverse(rows)
    return IncrementalInverse(rows)


class Synthesizer:
    """Mel spectrograms in, audio out; see the module docstring.

    Build it with `Synthesizer.load` (a pretrained name, an exported model or a training
    checkpoint) or `Synthesizer.from_model` (a model in memory).
    """

    def __init__(
        self,
        compiled: InferenceModel,
        mel_config: MelConfig,
        name: str = "model",
        fast: bool = True,
        memory_budget: int | None = None,
        max_batch: int = MAX_BATCH,
    ):
        c = compiled.config
        for field in ("n_mels", "hop_length", "sample_rate"):
            if getattr(mel_config, field) != getattr(c, field):
                raise ConfigError(
                    f"features.{field} {getattr(mel_config, field)} does not match the "
                    f"model's {field} {getattr(c, field)}"
                )
        self.compiled = compiled
        self._mel_config = mel_config
        self._name = name
        self.fast = fast
        self.max_batch = max_batch
        self.memory_budget = memory_budget or default_budget(compiled.device)
        self.context = receptive_context(c)  # samples each side of a chunk
        self.crossfade = DEFAULT_CROSSFADE
        self._row_inverse = make_row_inverse(compiled.rows, fast) if compiled.rows else None
        self._denoiser: Denoiser | None = None
        self._mel_extractor: MelSpectrogram | None = None
        # device work is serialized: the CUDA graphs' static buffers are shared state
        self._lock = threading.Lock()

    # ---- construction ----

    @classmethod
    def load(
        cls,
        name_or_path: str | Path | None = None,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        fast: bool = True,
    ) -> Synthesizer:
        """A synthesizer for a pretrained name, an exported model (`.safetensors` with its
        `.json`) or a training checkpoint / run folder; None loads the default model.

        precision: fp32 (exact), bf16, fp16 (GPUs only), or auto: what `vocoder synthesize`
        runs by default (bf16 on a CPU with bf16 units, else fp32). fast=False runs the
        plain incremental engine even on a GPU (no CUDA graphs).
        """
        path = resolve_model_source(name_or_path)
        model, info = load_model(path)
        given = None if name_or_path is None else Path(name_or_path)
        if given is None:
            name = path.stem
        elif given.exists():  # named after what was given, not its cached import
            name = given.name if given.is_dir() else given.stem
        else:
            name = str(name_or_path)
        return cls.from_model(model, info.features, name, device, precision, fast)

    @classmethod
    def from_model(
        cls,
        model: FlowVocoder,
        mel_config: MelConfig | None = None,
        name: str | None = None,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        fast: bool = True,
    ) -> Synthesizer:
        """A synthesizer for a model in memory (training or inference form; not modified).

        `mel_config` defaults to the tacotron2 convention at the model's rate, hop and bins.
        """
        c = model.config
        if mel_config is None:
            mel_config = MelConfig(
                sample_rate=c.sample_rate, hop_length=c.hop_length, n_mels=c.n_mels
            )
        if precision == "auto":
            precision = default_precision(resolve_device(device))
        compiled = prepare_for_inference(model, precision, device)
        if compiled.device.type == "cpu" and compiled.dtype == torch.float16:
            raise ConfigError("fp16 is for GPUs; on the CPU use bf16 or fp32")
        if compiled.device.type == "cpu" and compiled.dtype == torch.bfloat16:
            if cpu_bf16_units() is None:
                log.warning(
                    "bf16 on a CPU without bf16 units runs emulated: slower than fp32 and "
                    "less exact (fp32 is this CPU's fast path)"
                )
        return cls(compiled, mel_config, name or c.family, fast)

    # ---- what it is ----

    @property
    def name(self) -> str:
        return self._name

    @property
    def sample_rate(self) -> int:
        return self._mel_config.sample_rate

    @property
    def mel_config(self) -> MelConfig:
        return self._mel_config

    @property
    def hop_length(self) -> int:
        return self._mel_config.hop_length

    @property
    def n_mels(self) -> int:
        return self._mel_config.n_mels

    @property
    def parameter_count(self) -> int:
        """Parameters of the inference form (weight norm folded, NanoFlow biases cached)."""
        return self.compiled.parameter_count

    @property
    def device(self) -> torch.device:
        return self.compiled.device

    @property
    def precision(self) -> str:
        return self.compiled.precision

    @property
    def model_config(self):
        return self.compiled.config

    # ---- inputs ----

    def validate_mel(
        self, mel: Tensor | np.ndarray, source: str = "mel", warn: bool = True
    ) -> Tensor:
        """`mel` as float32 `[B, n_mels, F]` on the CPU; `InputError` naming `source` when it
        cannot be synthesized. With `warn`, logs a warning when its values do not look like
        a natural-log mel (see `melio.check_mel_range`)."""
        return validate_mel(mel, self.n_mels, source, warn)

    def mel_from_audio(self, audio: Tensor | np.ndarray, source: str = "audio") -> Tensor:
        """The log-mel `[n_mels, F]` (or `[B, n_mels, F]`) of audio `[T]` (or `[B, T]`) at
        this model's sample rate, for copy-synthesis; float32 on the CPU."""
        if isinstance(audio, np.ndarray):
            if audio.dtype.kind not in "fiu":
                raise InputError(source, f"{PCM_EXPECTED}, got {audio.dtype}")
            audio = torch.from_numpy(native_order(audio))
        if not isinstance(audio, Tensor) or audio.dim() not in (1, 2):
            raise InputError(source, "expected audio [samples] or [batch, samples]")
        if audio.dim() == 2 and audio.shape[1] <= 8 < audio.shape[0]:
            raise InputError(  # soundfile's layout; read as many clips of 2 samples otherwise
                source,
                f"shape {tuple(audio.shape)} looks like [samples, channels]; expected mono "
                "[samples] (mix the channels down) or [batch, samples]",
            )
        if not audio.is_floating_point():  # integer PCM (soundfile's int16, wavfile.read)
            if audio.dtype not in PCM_SCALE:
                raise InputError(source, f"{PCM_EXPECTED}, got {audio.dtype}")
            audio = audio.double() / PCM_SCALE[audio.dtype]
        if audio.shape[-1] == 0:
            raise InputError(source, "empty audio (0 samples)")
        audio = audio.detach().cpu().float()
        if not torch.isfinite(audio).all():
            raise InputError(source, "contains NaN or infinite samples")
        if self._mel_extractor is None:
            self._mel_extractor = MelSpectrogram(self._mel_config)
        try:
            return self._mel_extractor(audio)
        except InputError as e:  # the extractor's checks (too short), naming `source`
            raise InputError(source, e.problem, e.remedies) from None

    # ---- synthesis ----

    def synthesize(
        self,
        mel: Tensor | np.ndarray,
        sigma: float = DEFAULT_SIGMA,
        seed: int | None = None,
        denoise: float = 0.0,
        chunk_frames: int | None = None,
        source: str = "mel",
        mel_format: MelFormat = "ln",
        stats: MeanVarStats | str | Path | None = None,
        db_normalization: DbNormalization | str | None = None,
    ) -> Tensor:
        """Audio `[F * hop]` for a mel `[n_mels, F]` (or `[B, F * hop]` for `[B, n_mels, F]`).

        sigma: noise scale (see the module docstring). seed: None draws one from torch's
        global generator; batch item b uses seed + b. denoise: strength of the WaveGlow-style
        denoiser (0 = off). chunk_frames: synthesize in chunks of this many frames (None:
        only when the utterance would not fit the memory budget). source: names the input in
        errors and warnings. mel_format, stats, db_normalization: the mel's convention,
        converted to the natural log first (`melio.convert_mel`; stats for meanvar,
        db_normalization for db-normalized: a `DbNormalization` or "symmetric=true"...).
        """
        batch = self.validate_mel(_as_ln(mel, mel_format, stats, db_normalization, source), source)
        audio = self._synthesize(
            list(batch), self._seeds(seed, len(batch)), sigma, denoise, chunk_frames
        )
        is_batch = mel.dim() == 3 if isinstance(mel, Tensor) else np.ndim(mel) == 3
        return torch.stack(audio) if is_batch else audio[0]

    def synthesize_batch(
        self,
        mels: Sequence[Tensor | np.ndarray],
        sigma: float = DEFAULT_SIGMA,
        seed: int | Sequence[int] | None = None,
        denoise: float = 0.0,
        chunk_frames: int | None = None,
        sources: Sequence[str] | None = None,
        warn: bool = True,
        mel_format: MelFormat = "ln",
        stats: MeanVarStats | str | Path | None = None,
        db_normalization: DbNormalization | str | None = None,
    ) -> list[Tensor]:
        """Audio for each mel `[n_mels, F_i]` of a list (lengths may differ).

        seed: an int gives item i the seed `seed + i`; a sequence gives each its own. The
        result for an item does not depend on what it is batched with. sources: names of
        the mels for errors and warnings. warn: log range warnings (callers that validated
        the mels with `validate_mel` already pass False). mel_format, stats,
        db_normalization: as `synthesize`.
        """
        sources = list(sources) if sources is not None else [f"mel[{i}]" for i in range(len(mels))]
        if len(sources) != len(mels):
            raise ConfigError(f"sources: {len(sources)} names for {len(mels)} mels")
        validated = []
        for mel, source in zip(mels, sources, strict=True):
            ln = _as_ln(mel, mel_format, stats, db_normalization, source)
            batch = self.validate_mel(ln, source, warn)
            if batch.shape[0] != 1:
                raise InputError(
                    source, f"expected one mel [n_mels, frames], got {tuple(mel.shape)}"
                )
            validated.append(batch[0])
        if not validated:
            return []
        return self._synthesize(
            validated, self._seeds(seed, len(validated)), sigma, denoise, chunk_frames
        )

    @torch.no_grad()
    def inverse(self, z: Tensor, mel: Tensor | np.ndarray) -> Tensor:
        """Audio for a given latent: z `[T]` (or `[B, T]`), mel `[n_mels, F]` (or batched),
        with T a multiple of n_group and at most F * hop. The same map as
        `FlowVocoder.inverse`, through the fast engine (no chunking, no denoising)."""
        mels = self.validate_mel(mel)
        if isinstance(z, np.ndarray):
            z = torch.from_numpy(native_order(z))
        if not isinstance(z, Tensor) or not z.is_floating_point() or z.dim() not in (1, 2):
            raise InputError("z", "expected a float latent [T] or [batch, T]")
        zs = z.detach().cpu().float().reshape(-1, z.shape[-1])
        length = zs.shape[-1]
        c = self.model_config
        if zs.shape[0] != mels.shape[0]:
            raise InputError("z", f"batch {zs.shape[0]} != mel batch {mels.shape[0]}")
        if length == 0 or length % c.n_group or length > mels.shape[-1] * c.hop_length:
            raise InputError(
                "z",
                f"length {length} must be a positive multiple of {c.n_group} and at most "
                f"{mels.shape[-1] * c.hop_length} (frames x hop)",
            )
        items = [WindowInput(m, 0, length, zz) for m, zz in zip(mels, zs, strict=True)]
        audio = torch.stack(self._run_windows(items))
        return audio if z.dim() == 2 else audio[0]

    # ---- internals ----

    def _seeds(self, seed: int | Sequence[int] | None, count: int) -> list[int]:
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        try:  # an int, a numpy integer or a 0-d integer tensor
            return [_seed_integer(seed) + i for i in range(count)]
        except TypeError:
            pass
        try:
            seeds = [_seed_integer(s) for s in seed]
        except TypeError:
            raise ConfigError(
                f"seed must be an integer or a sequence of integers, got {seed!r}"
            ) from None
        if len(seeds) != count:
            raise ConfigError(f"seed: {len(seeds)} seeds for {count} mels")
        return seeds

    def _synthesize(
        self,
        mels: list[Tensor],
        seeds: list[int],
        sigma: float,
        denoise: float,
        chunk_frames: int | None,
    ) -> list[Tensor]:
        check_sigma(sigma)
        check_sigma(denoise, "denoise strength")  # the same kind: a finite number >= 0
        if chunk_frames is not None and (
            isinstance(chunk_frames, bool)
            or not isinstance(chunk_frames, int | np.integer)
            or chunk_frames < 1
        ):
            raise ConfigError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
        hop = self.hop_length
        results: dict[int, Tensor] = {}
        short: list[int] = []
        for i, (mel, seed) in enumerate(zip(mels, seeds, strict=True)):
            frames = mel.shape[-1]
            chunk = chunk_frames if chunk_frames is not None else self._auto_chunk_frames(frames)
            if chunk is None or chunk >= frames:
                short.append(i)
                continue
            stream = NoiseStream(seed)
            results[i] = synthesize_in_windows(
                mel,
                self._run_windows,
                lambda a, b, stream=stream: sigma * stream.take(a, b),
                hop,
                chunk,
                self.context,
                self.crossfade,
                windows_per_run=self.max_batch,
            )
        items = []
        for i in short:
            length = mels[i].shape[-1] * hop
            items.append(
                WindowInput(mels[i], 0, length, sigma * NoiseStream(seeds[i]).take(0, length))
            )
        for i, audio in zip(short, self._run_windows(items), strict=True):
            results[i] = audio
        audio = [results[i] for i in range(len(mels))]
        if denoise > 0:
            audio = [self._get_denoiser()(a, denoise) for a in audio]
        return audio

    def _auto_chunk_frames(self, frames: int) -> int | None:
        """None when `frames` fit the memory budget at once, else a chunk length that does."""
        per_sample = self._bytes_per_sample()
        max_samples = self.memory_budget // per_sample
        if frames * self.hop_length <= max_samples:
            return None
        windowed = max_samples - 2 * (self.context + self.crossfade)
        return max(4 * math.ceil(self.crossfade / self.hop_length), windowed // self.hop_length)

    def _bytes_per_sample(self) -> int:
        c = self.model_config
        if self.compiled.rows is not None:
            return max(1, self.compiled.rows.bytes_per_column() // c.n_group)
        per_column = c.n_layers * 2 * c.channels + 8 * c.channels + c.n_mels * c.n_group
        return max(1, 4 * per_column // c.n_group)

    def _run_windows(self, items: list[WindowInput]) -> list[Tensor]:
        """Audio (float32, CPU, `item.length` samples) for each window, batched to fit."""
        if not items:
            return []
        order = sorted(range(len(items)), key=lambda i: -items[i].length)
        per_sample = self._bytes_per_sample()
        # the CPU engine runs a batch lane by lane: a batch wider than a lane gains nothing,
        # and its padded inputs would only take memory
        lane = None
        if isinstance(self._row_inverse, GemmRowInverse):
            lane = self._row_inverse.lane_samples
        out: dict[int, Tensor] = {}
        group: list[int] = []
        for i in order + [None]:
            if i is not None:
                longest = items[group[0]].length if group else items[i].length
                fits = (len(group) + 1) * longest * per_sample <= self.memory_budget
                fits = fits and (lane is None or (len(group) + 1) * longest <= lane)
                if not group or (fits and len(group) < self.max_batch):
                    group.append(i)
                    continue
            for j, audio in zip(group, self._run_batch([items[j] for j in group]), strict=True):
                out[j] = audio
            group = [] if i is None else [i]
        return [out[i] for i in range(len(items))]

    def _run_batch(self, items: list[WindowInput]) -> list[Tensor]:
        # a caller's autocast region (a TTS model's bf16) must not change this precision
        with self._lock, torch.no_grad(), torch.autocast(self.device.type, enabled=False):
            return self._run_batch_locked(items)

    def _run_batch_locked(self, items: list[WindowInput]) -> list[Tensor]:
        compiled = self.compiled
        lengths = [it.length for it in items]
        longest = max(lengths)
        try:
            conds, zs = [], []
            for it in items:
                cond = compiled.upsample(it.mel[None])[0, :, it.offset : it.offset + it.length]
                conds.append(torch.nn.functional.pad(cond, (0, longest - it.length)))
                zs.append(
                    torch.nn.functional.pad(it.z.to(compiled.device), (0, longest - it.length))
                )
            z, cond = torch.stack(zs), torch.stack(conds)
            if self._row_inverse is not None:
                varied = any(n != longest for n in lengths)
                audio = self._row_inverse(z, cond, lengths if varied else None)
                return [audio[i, :n].float().cpu() for i, n in enumerate(lengths)]
            return self._run_glow(z, cond, lengths)
        except torch.OutOfMemoryError:
            seconds = longest / self.sample_rate
            raise VocoderError(
                f"out of GPU memory synthesizing {len(items)} utterance(s) of up to "
                f"{seconds:.1f} s; use a smaller batch size or chunk length"
            ) from None

    def _run_glow(self, z: Tensor, cond: Tensor, lengths: list[int]) -> list[Tensor]:
        # the Glow families' width convolutions are not masked: batch equal lengths only
        model = self.compiled.glow
        out: list[Tensor | None] = [None] * len(lengths)
        for n in sorted(set(lengths)):
            index = [i for i, m in enumerate(lengths) if m == n]
            with self.compiled.autocast():
                # the model's parallel inverse on conditioning already upsampled and sliced
                audio = model._inverse_flows(z[index, :n], cond[index, :, :n])
            for i, a in zip(index, audio, strict=True):
                out[i] = a.float().cpu()
        return out

    def _get_denoiser(self) -> Denoiser:
        if self._denoiser is None:
            c = self._mel_config
            mel = bias_mel(self.n_mels, bias_frames(c.n_fft, c.hop_length))
            length = mel.shape[-1] * self.hop_length
            silence = torch.zeros(length, dtype=torch.float32)
            (bias_audio,) = self._run_windows([WindowInput(mel, 0, length, silence)])
            self._denoiser = Denoiser(bias_audio, c.n_fft, c.hop_length, c.win_length)
        return self._denoiser


__all__ = [
    "Synthesizer",
    "default_batch_size",
    "make_row_inverse",
]

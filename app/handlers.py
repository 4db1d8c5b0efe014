"""What the demo page does, as plain functions of files and settings (no Gradio here).

`VocoderDemo` owns the settings and the model cache; its `run` takes the visitor's file
(audio or a mel), a model, an optional comparison and sigma, and returns a `DemoResult`
with everything the page shows. Problems with the input raise `InputError` with a message
meant for the visitor.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vocoder.audio import audio_info, load_audio, resample
from vocoder.cli import flags
from vocoder.errors import ConfigError, InputError, VocoderError
from vocoder.features import MelConfig
from vocoder.griffin_lim import griffin_lim
from vocoder.inference.engine import Synthesizer
from vocoder.melio import MEL_SUFFIXES, MelRangeWarning, check_mel_range, load_mel
from vocoder.sigma import DEFAULT_SIGMA

from .cache import ModelCache, quiet_mel
from .menus import describe_model, path_menu, registry_menu
from .plots import mel_image, waveform_image

GRIFFIN_LIM = "griffin-lim"
NO_COMPARISON = "none"
EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
# A megabyte as the browser counts one when it refuses an upload before sending it (2^20
# bytes): with 10^6 the page said "up to 20 MB" and the browser "19.1 Mb".
MEGABYTE = 2**20


@dataclass(frozen=True)
class DemoSettings:
    """How the demo serves: which models, on what device, and the limits on input."""

    models: tuple[str, ...] = ()  # names or paths for the menu; none: the registry's models
    device: str = "auto"
    precision: str = "fp32"
    max_upload_mb: float = 20.0
    max_seconds: float = 60.0
    chunk_seconds: float = 10.0  # longer inputs are synthesized in chunks of about this long

    def __post_init__(self) -> None:
        for name in ("max_upload_mb", "max_seconds", "chunk_seconds"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):  # NaN would turn a limit off
                raise ConfigError(f"demo settings: {name} must be positive and finite, got {value}")


@dataclass
class Rendering:
    """One synthesized waveform and the pictures of it."""

    title: str
    audio: np.ndarray  # float32 [samples] in [-1, 1]
    sample_rate: int
    mel_picture: Image.Image
    waveform_picture: Image.Image
    elapsed: float  # seconds of compute
    parameter_count: int | None = None  # None for Griffin-Lim

    @property
    def seconds(self) -> float:
        return self.audio.shape[-1] / self.sample_rate

    @property
    def rtf(self) -> float:
        """Real-time factor: compute time over audio time (below 1 is faster than real time)."""
        return self.elapsed / self.seconds

    def summary(self) -> str:
        """One Markdown paragraph: parameters, length, time and RTF."""
        params = (
            f"{self.parameter_count / 1e6:.3f} M parameters"
            if self.parameter_count is not None
            else "no learned parameters"
        )
        speed = 1.0 / self.rtf if self.rtf > 0 else float("inf")
        return (
            f"**{self.title}** · {params}  \n"
            f"{self.seconds:.2f} s of audio in {self.elapsed:.2f} s · "
            f"**RTF {self.rtf:.3f}** ({speed:.1f}x real time)"
        )

    def pcm16(self) -> tuple[int, np.ndarray]:
        """`(sample_rate, int16 samples)`, the form Gradio's audio player takes."""
        return pcm16(self.audio, self.sample_rate)


@dataclass
class InputView:
    """What the page shows of the visitor's input (no audio nor waveform for a mel file)."""

    description: str
    mel_picture: Image.Image
    waveform_picture: Image.Image | None = None
    audio: np.ndarray | None = None  # float32 [samples], at `sample_rate`
    sample_rate: int = 0

    def pcm16(self) -> tuple[int, np.ndarray] | None:
        return None if self.audio is None else pcm16(self.audio, self.sample_rate)


@dataclass
class DemoResult:
    input: InputView
    outputs: list[Rendering]  # the chosen model, then the comparison if any
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Input:
    """The visitor's file, read: a mel, and the audio when the file was audio."""

    name: str
    path: Path
    mel: torch.Tensor  # [n_mels, frames], natural log
    audio: torch.Tensor | None
    sample_rate: int
    seconds: float
    mel_config: MelConfig  # the convention `mel` follows (for audio: the one it was made with)
    changes: str = ""  # what reading the audio did to it (mixed down, resampled)


class VocoderDemo:
    """The demo's state (settings, model cache) and the one action of its page."""

    def __init__(self, settings: DemoSettings, cache: ModelCache | None = None):
        self.settings = settings
        self.cache = cache or ModelCache(settings.device, settings.precision)
        # menu label -> the name or path it loads; visitors only ever see and send labels,
        # so no request can make the server open a file it was not started with
        self.models: dict[str, str] = (
            path_menu(settings.models) if settings.models else registry_menu()
        )

    # ---- menus ----

    def model_choices(self) -> list[tuple[str, str]]:
        """(description, label) of each model the menu offers: the models given in the
        settings, in their order; without any, the registry's, those on this machine first."""
        return [(describe_model(label, source), label) for label, source in self.models.items()]

    def default_model(self) -> str | None:
        return next(iter(self.models), None)

    def comparison_choices(self, model: str | None = None) -> list[tuple[str, str]]:
        """The choices of the "compare with" menu: nothing, Griffin-Lim, or a model other
        than `model` (default: the default model)."""
        model = model or self.default_model()
        return [
            ("nothing", NO_COMPARISON),
            ("Griffin-Lim (no neural network)", GRIFFIN_LIM),
            *[(text, label) for text, label in self.model_choices() if label != model],
        ]

    def warm_up(self) -> None:
        """Load the default model and run Griffin-Lim once, so that the first visitor's
        times and RTFs are of the work alone (a fresh server's first request was up to
        10x slower)."""
        model = self.default_model()
        if model is None:
            return
        synthesizer = self.cache.get(self._model_source(model))
        griffin_lim(quiet_mel(synthesizer.n_mels), synthesizer.mel_config, n_iter=2, seed=0)

    # ---- the action ----

    def run(
        self,
        audio_path: str | Path | None,
        mel_path: str | Path | None,
        model: str | None,
        compare: str | None = NO_COMPARISON,
        sigma: float = DEFAULT_SIGMA,
        denoise: float = 0.0,
        seed: int = 0,
    ) -> DemoResult:
        """Vocode the visitor's file with `model`, and with `compare` beside it if asked.

        `sigma`: the temperature (spread of the latent noise); `denoise`: strength of the
        WaveGlow-style denoiser (0 is off); `seed`: the noise, for repeatable results.
        """
        source = self._model_source(model)
        if compare == model:
            raise InputError("compare with", "choose another model than the one synthesizing")
        path = self._pick_input(audio_path, mel_path)
        sigma = _number("sigma", sigma, 0.0, 2.0)
        denoise = _number("denoise", denoise, 0.0, 1.0)
        seed = int(_number("seed", seed, 0, 2**62))
        synthesizer = self.cache.get(source)
        other = None  # the comparison model, loaded and checked before any synthesis
        if compare not in (None, NO_COMPARISON, GRIFFIN_LIM):
            other = self.cache.get(self._model_source(compare))
        given = self._read(path, synthesizer)
        if other is not None:
            self._refuse_other_convention(given, other)
        warnings = []
        if given.audio is None:
            warning = check_mel_range(given.mel)
            if warning:
                warnings.append(f"{given.name}: {_for_the_page(warning)}")
        options = {"sigma": sigma, "denoise": denoise, "seed": seed}
        outputs = [self._vocode(given, synthesizer, **options)]
        if compare and compare != NO_COMPARISON:
            if other is None:
                outputs.append(self._griffin_lim(given, synthesizer, seed))
            else:
                outputs.append(self._vocode(given, other, **options))
        return DemoResult(self._view(given), outputs, warnings)

    # ---- steps ----

    def _model_source(self, label: str | None) -> str:
        if not label:
            raise InputError("model", "choose a model first")
        if label not in self.models:
            known = ", ".join(self.models) or "none"
            raise InputError("model", f"no model called {label!r} here (known: {known})")
        return self.models[label]

    def _pick_input(self, audio_path: str | Path | None, mel_path: str | Path | None) -> Path:
        chosen = mel_path or audio_path
        if not chosen:
            raise InputError("input", "upload or record speech, or upload a mel file, first")
        path = Path(chosen)
        if not path.is_file():
            raise InputError(path.name, "the uploaded file is gone; upload it again")
        size_mb, limit = path.stat().st_size / MEGABYTE, self.settings.max_upload_mb
        if size_mb > limit:
            raise InputError(path.name, f"is {size_mb:.1f} MB; this demo takes up to {limit:g} MB")
        if path.suffix.lower() not in MEL_SUFFIXES:
            # Audio is checked from its header before any model is loaded for it.
            with _named_as_uploaded(path):
                self._check_length(path.name, audio_info(path).duration)
        return path

    def _read(self, path: Path, synthesizer: Synthesizer) -> _Input:
        """The mel of `path` for `synthesizer` (and its audio, when it is an audio file)."""
        name = path.name
        with _named_as_uploaded(path):
            if path.suffix.lower() in MEL_SUFFIXES:
                mel = load_mel(path, n_mels=synthesizer.n_mels)
                config = synthesizer.mel_config
                seconds = mel.shape[-1] * config.hop_length / config.sample_rate
                self._check_length(name, seconds)  # too short is checked per model (_mel_for)
                return _Input(name, path, mel, None, config.sample_rate, seconds, config)
            changes = audio_info(path).changes_for(synthesizer.sample_rate)
            audio = load_audio(path, sample_rate=synthesizer.sample_rate)
        _check_long_enough(name, audio.numel(), synthesizer)
        mel = synthesizer.mel_from_audio(audio, source=name)
        seconds = audio.numel() / synthesizer.sample_rate
        rate, config = synthesizer.sample_rate, synthesizer.mel_config
        return _Input(name, path, mel, audio, rate, seconds, config, changes)

    def _check_length(self, name: str, seconds: float) -> None:
        if seconds > self.settings.max_seconds:
            raise InputError(
                name,
                f"is {seconds:.1f} s long; this demo takes up to {self.settings.max_seconds:g} s",
            )

    @staticmethod
    def _refuse_other_convention(given: _Input, synthesizer: Synthesizer) -> None:
        """`InputError` if `given` is a mel file of another convention than `synthesizer`'s
        (audio is made into whichever mel a model takes)."""
        if given.audio is None and given.mel_config != synthesizer.mel_config:
            c, m = given.mel_config, synthesizer.mel_config
            raise InputError(
                given.name,
                f"is a mel at {c.sample_rate} Hz, hop {c.hop_length}, {c.n_mels} bins "
                f"({c.fmin:g}-{c.fmax:g} Hz); {synthesizer.name} takes {m.sample_rate} Hz, hop "
                f"{m.hop_length}, {m.n_mels} bins ({m.fmin:g}-{m.fmax:g} Hz): compare with a "
                "model of the same mel convention, or upload audio",
            )

    def _mel_for(self, given: _Input, synthesizer: Synthesizer) -> torch.Tensor:
        """The input's mel in `synthesizer`'s convention (recomputed from audio if it differs)."""
        self._refuse_other_convention(given, synthesizer)
        if given.audio is None or given.mel_config == synthesizer.mel_config:
            hop = synthesizer.hop_length
            _check_long_enough(given.name, given.mel.shape[-1] * hop, synthesizer)
            if given.mel.shape[0] != synthesizer.n_mels:
                raise InputError(
                    given.name,
                    f"has {given.mel.shape[0]} mel bins; {synthesizer.name} expects "
                    f"{synthesizer.n_mels}",
                )
            return given.mel
        audio = given.audio
        if given.sample_rate != synthesizer.sample_rate:
            audio = resample(audio, given.sample_rate, synthesizer.sample_rate)
        _check_long_enough(given.name, audio.numel(), synthesizer)
        return synthesizer.mel_from_audio(audio, source=given.name)

    def _vocode(
        self, given: _Input, synthesizer: Synthesizer, sigma: float, denoise: float, seed: int
    ) -> Rendering:
        mel = self._mel_for(given, synthesizer)
        chunk = round(
            self.settings.chunk_seconds * synthesizer.sample_rate / synthesizer.hop_length
        )
        start = time.perf_counter()
        # warn=False: a mel file's range was checked once, for the page (`run`); a mel made
        # here from audio follows the convention by construction
        (audio,) = synthesizer.synthesize_batch(
            [mel],
            sigma=sigma,
            seed=seed,
            denoise=denoise,
            chunk_frames=chunk,
            sources=[given.name],
            warn=False,
        )
        elapsed = time.perf_counter() - start
        if not torch.isfinite(audio).all():
            raise VocoderError(
                f"{synthesizer.name} produced NaN or infinite samples at σ = {sigma:g}; "
                "try a lower temperature"
            )
        options = f"σ = {sigma:g}" + (f", denoiser {denoise:g}" if denoise else "")
        title = f"{synthesizer.name} ({options})"
        return self._render(title, audio, synthesizer, elapsed, synthesizer.parameter_count)

    def _griffin_lim(self, given: _Input, synthesizer: Synthesizer, seed: int) -> Rendering:
        mel = self._mel_for(given, synthesizer)
        from librosa.util.exceptions import ParameterError  # griffin_lim imports librosa

        start = time.perf_counter()
        try:  # exp() of a mel far from the log convention overflows: checked just below
            with np.errstate(over="ignore", invalid="ignore"):
                audio = griffin_lim(mel, synthesizer.mel_config, seed=seed)
        except ParameterError:  # librosa's refusal of the non-finite spectrogram
            audio = None
        elapsed = time.perf_counter() - start
        if audio is None or not torch.isfinite(audio).all():
            raise InputError(
                given.name,
                "Griffin-Lim cannot invert this mel: its values lie far outside a natural-log "
                "mel's range",
            )
        return self._render("Griffin-Lim", audio, synthesizer, elapsed, None)

    def _render(
        self,
        title: str,
        audio: torch.Tensor,
        synthesizer: Synthesizer,
        elapsed: float,
        parameter_count: int | None,
    ) -> Rendering:
        audio = audio.detach().float().cpu().reshape(-1)
        seconds = audio.numel() / synthesizer.sample_rate
        mel = synthesizer.mel_from_audio(audio)
        return Rendering(
            title=title,
            audio=audio.numpy(),
            sample_rate=synthesizer.sample_rate,
            mel_picture=mel_image(mel, seconds),
            waveform_picture=waveform_image(audio, synthesizer.sample_rate),
            elapsed=elapsed,
            parameter_count=parameter_count,
        )

    def _view(self, given: _Input) -> InputView:
        frames, seconds = given.mel.shape[-1], given.seconds
        if given.audio is None:
            description = f"{given.name}: a mel of {frames} frames ({seconds:.2f} s)"
            return InputView(description, mel_image(given.mel, seconds), None)
        description = f"{given.name}: {seconds:.2f} s of audio, {frames} mel frames"
        if given.changes:
            description += f" ({given.changes})"
        return InputView(
            description,
            mel_image(given.mel, seconds),
            waveform_image(given.audio, given.sample_rate),
            given.audio.numpy(),
            given.sample_rate,
        )


@contextlib.contextmanager
def _named_as_uploaded(path: Path) -> Iterator[None]:
    """Re-raise an `InputError` about `path` naming the file as the visitor knows it, not by
    the temporary path the server stored it at."""
    try:
        yield
    except InputError as e:
        if e.source != str(path):
            raise
        raise InputError(path.name, e.problem, e.remedies) from None


def _check_long_enough(name: str, samples: int, synthesizer: Synthesizer) -> None:
    """`InputError` unless `samples` of audio (given, or made from a mel) span at least one
    STFT window of `synthesizer`'s mel convention, the least its features can be taken of."""
    config = synthesizer.mel_config
    if samples < config.n_fft:
        raise InputError(
            name,
            f"is too short ({samples / config.sample_rate:.3f} s); this demo needs at least "
            f"{config.n_fft / config.sample_rate:.3f} s ({config.n_fft} samples at "
            f"{config.sample_rate} Hz, or {math.ceil(config.n_fft / config.hop_length)} mel "
            "frames)",
        )


def _for_the_page(warning: MelRangeWarning) -> str:
    """A mel-range warning for visitors: the page has no command-line flags, so the
    conversion the CLI offers is named as a command to run beforehand."""
    fix = warning.remedy
    if fix is None:
        return warning.problem
    purpose = f" {fix.purpose}" if fix.purpose else ""
    return (
        f"{warning.problem}; this page reads natural-log mels only "
        f"(convert with `vocoder synthesize {flags(fix)}`{purpose})"
    )


def _number(name: str, value, low: float, high: float) -> float:
    """`value` as a float in [low, high], else `InputError` naming the setting."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(name, f"expected a number, got {value!r}") from None
    if not low <= number <= high:
        raise InputError(name, f"must lie in [{low:g}, {high:g}], got {number:g}")
    return number


def pcm16(audio: np.ndarray, sample_rate: int) -> tuple[int, np.ndarray]:
    """`(sample_rate, int16 samples)` of float audio, the form Gradio's audio player takes."""
    scaled = np.round(np.asarray(audio, dtype=np.float64) * 32768.0)  # as `save_audio` writes
    return sample_rate, np.clip(scaled, -32768, 32767).astype(np.int16)


def example_files() -> list[Path]:
    """The shipped example inputs: audio clips first, then mel files."""
    audio = sorted(EXAMPLES_DIR.glob("*.wav"))
    mels = sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix in MEL_SUFFIXES)
    return audio + mels

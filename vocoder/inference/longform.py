"""Utterances of any length in bounded memory: overlapping windows joined by a crossfade.

The mel is cut into chunks of `chunk_frames` frames. Each chunk is synthesized in a window
that extends `context` samples (plus half a crossfade) beyond it on each side, and the mel
given to the upsampler reaches a few frames further still, so the conditioning inside the
window is exactly that of the whole utterance. The noise comes from a `NoiseStream`:
samples [a, b) of an utterance's z are the same whichever window asks for them, so a
chunked synthesis sees the same z as an unchunked one. Consecutive chunks overlap by a
crossfade of `crossfade` samples centred on their boundary (equal-power sin^2 / cos^2
weights, which add to 1).

How much context makes the join exact? Along time, one flow's network reaches
r = (kernel_size - 1) / 2 * (2^n_layers - 1) columns (groups of h samples) each way, so the
forward map z = f(x) of the whole model reaches n_flows * r columns
(`receptive_context(config)`; 1.48 s for the reference WaveFlow/NanoFlow configs). The
inverse of a row-autoregressive flow reaches further: row i is computed from rows < i of
the same flow, each reaching r columns. Row 0 reaches r columns (its parameters see the
conditioning and biases through the width convs), row i (i + 1) * r; each further flow
starts from the rows of the one before and adds (h - 1) * r, so the inverse reaches
(n_flows * (h - 1) + 1) * r columns (`receptive_context(config, exact=True)`). With the
exact context, chunked synthesis equals unchunked synthesis up to float rounding. The
forward field is the default: the compounded dependence beyond it is weak in trained
models, and the crossfade hides what is left.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from vocoder.models.base import network_reach
from vocoder.models.config import ModelConfig

NOISE_BLOCK = 1 << 16  # samples of noise drawn per seeded block
UPSAMPLER_MARGIN_FRAMES = 4  # mel frames beyond a window that its conditioning depends on
DEFAULT_CROSSFADE = 1024  # samples (46 ms at 22.05 kHz)

_MASK64 = (1 << 64) - 1


def _mix(seed: int, block: int) -> int:
    """A 64-bit generator seed for block `block` of the stream `seed` (splitmix64)."""
    x = (seed * 0x9E3779B97F4A7C15 + block + 1) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


class NoiseStream:
    """Standard normal noise for one utterance, addressable by sample range.

    Block b (samples [b * block, (b + 1) * block)) comes from a CPU generator seeded with
    a hash of (seed, b), so `take(a, b)` is the same whether asked for at once or in pieces,
    and the same on every device. Keeps the last few blocks it made.
    """

    def __init__(self, seed: int, block: int = NOISE_BLOCK, keep_blocks: int = 4):
        self.seed = int(seed)
        self.block = block
        self.keep_blocks = keep_blocks
        self._blocks: dict[int, Tensor] = {}

    def _get(self, index: int) -> Tensor:
        if index not in self._blocks:
            g = torch.Generator().manual_seed(_mix(self.seed, index))
            if len(self._blocks) >= self.keep_blocks:
                self._blocks.pop(next(iter(self._blocks)))
            self._blocks[index] = torch.randn(self.block, generator=g, dtype=torch.float32)
        return self._blocks[index]

    def take(self, start: int, stop: int) -> Tensor:
        """Samples [start, stop) of the stream, float32 on the CPU."""
        if not 0 <= start <= stop:
            raise ValueError(f"bad noise range [{start}, {stop})")
        parts = []
        for index in range(start // self.block, -(-stop // self.block)):
            base = index * self.block
            lo, hi = max(start, base) - base, min(stop, base + self.block) - base
            parts.append(self._get(index)[lo:hi])
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float32)


def receptive_context(config: ModelConfig, exact: bool = False) -> int:
    """Samples of context each side of a chunk; see the module docstring.

    exact=False: the forward receptive field, n_flows * reach columns of h samples.
    exact=True: what the inverse really depends on, (n_flows * (h - 1) + 1) * reach columns
    for the row-autoregressive families (the forward field for the Glow families).
    """
    reach = network_reach(config)
    if exact and not config.is_glow:
        return (config.n_flows * (config.n_group - 1) + 1) * reach * config.n_group
    return config.n_flows * reach * config.n_group


@dataclass(frozen=True)
class Window:
    """One chunk: the frames synthesized, the mel behind them, the samples kept.

    frames: [start, stop) mel frames the window synthesizes (samples start*hop .. stop*hop).
    mel: [start, stop) frames handed to the upsampler (the window plus a margin).
    keep: [start, stop) samples of the utterance this window contributes to the output;
        the first `crossfade` of them fade in (unless the first window), the last
        `crossfade` fade out (unless the last window).
    """

    frames: tuple[int, int]
    mel: tuple[int, int]
    keep: tuple[int, int]
    first: bool
    last: bool


@dataclass(frozen=True)
class WindowInput:
    """What synthesizing one window takes: the mel slice, where the window starts in its
    upsampled conditioning (samples), the window's length (samples) and its z."""

    mel: Tensor  # [n_mels, frames]
    offset: int
    length: int
    z: Tensor  # [length]


def plan_windows(
    frames: int,
    hop_length: int,
    chunk_frames: int | None,
    context: int,
    crossfade: int = DEFAULT_CROSSFADE,
    margin_frames: int = UPSAMPLER_MARGIN_FRAMES,
) -> tuple[list[Window], int]:
    """Windows covering `frames` mel frames, and the crossfade length actually used.

    Chunks have `chunk_frames` frames (a last one shorter than half that joins the one
    before); `context` samples are added each side. One window when `chunk_frames` is None
    or covers everything.
    """
    if frames < 1:
        raise ValueError("nothing to synthesize (0 frames)")
    if chunk_frames is None or chunk_frames >= frames:
        return [Window((0, frames), (0, frames), (0, frames * hop_length), True, True)], 0
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be positive, got {chunk_frames}")
    bounds = list(range(0, frames, chunk_frames)) + [frames]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < chunk_frames / 2:
        del bounds[-2]
    # the crossfade zones around consecutive boundaries must not overlap
    crossfade = min(crossfade, chunk_frames * hop_length // 2) // 2 * 2
    half = crossfade // 2
    reach = math.ceil((context + half) / hop_length)
    windows = []
    for j in range(len(bounds) - 1):
        first, last = j == 0, j == len(bounds) - 2
        a, b = bounds[j], bounds[j + 1]
        start = 0 if first else max(0, a - reach)
        stop = frames if last else min(frames, b + reach)
        keep = (
            0 if first else a * hop_length - half,
            frames * hop_length if last else b * hop_length + half,
        )
        mel = (max(0, start - margin_frames), min(frames, stop + margin_frames))
        windows.append(Window((start, stop), mel, keep, first, last))
    return windows, crossfade


def window_inputs(
    mel: Tensor, windows: list[Window], noise: Callable[[int, int], Tensor], hop_length: int
) -> list[WindowInput]:
    """The inputs of each window of `mel` `[n_mels, F]`; `noise(a, b)` gives z[a:b]."""
    items = []
    for w in windows:
        start, stop = w.frames
        items.append(
            WindowInput(
                mel=mel[:, w.mel[0] : w.mel[1]],
                offset=(start - w.mel[0]) * hop_length,
                length=(stop - start) * hop_length,
                z=noise(start * hop_length, stop * hop_length),
            )
        )
    return items


def _fade_in(crossfade: int, dtype: torch.dtype) -> Tensor:
    t = (torch.arange(crossfade, dtype=torch.float64) + 0.5) / crossfade
    return torch.sin(0.5 * math.pi * t).square().to(dtype)


def add_window(out: Tensor, window: Window, audio: Tensor, crossfade: int, hop_length: int) -> None:
    """Overlap-add one window's audio (`[window samples]`) into `out`, with its fades."""
    base = window.frames[0] * hop_length
    piece = audio[window.keep[0] - base : window.keep[1] - base].to(out.dtype).clone()
    if crossfade:
        fade_in = _fade_in(crossfade, out.dtype)
        if not window.first:
            piece[:crossfade] *= fade_in
        if not window.last:
            piece[-crossfade:] *= 1.0 - fade_in
    out[window.keep[0] : window.keep[1]] += piece


def join_windows(
    windows: list[Window], audio: list[Tensor], crossfade: int, hop_length: int
) -> Tensor:
    """Overlap-add the windows' audio (`[window samples]` each) into one utterance."""
    out = torch.zeros(windows[-1].keep[1], dtype=audio[0].dtype)
    for w, a in zip(windows, audio, strict=True):
        add_window(out, w, a, crossfade, hop_length)
    return out


def synthesize_in_windows(
    mel: Tensor,
    run: Callable[[list[WindowInput]], list[Tensor]],
    noise: Callable[[int, int], Tensor],
    hop_length: int,
    chunk_frames: int | None,
    context: int,
    crossfade: int = DEFAULT_CROSSFADE,
    windows_per_run: int = 8,
) -> Tensor:
    """Synthesize `mel` `[n_mels, F]` window by window; `run` synthesizes a list of windows.

    At most `windows_per_run` windows are handed to `run` at once and each is added to the
    output as soon as it is done, which bounds memory (beyond the output itself).
    """
    windows, crossfade = plan_windows(mel.shape[-1], hop_length, chunk_frames, context, crossfade)
    out = torch.zeros(windows[-1].keep[1], dtype=torch.float32)
    for i in range(0, len(windows), windows_per_run):
        group = windows[i : i + windows_per_run]
        audio = run(window_inputs(mel, group, noise, hop_length))
        for w, a in zip(group, audio, strict=True):
            add_window(out, w, a.cpu(), crossfade, hop_length)
    return out


__all__ = [
    "DEFAULT_CROSSFADE",
    "NoiseStream",
    "Window",
    "WindowInput",
    "add_window",
    "join_windows",
    "plan_windows",
    "receptive_context",
    "synthesize_in_windows",
    "window_inputs",
]

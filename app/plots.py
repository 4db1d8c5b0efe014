"""Pictures for the demo page: a log-mel spectrogram and a waveform as PIL images.

Drawn with numpy and Pillow only (matplotlib is not a dependency of the demo).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

# Magma at nine evenly spaced points; interpolated linearly in between.
_MAGMA = np.array(
    [
        (0, 0, 4),
        (28, 16, 68),
        (79, 18, 123),
        (129, 37, 129),
        (181, 54, 122),
        (229, 80, 100),
        (251, 135, 97),
        (254, 194, 135),
        (252, 253, 191),
    ],
    dtype=np.float32,
)

# Log-mel values outside this range are clipped, so every picture shares one scale:
# ln(1e-5) is the floor of the mel convention and speech peaks near 2.
MEL_RANGE = (math.log(1e-5), 2.5)

BACKGROUND = (255, 255, 255)
WAVE_COLOR = (234, 88, 12)
AXIS_COLOR = (90, 90, 90)
AXIS_HEIGHT = 16


def colormap(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (any shape) -> uint8 RGB (shape + (3,)) on the magma scale."""
    x = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0) * (len(_MAGMA) - 1)
    low = np.minimum(np.floor(x).astype(np.int64), len(_MAGMA) - 2)
    frac = (x - low)[..., None]
    rgb = _MAGMA[low] * (1.0 - frac) + _MAGMA[low + 1] * frac
    return np.round(rgb).astype(np.uint8)


def mel_image(
    mel: torch.Tensor | np.ndarray, seconds: float, width: int = 600, height: int = 200
) -> Image.Image:
    """A natural-log mel `[n_mels, frames]` as a picture: low bins at the bottom, a time axis."""
    array = _numpy(mel)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"expected a mel [n_mels, frames], got shape {array.shape}")
    lo, hi = MEL_RANGE
    rgb = colormap((array[::-1] - lo) / (hi - lo))
    picture = Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR)
    return _with_time_axis(picture, seconds)


def waveform_image(
    audio: torch.Tensor | np.ndarray, sample_rate: int, width: int = 600, height: int = 120
) -> Image.Image:
    """Audio `[samples]` in [-1, 1] as its min/max envelope per pixel column, with a time axis."""
    samples = _numpy(audio).reshape(-1)
    if samples.size == 0:
        raise ValueError("cannot draw empty audio")
    # Each pixel column covers an equal share of the samples (one sample when there are fewer).
    starts = np.linspace(0, samples.size, width, endpoint=False).astype(np.int64)
    top = np.clip(np.maximum.reduceat(samples, starts), -1, 1)
    bottom = np.clip(np.minimum.reduceat(samples, starts), -1, 1)
    # Row r shows amplitude 1 - 2r/(height-1); a pixel is ink when it lies in [bottom, top].
    level = 1.0 - 2.0 * np.arange(height, dtype=np.float32)[:, None] / (height - 1)
    half_pixel = 1.0 / (height - 1)
    ink = (level <= top[None, :] + half_pixel) & (level >= bottom[None, :] - half_pixel)
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[:] = BACKGROUND
    rgb[height // 2] = (210, 210, 210)  # the zero line
    rgb[ink] = WAVE_COLOR
    return _with_time_axis(Image.fromarray(rgb), samples.size / sample_rate)


def _with_time_axis(picture: Image.Image, seconds: float) -> Image.Image:
    """`picture` with a strip below it marking the seconds (at most about 12 ticks)."""
    width, height = picture.size
    canvas = Image.new("RGB", (width, height + AXIS_HEIGHT), BACKGROUND)
    canvas.paste(picture, (0, 0))
    if seconds <= 0:
        return canvas
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    step = _tick_step(seconds)
    for i in range(int(seconds / step) + 1):
        t = i * step
        x = min(round(t / seconds * (width - 1)), width - 1)
        draw.line([(x, height), (x, height + 3)], fill=AXIS_COLOR)
        label = f"{t:g} s" if i else "0"
        text_width = draw.textlength(label, font=font)
        if x + 2 + text_width < width:
            draw.text((x + 2, height + 2), label, fill=AXIS_COLOR, font=font)
    return canvas


def _tick_step(seconds: float) -> float:
    for step in (0.25, 0.5, 1.0, 2.0, 5.0, 10.0):
        if seconds / step <= 12:
            return step
    return 30.0


def _numpy(values: torch.Tensor | np.ndarray) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float32)

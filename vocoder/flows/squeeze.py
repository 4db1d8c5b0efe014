"""Folding a waveform into a matrix of rows: the squeeze of WaveFlow and WaveGlow's grouping.

A waveform `[B, T]` with T a multiple of h becomes `[B, h, T/h]`, column-major: column j
holds the h consecutive samples `x[j*h : (j+1)*h]`, so row i holds every h-th sample
starting at i. Conditioning `[B, C, T]` folds the same way to `[B, C, h, T/h]`. WaveGlow's
"groups of 8 samples" are the same fold (group = column, channel = row).
"""

from __future__ import annotations

from torch import Tensor


def squeeze(x: Tensor, h: int) -> Tensor:
    """`[..., T]` -> `[..., h, T/h]`, column-major (each column = h consecutive samples)."""
    length = x.shape[-1]
    if length % h:
        raise ValueError(f"length {length} is not a multiple of the squeeze height {h}")
    return x.reshape(*x.shape[:-1], length // h, h).transpose(-1, -2)


def unsqueeze(x: Tensor) -> Tensor:
    """Inverse of `squeeze`: `[..., h, W]` -> `[..., h*W]`."""
    h, width = x.shape[-2:]
    return x.transpose(-1, -2).reshape(*x.shape[:-2], h * width)


__all__ = ["squeeze", "unsqueeze"]

"""Mel upsamplers: frames -> one conditioning vector per audio sample.

`MelUpsampler2D` (WaveFlow/NanoFlow): two weight-normed `ConvTranspose2d(1, 1)` layers over
the `[n_mels, frames]` image, each with stride (1, s), kernel (3, 2s) and padding (1, s/2)
(kernel 2s - 1 for an odd s), each followed by LeakyReLU(0.4); the two strides multiply to
the hop length (16 x 16 = 256 in the reference). It returns exactly `frames * hop` samples.
`MelUpsampler1D` (WaveGlow): one `ConvTranspose1d(n_mels, n_mels, 4 * hop, stride hop)`,
returning `(frames + 3) * hop` samples. Callers trim to the audio length.

A one-channel transposed convolution is a poor fit for oneDNN (about 4 ms a second of audio
per layer on a CPU), so `MelUpsampler2D` computes each layer in its polyphase form: with
stride s and width kernel 2s, output sample j = q*s + r - s//2 sums frames q and q - 1
only, so all s phases of every frame come out of one `[.., 7] @ [7, s]` matrix product
over the 3 x 2 input neighbourhood and a one (the bias). It is the same sum (to float
rounding) in about a quarter of the time, gradients included, with the `ConvTranspose2d`
modules (and so the checkpoints) unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


def split_stride(hop_length: int) -> tuple[int, int]:
    """Two strides with product `hop_length`, as close to each other as possible.

    256 -> (16, 16), 300 -> (15, 20), 512 -> (16, 32), 16 -> (4, 4).
    """
    first = max(d for d in range(1, math.isqrt(hop_length) + 1) if hop_length % d == 0)
    return first, hop_length // first


class MelUpsampler2D(nn.Module):
    """`[B, n_mels, F]` -> `[B, n_mels, F * prod(strides)]` (WaveFlow's upsampler)."""

    def __init__(self, strides: tuple[int, ...] = (16, 16), negative_slope: float = 0.4):
        super().__init__()
        self.strides = tuple(strides)
        self.negative_slope = negative_slope
        self.layers = nn.ModuleList()
        for s in self.strides:
            # kernel 2s (2s - 1 for odd s, to stay symmetric) with padding s // 2 gives exactly
            # F * s outputs
            width = 2 * s if s % 2 == 0 else 2 * s - 1
            conv = nn.ConvTranspose2d(1, 1, (3, width), stride=(1, s), padding=(1, s // 2))
            self.layers.append(weight_norm(conv))

    def forward(self, mel: Tensor) -> Tensor:
        x = mel
        for layer, stride in zip(self.layers, self.strides, strict=True):
            # in place: the product's output is fresh, and a new 7 MB a second costs page faults
            x = F.leaky_relu(transposed_conv_polyphase(x, layer, stride), self.negative_slope, True)
        return x


def transposed_conv_polyphase(x: Tensor, conv: nn.ConvTranspose2d, stride: int) -> Tensor:
    """`conv` (one channel, kernel (3, 2s or 2s - 1), stride (1, s), padding (1, s // 2)) on
    `x` `[B, H, F]` -> `[B, H, F * s]`, as one matrix product (module docstring)."""
    batch, height, frames = x.shape
    kernel = conv.weight[0, 0]  # [3, 2s or 2s - 1]
    kernel = F.pad(kernel, (0, 2 * stride - kernel.shape[1])).flip(0)  # transposed: rows flip
    # row (a, b) of the product: input row h + a - 1, frame q - 1 + b; phase r takes weight
    # column r from frame q and s + r from frame q - 1
    taps = torch.stack([kernel[:, stride:], kernel[:, :stride]], dim=1).reshape(6, stride)
    weight = torch.cat([taps, conv.bias.expand(1, stride)])  # the bias through a ones column
    padded = F.pad(x, (1, 1, 1, 1))
    neighbours = [padded[:, a : a + height, b : b + frames + 1] for a in range(3) for b in range(2)]
    ones = neighbours[0].new_ones(()).expand_as(neighbours[0])
    neighbours = torch.stack([*neighbours, ones], -1)  # [B, H, F + 1, 7]
    phases = (neighbours @ weight).view(batch, height, (frames + 1) * stride)
    start = stride // 2
    return phases[..., start : start + frames * stride]


class MelUpsampler1D(nn.Module):
    """`[B, n_mels, F]` -> `[B, n_mels, (F + 3) * hop]` (WaveGlow's upsampler, no weight norm)."""

    def __init__(self, n_mels: int, hop_length: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(n_mels, n_mels, 4 * hop_length, stride=hop_length)

    def forward(self, mel: Tensor) -> Tensor:
        return self.conv(mel)


__all__ = ["split_stride", "MelUpsampler2D", "MelUpsampler1D", "transposed_conv_polyphase"]

"""Coupling transforms: an elementwise bijection whose parameters a network computes.

Two elementwise maps, each taking per-element parameters `params[B, P, *shape]` (in
float32 where a network computed them in half precision):
- `AffineElementwise` (P = 2): `y = x * exp(log_s) + t`, log-det `log_s` (no clamp).
- `SplineElementwise` (P = 3K - 1): a rational-quadratic spline on [-B, B] with identity
  tails (Durkan et al., 2019); zero parameters give the identity.

Two ways to feed them, each a `Transform` whose `context` is the *conditioner*: a function
from the visible part of the input to the parameters (the model owns the network and builds
this function per flow, so one network can serve many flows, as in NanoFlow).
- `RowAutoregressiveCoupling` (WaveFlow): on `[B, h, W]`, row i is transformed with
  parameters computed from rows < i. The conditioner receives the input shifted down one row
  (row 0 sees zeros), shaped `[B, 1, h, W]`, and returns `[B, P, h, W]`; it must be causal
  over rows. The forward pass is parallel; the inverse produces one row per step.
- `ChannelCoupling` (Glow/WaveGlow): on `[B, C, T]`, the first C/2 channels pass unchanged
  and parametrise the map of the rest. The conditioner receives `[B, C/2, T]` and returns
  `[B, P * (C - C/2), T]`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vocoder.flows.base import Transform, full_precision, sum_except_batch
from vocoder.flows.splines import (
    DEFAULT_MIN_DERIVATIVE,
    identity_derivative_logit,
    rational_quadratic_spline,
    spline_param_count,
)

Conditioner = Callable[[Tensor], Tensor]


class AffineElementwise(nn.Module):
    """`y = x * exp(log_s) + t` with `params[:, 0] = log_s`, `params[:, 1] = t`."""

    params_per_element = 2

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        params = full_precision(params)
        log_s, t = params[:, 0], params[:, 1]
        return x * torch.exp(log_s) + t, log_s

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        params = full_precision(params)
        log_s, t = params[:, 0], params[:, 1]
        return (y - t) * torch.exp(-log_s), -log_s


class SplineElementwise(nn.Module):
    """Rational-quadratic spline with `bins` bins on [-tail_bound, tail_bound].

    `params[:, :K]` are width logits, `params[:, K:2K]` height logits (both divided by
    sqrt(hidden_channels), as in the reference code) and `params[:, 2K:]` the K - 1 interior
    derivative logits, offset so that all-zero parameters give the identity map.
    """

    def __init__(self, bins: int = 32, tail_bound: float = 5.0, hidden_channels: int = 1):
        super().__init__()
        self.bins = bins
        self.tail_bound = tail_bound
        self.logit_scale = 1.0 / math.sqrt(hidden_channels)
        self.derivative_offset = identity_derivative_logit(DEFAULT_MIN_DERIVATIVE)
        self.params_per_element = spline_param_count(bins)

    def _spline(self, x: Tensor, params: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        k = self.bins
        params = full_precision(params).movedim(1, -1)
        return rational_quadratic_spline(
            x,
            params[..., :k] * self.logit_scale,
            params[..., k : 2 * k] * self.logit_scale,
            params[..., 2 * k :] + self.derivative_offset,
            inverse=inverse,
            tail_bound=self.tail_bound,
        )

    def forward(self, x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._spline(x, params, inverse=False)

    def inverse(self, y: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
        return self._spline(y, params, inverse=True)


Elementwise = AffineElementwise | SplineElementwise


def shift_down(x: Tensor) -> Tensor:
    """`[..., h, W]` moved down one row along dimension -2; row 0 becomes zeros."""
    return F.pad(x, (0, 0, 1, 0))[..., :-1, :]


class RowAutoregressiveCoupling(Transform):
    """WaveFlow's coupling: row i of `[B, h, W]` is mapped with parameters from rows < i."""

    def __init__(self, elementwise: Elementwise):
        super().__init__()
        self.elementwise = elementwise

    def forward(
        self, x: Tensor, context: Conditioner | None = None, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """`mask` `[B, W]` (a padded batch): 0 on padding columns, left out of the log-det."""
        params = context(shift_down(x).unsqueeze(1))
        y, logdet = self.elementwise(x, params)
        if mask is not None:
            logdet = torch.where(mask[:, None, :] > 0, logdet, 0.0)
        return y, sum_except_batch(logdet)

    def inverse(self, y: Tensor, context: Conditioner | None = None) -> tuple[Tensor, Tensor]:
        """Rows one at a time; each step re-runs the conditioner on everything so far."""
        rows: list[Tensor] = []
        logdet = y.new_zeros(y.shape[0])
        h = y.shape[1]
        for i in range(h):
            done = torch.stack(rows, dim=1) if rows else y[:, :0]
            visible = torch.cat([done, y.new_zeros(y.shape[0], h - i, y.shape[2])], dim=1)
            params = context(shift_down(visible).unsqueeze(1))
            row, row_logdet = self.elementwise.inverse(y[:, i], params[:, :, i])
            rows.append(row)
            logdet = logdet + sum_except_batch(row_logdet)
        return torch.stack(rows, dim=1), logdet


class ChannelCoupling(Transform):
    """Glow's affine/spline coupling over channels of `[B, C, T]`: the first C/2 condition."""

    def __init__(self, elementwise: Elementwise):
        super().__init__()
        self.elementwise = elementwise

    def _params(self, visible: Tensor, context: Conditioner, changed: int) -> Tensor:
        params = context(visible)
        return params.reshape(params.shape[0], -1, changed, params.shape[-1])

    def forward(self, x: Tensor, context: Conditioner | None = None) -> tuple[Tensor, Tensor]:
        half = x.shape[1] // 2
        x_a, x_b = x[:, :half], x[:, half:]
        y_b, logdet = self.elementwise(x_b, self._params(x_a, context, x_b.shape[1]))
        return torch.cat([x_a, y_b], dim=1), sum_except_batch(logdet)

    def inverse(self, y: Tensor, context: Conditioner | None = None) -> tuple[Tensor, Tensor]:
        half = y.shape[1] // 2
        y_a, y_b = y[:, :half], y[:, half:]
        x_b, logdet = self.elementwise.inverse(y_b, self._params(y_a, context, y_b.shape[1]))
        return torch.cat([y_a, x_b], dim=1), sum_except_batch(logdet)


__all__ = [
    "Conditioner",
    "AffineElementwise",
    "SplineElementwise",
    "Elementwise",
    "shift_down",
    "RowAutoregressiveCoupling",
    "ChannelCoupling",
]

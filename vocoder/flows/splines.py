"""Monotonic rational-quadratic splines with identity tails (Durkan et al., 2019, "Neural
Spline Flows").

The spline maps [-B, B] onto itself through K bins whose widths, heights and interior knot
derivatives come from unconstrained parameters; outside [-B, B] it is the identity. The
boundary derivatives are fixed to 1 so the tails join smoothly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_MIN_BIN_WIDTH = 1e-3
DEFAULT_MIN_BIN_HEIGHT = 1e-3
DEFAULT_MIN_DERIVATIVE = 1e-3


def spline_param_count(num_bins: int) -> int:
    """Unconstrained values per element: K widths, K heights, K - 1 interior derivatives."""
    return 3 * num_bins - 1


def identity_derivative_logit(min_derivative: float = DEFAULT_MIN_DERIVATIVE) -> float:
    """The derivative logit `u` with `min_derivative + softplus(u) == 1`.

    With all width/height logits zero and every derivative logit equal to this, the spline is
    the identity; add it as a constant offset to a zero-initialised projection to start there.
    """
    if not 0.0 <= min_derivative < 1.0:
        raise ValueError(f"min_derivative must be in [0, 1), got {min_derivative}")
    return math.log(math.expm1(1.0 - min_derivative))


def rational_quadratic_spline(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    inverse: bool = False,
    tail_bound: float = 5.0,
    min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
    min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
    min_derivative: float = DEFAULT_MIN_DERIVATIVE,
) -> tuple[Tensor, Tensor]:
    """Apply the spline (or its inverse) elementwise; returns `(outputs, logabsdet)`.

    Args:
        inputs: any shape S.
        unnormalized_widths, unnormalized_heights: S + [K] logits (softmax over the last dim,
            with a floor of `min_bin_width` / `min_bin_height`). Callers divide these by
            sqrt(hidden_channels) of the network that produces them; this function does not.
        unnormalized_derivatives: S + [K - 1] logits of the interior knot derivatives
            (`min_derivative + softplus`); the two boundary derivatives are 1.
        inverse: compute the inverse map instead of the forward one.
        tail_bound: B; the spline acts on [-B, B] and is the identity outside.

    `logabsdet` has shape S: the elementwise log |d output / d input| of the map computed
    (for `inverse=True` the negative of the forward one at the corresponding point); it is 0
    outside [-B, B]. Math runs in float32 (float64 if any argument is float64) and the results
    are cast back to `inputs.dtype`. Raises ValueError on mismatched parameter shapes.
    """
    num_bins = unnormalized_widths.shape[-1]
    shape = inputs.shape
    if (
        unnormalized_widths.shape != shape + (num_bins,)
        or unnormalized_heights.shape != shape + (num_bins,)
        or unnormalized_derivatives.shape != shape + (num_bins - 1,)
    ):
        raise ValueError(
            "expected widths/heights of shape S + [K] and derivatives of shape S + [K - 1] for "
            f"inputs of shape S={tuple(shape)}; got {tuple(unnormalized_widths.shape)}, "
            f"{tuple(unnormalized_heights.shape)}, {tuple(unnormalized_derivatives.shape)}"
        )
    if min_bin_width * num_bins >= 1.0 or min_bin_height * num_bins >= 1.0:
        raise ValueError(f"minimal bin width/height too large for {num_bins} bins")

    out_dtype = inputs.dtype
    args = (inputs, unnormalized_widths, unnormalized_heights, unnormalized_derivatives)
    dtype = torch.float64 if any(t.dtype == torch.float64 for t in args) else torch.float32

    # Autocast would otherwise run parts of this in half precision.
    with torch.autocast(device_type=inputs.device.type, enabled=False):
        x = inputs.to(dtype)
        inside = (x >= -tail_bound) & (x <= tail_bound)
        # The spline is evaluated on clamped inputs so the branch `where` discards stays finite
        # (a NaN there would still poison the gradients).
        clamped = x.clamp(-tail_bound, tail_bound)
        spline_out, spline_logdet = _spline_inside(
            clamped,
            unnormalized_widths.to(dtype),
            unnormalized_heights.to(dtype),
            unnormalized_derivatives.to(dtype),
            inverse=inverse,
            bound=tail_bound,
            min_bin_width=min_bin_width,
            min_bin_height=min_bin_height,
            min_derivative=min_derivative,
        )
        outputs = torch.where(inside, spline_out, x)
        logabsdet = torch.where(inside, spline_logdet, torch.zeros_like(spline_logdet))
    return outputs.to(out_dtype), logabsdet.to(out_dtype)


def _knots(logits: Tensor, min_bin: float, bound: float) -> Tensor:
    """Bin sizes from logits, as K + 1 increasing knots with exact ends -B and B."""
    num_bins = logits.shape[-1]
    sizes = min_bin + (1.0 - min_bin * num_bins) * torch.softmax(logits, dim=-1)
    inner = 2.0 * bound * torch.cumsum(sizes[..., :-1], dim=-1) - bound
    ends = inner.new_full(inner.shape[:-1] + (1,), bound)
    return torch.cat([-ends, inner, ends], dim=-1)


def _search(knots: Tensor, values: Tensor) -> Tensor:
    """Index k of the bin with knots[k] <= value < knots[k + 1]; value == B gives K - 1."""
    idx = torch.searchsorted(knots.detach(), values.unsqueeze(-1).contiguous(), right=True) - 1
    return idx.clamp_(0, knots.shape[-1] - 2)


def _spline_inside(
    inputs: Tensor,
    unnormalized_widths: Tensor,
    unnormalized_heights: Tensor,
    unnormalized_derivatives: Tensor,
    inverse: bool,
    bound: float,
    min_bin_width: float,
    min_bin_height: float,
    min_derivative: float,
) -> tuple[Tensor, Tensor]:
    """The spline itself, for inputs already within [-B, B]."""
    cumwidths = _knots(unnormalized_widths, min_bin_width, bound)
    cumheights = _knots(unnormalized_heights, min_bin_height, bound)
    derivatives = F.pad(min_derivative + F.softplus(unnormalized_derivatives), (1, 1), value=1.0)

    # Gather only the bin each element falls into; everything below is shape S.
    idx = _search(cumheights if inverse else cumwidths, inputs)
    idx_next = idx + 1

    def at(t: Tensor, i: Tensor) -> Tensor:
        return t.gather(-1, i).squeeze(-1)

    x_k = at(cumwidths, idx)
    x_k1 = at(cumwidths, idx_next)
    width = x_k1 - x_k
    y_k = at(cumheights, idx)
    height = at(cumheights, idx_next) - y_k
    d_k = at(derivatives, idx)
    d_k1 = at(derivatives, idx_next)
    slope = height / width
    curvature = d_k + d_k1 - 2.0 * slope

    if inverse:
        # Solve a*theta^2 + b*theta + c = 0 for the root in [0, 1] (c <= 0 there).
        dy = inputs - y_k
        a = height * (slope - d_k) + dy * curvature
        b = height * d_k - dy * curvature
        c = -slope * dy
        sqrt_disc = (b.square() - 4.0 * a * c).clamp(min=0.0).sqrt()
        # 2c / (-b - sqrt) avoids cancellation for b >= 0 (always so near the left knot, and
        # it stays finite as a -> 0). Near the right knot b < 0 when d_k1 > 2 * slope; there
        # that form cancels and the conjugate (-b + sqrt) / 2a is exact (and a > 0 then).
        # Safe denominators keep the branch `where` drops finite.
        use_left = b >= 0
        left_den = torch.where(use_left, -b - sqrt_disc, -torch.ones_like(b))
        right_den = torch.where(use_left, torch.ones_like(a), 2.0 * a)
        theta = torch.where(use_left, (2.0 * c) / left_den, (sqrt_disc - b) / right_den)
        theta = theta.clamp(0.0, 1.0)
        one_minus_theta = 1.0 - theta
        outputs = x_k + theta * width
    else:
        theta = (inputs - x_k) / width
        # Not 1 - theta: that loses the relative precision near the right knot.
        one_minus_theta = (x_k1 - inputs) / width

    t1mt = theta * one_minus_theta
    denominator = slope + curvature * t1mt
    if not inverse:
        numerator = height * (slope * theta.square() + d_k * t1mt)
        outputs = y_k + numerator / denominator
    derivative_numerator = slope.square() * (
        d_k1 * theta.square() + 2.0 * slope * t1mt + d_k * one_minus_theta.square()
    )
    logabsdet = torch.log(derivative_numerator) - 2.0 * torch.log(denominator)
    return outputs, (-logabsdet if inverse else logabsdet)


__all__ = [
    "rational_quadratic_spline",
    "identity_derivative_logit",
    "spline_param_count",
    "DEFAULT_MIN_BIN_WIDTH",
    "DEFAULT_MIN_BIN_HEIGHT",
    "DEFAULT_MIN_DERIVATIVE",
]

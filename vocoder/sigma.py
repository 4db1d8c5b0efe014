"""sigma, the prior temperature of synthesis: its default and its one validity rule.

sigma is the standard deviation of the latent z ~ N(0, sigma^2). Models are trained with
sigma = 1; the references synthesize with 0.6 to 1.0. Lower gives cleaner but flatter,
slightly muffled speech, higher sharper but noisier; 0.8 is the middle of that range.
sigma = 0 is allowed: z = 0, the deterministic "mean" output (the denoiser uses it).
"""

from __future__ import annotations

import math
import numbers

from vocoder.errors import ConfigError

DEFAULT_SIGMA = 0.8


def check_sigma(sigma: float, setting: str = "sigma") -> float:
    """`sigma` if it is a finite number >= 0, else a `ConfigError` naming `setting`."""
    # a float, an int, a numpy or 0-d torch number; not None, a bool or a string
    number = isinstance(sigma, numbers.Real) or getattr(sigma, "ndim", None) == 0
    if isinstance(sigma, bool) or not (number and math.isfinite(sigma) and sigma >= 0):
        raise ConfigError(f"{setting} must be a finite number >= 0, got {sigma}")
    return sigma


__all__ = ["DEFAULT_SIGMA", "check_sigma"]

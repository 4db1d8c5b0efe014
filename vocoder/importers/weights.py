"""Reading another codebase's state dict into this toolkit's parameter names.

Both reference codebases store weight-normed convs as `X.weight_g` / `X.weight_v` (torch's
legacy `weight_norm` hooks), or as a plain `X.weight` once weight norm was removed. This
toolkit's training form keeps weight norm as a parametrization:
`X.parametrizations.weight.original0` (g) and `...original1` (v). `SourceState` reads
either form and `TargetState` writes a model's state dict key by key, checking that every
key of the model is written exactly once and with the shape it expects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor

from vocoder.errors import InputError


def strip_prefix(state: Mapping[str, Tensor], prefix: str = "module.") -> dict[str, Tensor]:
    """The state dict without a DataParallel/DDP `prefix` (when every key has it)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def count_indexed(keys: Iterable[str], pattern: str) -> int:
    """How many numbered modules `pattern` (e.g. "WN.{}.") names: indices 0, 1, ... present."""
    keys = list(keys)
    n = 0
    while any(k.startswith(pattern.format(n)) for k in keys):
        n += 1
    return n


def weight_norm_g(weight: Tensor, dim: int = 0) -> Tensor:
    """The g of `weight` written as weight norm over `dim`: its norm over the other dims."""
    others = [d for d in range(weight.dim()) if d != dim]
    return torch.linalg.vector_norm(weight, dim=others, keepdim=True)


class SourceState:
    """A foreign state dict, read once per key; `unused()` lists what was never read."""

    def __init__(self, state: Mapping[str, Tensor], source: str | Path):
        self.state = {k: v for k, v in state.items()}
        self.source = source
        self.read: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.state

    def tensor(self, key: str) -> Tensor:
        if key not in self.state:
            raise InputError(self.source, f"missing tensor {key!r} for this model")
        if not isinstance(self.state[key], Tensor):
            kind = type(self.state[key]).__name__
            raise InputError(self.source, f"{key} is a {kind}, not a tensor")
        self.read.add(key)
        return self.state[key].detach().to(torch.float64)

    def weight(self, prefix: str) -> Tensor:
        """The effective weight of module `prefix`: `weight`, or g * v / ||v|| (dim 0)."""
        if f"{prefix}.weight" in self.state:
            return self.tensor(f"{prefix}.weight")
        g, v = self.tensor(f"{prefix}.weight_g"), self.tensor(f"{prefix}.weight_v")
        return v * (g / weight_norm_g(v))

    def weight_norm(self, prefix: str) -> tuple[Tensor, Tensor]:
        """`(g, v)` of module `prefix`; a plain `weight` is written as g = ||W||, v = W."""
        if f"{prefix}.weight" in self.state:
            w = self.tensor(f"{prefix}.weight")
            return weight_norm_g(w), w
        return self.tensor(f"{prefix}.weight_g"), self.tensor(f"{prefix}.weight_v")

    def unused(self, ignore: tuple[str, ...] = ()) -> list[str]:
        return sorted(k for k in self.state if k not in self.read and not k.startswith(ignore))


class TargetState:
    """Fills a model's state dict; `finish()` checks that every key was set."""

    def __init__(self, model: torch.nn.Module, source: str | Path):
        self.expected = {k: v for k, v in model.state_dict().items()}
        self.values: dict[str, Tensor] = {}
        self.source = source

    def set(self, key: str, value: Tensor) -> None:
        if key not in self.expected:
            raise KeyError(f"the model has no parameter {key!r}")  # a converter bug
        want = self.expected[key]
        # the same sizes in the same order; only axes of size 1 may differ (a 1x1 conv's
        # kernel axes): a transposed or otherwise rearranged tensor must not be reshaped
        if _sizes(value) != _sizes(want):
            raise InputError(
                self.source,
                f"tensor for {key} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(want.shape)}",
            )
        self.values[key] = value.detach().reshape(want.shape).to(want.dtype).clone()

    def set_weight_norm(self, prefix: str, g: Tensor, v: Tensor) -> None:
        """Weight-normed module `prefix` of the model (a parametrization) from `(g, v)`."""
        self.set(f"{prefix}.parametrizations.weight.original0", g)
        self.set(f"{prefix}.parametrizations.weight.original1", v)

    def finish(self) -> dict[str, Tensor]:
        missing = sorted(set(self.expected) - set(self.values))
        if missing:
            raise KeyError(f"converter left {len(missing)} parameters unset: {missing[:5]}")
        return self.values


def _sizes(tensor: Tensor) -> list[int]:
    return [n for n in tensor.shape if n != 1]


__all__ = ["strip_prefix", "count_indexed", "weight_norm_g", "SourceState", "TargetState"]

"""`ModelConfig`: one typed config for every flow vocoder family.

Families: "waveflow" and "nanoflow" (row-autoregressive flows over a squeezed waveform with a
2-D WaveNet), "waveglow" and "nanoflow-glow" (Glow-style channel couplings over groups of
samples with a 1-D WN). Fields marked (nanoflow) apply to both nanoflow families, fields
marked (glow) to both Glow families; the others apply to all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from vocoder.errors import ConfigError
from vocoder.nets.upsample import split_stride

FAMILIES = ("waveflow", "nanoflow", "waveglow", "nanoflow-glow")
GLOW_FAMILIES = ("waveglow", "nanoflow-glow")  # Glow-style channel couplings, no upsampler


@dataclass
class ModelConfig:
    family: Literal["waveflow", "nanoflow", "waveglow", "nanoflow-glow"] = "waveflow"
    n_flows: int = 8
    n_layers: int = 8  # gated layers per WaveNet
    n_group: int = 16  # h, the squeeze height (WaveFlow/NanoFlow); group size (Glow families)
    channels: int = 128  # residual channels C
    kernel_size: int = 3  # 3x3 in the 2-D WaveNet (causal over rows), 3 in WN
    coupling: Literal["affine", "rqs"] = "affine"
    spline_bins: int = 32  # rqs: bins K (the projection outputs 3K - 1 values per element)
    spline_tail_bound: float = 5.0  # rqs: the spline acts on [-B, B], identity outside
    n_mels: int = 80
    hop_length: int = 256
    sample_rate: int = 22050
    # WaveFlow/NanoFlow: strides of the two transposed convs of the mel upsampler, product
    # hop_length; None picks the most even split (256 -> 16 x 16, 300 -> 15 x 20)
    upsample_strides: list[int] | None = None
    permutation: Literal["reverse", "bipartized"] = "reverse"  # row order between flows
    # (nanoflow) naive: one network and projection for all flows; decomp: shared network,
    # per-flow projection; full: decomp plus the flow indication embedding
    sharing: Literal["naive", "decomp", "full"] = "full"
    embedding_dim: int = 512  # (nanoflow, full) D of the flow indication embedding e^k
    additive_bias: bool = True  # (nanoflow, full) W^l e^k added before each layer's gate
    multiplicative_gate: bool = True  # (nanoflow, full) a per-(flow, layer) channel gate
    concat_embedding: bool = False  # (nanoflow, full) e^k concatenated to the input (eq. 8)
    # (nanoflow, full) how the embedding enters (see models/nanoflow.py). "reference": as the
    # NanoFlow authors' code trained it (the paper's figures): bias from a weight-normed
    # linear map with its own bias, gate a raw multiplier of each layer's residual branch
    # (ones at init, skip not gated). "appendix": the appendix's equations as written: bias
    # W^l e^k, gate exp(delta^{k,l}) on the hidden state (residual and skip)
    embedding_variant: Literal["reference", "appendix"] = "reference"
    # (waveflow/nanoflow) permute the rows before flow 0 too, as the NanoFlow reference code
    # does (it reverses before every flow); False: only between flows (official WaveFlow)
    permute_first_flow: bool = False
    # (nanoflow) share only the bottom N layers (and the front conv); the upper ones are per
    # flow (appendix Figure 2). None: all layers shared
    shared_layers: int | None = None
    n_early_every: int = 4  # (glow) emit early outputs before every N-th flow; 0: never
    n_early_size: int = 2  # (glow) channels emitted each time

    @property
    def is_glow(self) -> bool:
        return self.family in GLOW_FAMILIES

    @property
    def is_nanoflow(self) -> bool:
        return self.family in ("nanoflow", "nanoflow-glow")

    @property
    def strides(self) -> tuple[int, int]:
        """The mel upsampler's strides (WaveFlow/NanoFlow)."""
        if self.upsample_strides is not None:
            return tuple(self.upsample_strides)
        return split_stride(self.hop_length)

    def glow_channel_schedule(self) -> list[int]:
        """(glow) channels each flow transforms, after the early outputs before it."""
        remaining, widths = self.n_group, []
        for k in range(self.n_flows):
            if self.n_early_every and k > 0 and k % self.n_early_every == 0:
                remaining -= self.n_early_size
            widths.append(remaining)
        return widths

    def validate(self) -> None:
        def fail(problem: str) -> None:
            raise ConfigError(f"model: {problem}")

        if self.family not in FAMILIES:
            fail(f"unknown family {self.family!r}; known: {', '.join(FAMILIES)}")
        for name in ("n_flows", "n_layers", "n_group", "channels", "n_mels", "hop_length"):
            if getattr(self, name) < 1:
                fail(f"{name} must be positive, got {getattr(self, name)}")
        if self.sample_rate < 1:
            fail(f"sample_rate must be positive, got {self.sample_rate}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            fail(f"kernel_size must be odd, got {self.kernel_size}")
        if self.hop_length % self.n_group:
            fail(f"hop_length {self.hop_length} must be a multiple of n_group {self.n_group}")
        if not self.is_glow and self.n_group < 2:
            fail(
                f"n_group must be at least 2 for {self.family}: with one row the coupling "
                "sees none of the audio (row 0 is transformed from the mel alone)"
            )
        if self.coupling == "rqs":
            if self.spline_bins < 2 or self.spline_bins * 1e-3 >= 1.0:
                fail(f"spline_bins must be in [2, 999], got {self.spline_bins}")
            if self.spline_tail_bound <= 0:
                fail(f"spline_tail_bound must be positive, got {self.spline_tail_bound}")
        if self.upsample_strides is not None:
            if self.is_glow:
                fail("upsample_strides applies to waveflow/nanoflow only (WaveGlow uses hop)")
            if len(self.upsample_strides) != 2 or min(self.upsample_strides) < 1:
                fail(f"upsample_strides must be two positive strides, got {self.upsample_strides}")
            if math.prod(self.upsample_strides) != self.hop_length:
                fail(
                    f"upsample_strides {self.upsample_strides} multiply to "
                    f"{math.prod(self.upsample_strides)}, not hop_length {self.hop_length}"
                )
        if self.permutation == "bipartized":
            if self.is_glow:
                fail("permutation 'bipartized' applies to waveflow/nanoflow only")
            if self.n_group % 2:
                fail(f"permutation 'bipartized' needs an even n_group, got {self.n_group}")
        if self.permute_first_flow and self.is_glow:
            fail("permute_first_flow applies to waveflow/nanoflow only")
        if self.is_nanoflow:
            if self.embedding_dim < 1:
                fail(f"embedding_dim must be positive, got {self.embedding_dim}")
            if self.sharing == "full" and not (
                self.additive_bias or self.multiplicative_gate or self.concat_embedding
            ):
                fail(
                    "sharing 'full' needs at least one of additive_bias, multiplicative_gate, "
                    "concat_embedding (with none it is 'decomp')"
                )
            gate_only = not (self.additive_bias or self.concat_embedding)
            if (
                self.sharing == "full"
                and gate_only
                and self.embedding_variant == "reference"
                and self.n_layers < 2
            ):
                fail(
                    "sharing 'full' with the multiplicative gate alone needs n_layers >= 2 "
                    "in the reference variant (its gates scale the residual of layers "
                    "0 .. L-2: with one layer there is none, and it is 'decomp')"
                )
            if self.shared_layers is not None:
                if self.is_glow:
                    fail("shared_layers applies to the nanoflow family only")
                if not 0 <= self.shared_layers <= self.n_layers:
                    fail(f"shared_layers must be in [0, n_layers], got {self.shared_layers}")
        elif self.shared_layers is not None:
            fail(f"shared_layers applies to nanoflow only, not {self.family}")
        if self.is_glow:
            if self.n_early_every < 0 or self.n_early_size < 0:
                fail("n_early_every and n_early_size must not be negative")
            widths = self.glow_channel_schedule()
            if min(widths) < 2 or any(w % 2 for w in widths):
                fail(
                    f"n_group {self.n_group} with {self.n_early_size} early channels every "
                    f"{self.n_early_every} flows leaves {widths} channels; each must be even, >= 2"
                )


def explicit_strides(model: dict) -> dict:
    """A model config as plain data with the upsampler's default strides written out (None
    is `split_stride(hop_length)`), so that two configs of one model compare equal."""
    glow = model.get("family") in GLOW_FAMILIES
    if model.get("upsample_strides") is not None or glow or "hop_length" not in model:
        return model
    return {**model, "upsample_strides": list(split_stride(int(model["hop_length"])))}


__all__ = ["ModelConfig", "FAMILIES", "GLOW_FAMILIES", "explicit_strides"]

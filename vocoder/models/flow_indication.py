"""NanoFlow's flow indication embedding: e^k -> the `Modulation` a shared network takes for
flow k (`FlowIndication`, the training form), and the same vectors cached per flow for
inference (`CachedFlowIndication`). NanoFlow (vocoder/models/nanoflow.py) and NanoFlow-Glow
(vocoder/models/waveglow.py) use it; the two readings of eq. 9 and 10 are in NanoFlow's
module docstring.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from vocoder.models.config import ModelConfig
from vocoder.nets.gated import Modulation


class FlowIndication(nn.Module):
    """e^k = Embedding(K, D)[k] -> `Modulation` of a shared network for flow k (training form).

    The gates are parameters of their own, not functions of e^k, so with the gate alone (no
    additive bias, no concatenation) there is no embedding table at all. The reference
    variant's gates exist for the layers with a residual branch only (all but the last):
    an unused parameter would get no gradient, which DDP rejects.
    """

    def __init__(
        self,
        n_flows: int,
        n_layers: int,
        channels: int,
        dim: int,
        additive_bias: bool = True,
        multiplicative_gate: bool = True,
        concat_embedding: bool = False,
        variant: str = "reference",
    ):
        super().__init__()
        self.n_flows = n_flows
        self.variant = variant
        reference = variant == "reference"
        # None when nothing reads e^k (gate-only ablation): an unused table would get no
        # gradient, which DDP rejects
        self.embedding = nn.Embedding(n_flows, dim) if additive_bias or concat_embedding else None
        if self.embedding is not None and reference:
            nn.init.orthogonal_(self.embedding.weight)
        self.bias_projections = None
        if additive_bias:
            self.bias_projections = nn.ModuleList(
                weight_norm(nn.Linear(dim, 2 * channels))
                if reference
                else nn.Linear(dim, 2 * channels, bias=False)
                for _ in range(n_layers)
            )
        self.log_gates = None  # appendix: delta^{k,l}, the gate is exp(delta)
        self.residual_gates = None  # reference: the raw gates of layers 0 .. L-2
        if multiplicative_gate and not reference:
            self.log_gates = nn.Parameter(torch.zeros(n_flows, n_layers, channels))
        elif multiplicative_gate and n_layers > 1:
            self.residual_gates = nn.Parameter(torch.ones(n_flows, n_layers - 1, channels))
        self.front_projection = nn.Linear(dim, channels, bias=False) if concat_embedding else None

    @classmethod
    def from_config(cls, c: ModelConfig) -> FlowIndication:
        """The embedding a NanoFlow-style model with `c.sharing == "full"` uses."""
        return cls(
            c.n_flows,
            c.n_layers,
            c.channels,
            c.embedding_dim,
            c.additive_bias,
            c.multiplicative_gate,
            c.concat_embedding,
            c.embedding_variant,
        )

    def forward(self, k: int) -> Modulation:
        e = None if self.embedding is None else self.embedding.weight[k]
        front = None if self.front_projection is None else self.front_projection(e)
        bias = None
        if self.bias_projections is not None:
            bias = torch.stack([p(e) for p in self.bias_projections])
        gate = None if self.log_gates is None else torch.exp(self.log_gates[k])
        residual_gate = None
        if self.residual_gates is not None:
            # the last layer has no residual branch: its row is a placeholder
            last = self.residual_gates.new_ones(1, self.residual_gates.shape[-1])
            residual_gate = torch.cat([self.residual_gates[k], last])
        return Modulation(front, bias, gate, residual_gate)

    @torch.no_grad()
    def cached(self) -> CachedFlowIndication:
        """The same modulations as stored vectors, for inference."""
        mods = [self(k) for k in range(self.n_flows)]

        def stack(name: str) -> Tensor | None:
            parts = [getattr(m, name) for m in mods]
            return None if parts[0] is None else torch.stack(parts)

        return CachedFlowIndication(
            stack("front"), stack("bias"), stack("gate"), stack("residual_gate")
        )


class CachedFlowIndication(nn.Module):
    """Per-flow modulation vectors: front `[K, C]`, bias `[K, L, 2C]`, gates `[K, L, C]`."""

    def __init__(
        self,
        front: Tensor | None,
        bias: Tensor | None,
        gate: Tensor | None,
        residual_gate: Tensor | None = None,
    ):
        super().__init__()

        def keep(t: Tensor | None) -> nn.Parameter | None:
            return None if t is None else nn.Parameter(t.detach().clone())

        self.front = keep(front)
        self.bias = keep(bias)
        self.gate = keep(gate)
        self.residual_gate = keep(residual_gate)

    def forward(self, k: int) -> Modulation:
        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[k]

        return Modulation(
            pick(self.front), pick(self.bias), pick(self.gate), pick(self.residual_gate)
        )


__all__ = ["FlowIndication", "CachedFlowIndication"]

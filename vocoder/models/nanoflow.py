"""NanoFlow (Lee, Kim & Yoon, 2020): WaveFlow with one 2-D WaveNet shared by all flows.

Sharing ("sharing" in the config):
- naive: one network and one projection serve every flow.
- decomp: one network, a separate 1x1 projection per flow.
- full: decomp plus the flow indication embedding e^k (`FlowIndication`), which modulates
  the shared network per flow: an additive bias W^l e^k before each layer's gate (eq. 9), a
  multiplicative gate exp(delta^{k,l}) on each layer's hidden state (eq. 10; delta zero-init,
  so training starts at decomp) and, optionally, the concatenative embedding (eq. 8), which
  for the 1x1 front conv is a bias W e^k on its output.

After training these are constants per (flow, layer): `to_inference_form` replaces the
embedding table and the W^l projections by `CachedFlowIndication` (the bias and gate vectors
themselves), which is how parameter counts are quoted.

Partial sharing (`shared_layers = N < n_layers`, appendix Figure 2): the front conv and the
bottom N layers are shared, the upper layers are per flow.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from vocoder.flows.permutations import permute_rows
from vocoder.models.config import ModelConfig
from vocoder.models.waveflow import WaveFlow, zero_projection
from vocoder.nets.wavenet2d import Modulation


class FlowIndication(nn.Module):
    """e^k = Embedding(K, D)[k] -> `Modulation` of a shared network for flow k (training form).

    The gates delta^{k,l} are parameters of their own, not functions of e^k, so with the
    gate alone (no additive bias, no concatenation) there is no embedding table at all.
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
    ):
        super().__init__()
        self.n_flows = n_flows
        # None when nothing reads e^k (gate-only ablation): an unused table would get no
        # gradient, which DDP rejects
        self.embedding = nn.Embedding(n_flows, dim) if additive_bias or concat_embedding else None
        self.bias_projections = (
            nn.ModuleList(nn.Linear(dim, 2 * channels, bias=False) for _ in range(n_layers))
            if additive_bias
            else None
        )
        self.log_gates = (
            nn.Parameter(torch.zeros(n_flows, n_layers, channels)) if multiplicative_gate else None
        )
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
        )

    def forward(self, k: int) -> Modulation:
        e = None if self.embedding is None else self.embedding.weight[k]
        front = None if self.front_projection is None else self.front_projection(e)
        bias = None
        if self.bias_projections is not None:
            bias = torch.stack([p(e) for p in self.bias_projections])
        gate = None if self.log_gates is None else torch.exp(self.log_gates[k])
        return Modulation(front, bias, gate)

    @torch.no_grad()
    def cached(self) -> CachedFlowIndication:
        """The same modulations as stored vectors, for inference."""
        mods = [self(k) for k in range(self.n_flows)]

        def stack(name: str) -> Tensor | None:
            parts = [getattr(m, name) for m in mods]
            return None if parts[0] is None else torch.stack(parts)

        return CachedFlowIndication(stack("front"), stack("bias"), stack("gate"))


class CachedFlowIndication(nn.Module):
    """Per-flow modulation vectors: front `[K, C]`, bias `[K, L, 2C]`, gate `[K, L, C]`."""

    def __init__(self, front: Tensor | None, bias: Tensor | None, gate: Tensor | None):
        super().__init__()
        self.front = None if front is None else nn.Parameter(front.detach().clone())
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone())
        self.gate = None if gate is None else nn.Parameter(gate.detach().clone())

    def forward(self, k: int) -> Modulation:
        def pick(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[k]

        return Modulation(pick(self.front), pick(self.bias), pick(self.gate))


class NanoFlow(WaveFlow):
    """WaveFlow with a shared 2-D WaveNet; see the module docstring."""

    def _build_networks(self) -> None:
        c = self.config
        shared = c.n_layers if c.shared_layers is None else c.shared_layers
        self.shared_layers = shared
        # the shared network: front conv and the bottom `shared` layers
        self.net = self._new_net(shared, ends_stack=shared == c.n_layers)
        self.top_nets = (
            nn.ModuleList(
                self._new_net(c.n_layers - shared, first_layer=shared, has_front=False)
                for _ in range(c.n_flows)
            )
            if shared < c.n_layers
            else None
        )
        n_projections = 1 if c.sharing == "naive" else c.n_flows
        self.projections = nn.ModuleList(
            zero_projection(c.channels, self.params_per_element) for _ in range(n_projections)
        )
        self.flow_indication: FlowIndication | CachedFlowIndication | None = None
        if c.sharing == "full":
            self.flow_indication = FlowIndication.from_config(c)

    def modulation(self, k: int) -> Modulation | None:
        """Flow k's modulation of the shared network (None without an embedding)."""
        return None if self.flow_indication is None else self.flow_indication(k)

    def prepare_conditioning(self, cond: Tensor):
        """The squeezed mel and the shared layers' projections of it, computed once."""
        return cond, self.net.project_conditioning(cond)

    def flow_conditioner(
        self, k: int, prepared, mask: Tensor | None = None
    ) -> Callable[[Tensor], Tensor]:
        cond, shared_proj = prepared
        order = self.row_orders[k]
        cond_proj = [permute_rows(p, order) for p in shared_proj]
        top = None if self.top_nets is None else self.top_nets[k]
        top_proj = None if top is None else top.project_conditioning(permute_rows(cond, order))
        projection = self.projections[k if len(self.projections) > 1 else 0]
        mod = self.modulation(k) or Modulation()
        bottom_mod = mod.layers(0, self.shared_layers)
        top_mod = mod.layers(self.shared_layers, self.config.n_layers)

        def conditioner(x: Tensor) -> Tensor:
            h, skip = self.net.run_layers(self.net.embed(x, mod), cond_proj, bottom_mod, mask=mask)
            if top is not None:
                _, skip = top.run_layers(h, top_proj, top_mod, skip, mask=mask)
            return projection(skip)

        return conditioner

    def _cache_flow_embedding(self) -> None:
        if isinstance(self.flow_indication, FlowIndication):
            self.flow_indication = self.flow_indication.cached()


__all__ = ["NanoFlow", "FlowIndication", "CachedFlowIndication"]

"""NanoFlow (Lee, Kim & Yoon, 2020): WaveFlow with one 2-D WaveNet shared by all flows.

Sharing ("sharing" in the config):
- naive: one network and one projection serve every flow.
- decomp: one network, a separate 1x1 projection per flow.
- full: decomp plus the flow indication embedding e^k (`FlowIndication`), which modulates
  the shared network per flow: an additive bias before each layer's gate (eq. 9), a
  multiplicative per-channel gate per (flow, layer) (eq. 10) and, optionally, the
  concatenative embedding (eq. 8), which for the 1x1 front conv is a bias W e^k on its
  output.

Two readings of eq. 9 and 10 (`embedding_variant`):
- "reference" (the default, and the `nanoflow-*` presets): what the authors' code computes
  and trained for the paper's figures. Bias: a weight-normed linear map of e^k with its own
  bias (`filter_gate_conv_h`). Gate: a raw multiplier of the layer's residual branch,
  `h + res * g` (`fused_res_skip_multgate`), ones at init; the skip is not gated.
- "appendix": the appendix's equations as written. Bias: W^l e^k. Gate: exp(delta^{k,l})
  on the hidden state tanh * sigmoid, which scales residual and skip alike (delta zero at
  init, so training starts at decomp).

After training these are constants per (flow, layer): `to_inference_form` replaces the
embedding table and the projections by `CachedFlowIndication` (the bias and gate vectors
themselves), which is how parameter counts are quoted.

Partial sharing (`shared_layers = N < n_layers`, appendix Figure 2): the front conv and the
bottom N layers are shared, the upper layers are per flow.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from vocoder.flows.permutations import permute_rows
from vocoder.models.config import ModelConfig
from vocoder.models.waveflow import WaveFlow, zero_projection
from vocoder.nets.wavenet2d import Modulation


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
        """WaveFlow's prepared mel (in the convs' layout) and the shared layers' projections
        of it, computed once."""
        cond = super().prepare_conditioning(cond)
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

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

from torch import Tensor, nn

from vocoder.flows.permutations import permute_rows
from vocoder.models.flow_indication import CachedFlowIndication, FlowIndication
from vocoder.models.waveflow import WaveFlow, zero_projection
from vocoder.nets.gated import Modulation


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


__all__ = ["NanoFlow"]

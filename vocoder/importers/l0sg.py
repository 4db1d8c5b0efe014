"""Checkpoints of the NanoFlow reference code (L0SG/NanoFlow, BSD-3) in this toolkit's form.

The reference saves `{'model': state_dict, 'iteration', ...}` (a resumed multi-GPU run adds
`module.` prefixes, `optimizer`, `scheduler`, `learning_rate`; published files may carry a
stray `h_cache`). Its four model classes map onto this toolkit's as follows, always with the
rows reversed before every flow, flow 0 included (`permute_first_flow`):

- `WaveFlow` (`flows.K.coupling.net`): WaveFlow, one network per flow.
- `NanoFlowDecomp` (`estimator.net`, `flows.K.proj*`): NanoFlow, sharing "decomp".
- `NanoFlowNaive` (`flow.coupling.net`): NanoFlow, sharing "naive" (one flow module applied
  `n_flow` times; the count is only in the reference config).
- `NanoFlow` (`flow_embedding`, `estimator.net` with `filter_gate_conv_h`, `flows.K.multgate`):
  NanoFlow, sharing "full", `embedding_variant: reference`.

Differences of parameterisation, folded into the weights exactly (up to float rounding):
- The WaveFlow-style blocks (WaveFlow, decomp, naive) scale the residual stream by sqrt(0.5)
  after every layer. With h_l = s^l h'_l (s = sqrt(0.5)), the unscaled stream h' is the same
  computation when layer l's dilated conv weight is multiplied by s^l and its residual
  output divided by s^l. Weight norm is per output channel, so this scales g only.
- The last layer's res/skip conv has 2C outputs of which only the skip half is used: the
  residual half is dropped.
- The affine projection `ZeroConv2d` is `conv(x) * exp(3 * scale)`: folded into the conv.
- The RQ-NSF projection is a weight-normed conv whose derivative outputs are the raw logits;
  this toolkit's spline adds a constant offset to them (so zeros give the identity), which
  is subtracted from the bias.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vocoder.errors import InputError, remedy
from vocoder.flows.splines import DEFAULT_MIN_DERIVATIVE, identity_derivative_logit
from vocoder.importers.weights import SourceState, TargetState, count_indexed, strip_prefix
from vocoder.models import ModelConfig, build_model

RESIDUAL_SCALE = math.sqrt(0.5)
IGNORED_KEYS = ("h_cache",)


# the reference config's `coupling_type` -> what the tensors show (see the module docstring)
COUPLING_TYPES = {
    "waveflow": "waveflow",
    "nanoflow": "full",
    "nanoflow_decomp": "decomp",
    "nanoflow_naive": "naive",
}


def _state_of(data: Any) -> dict[str, Any] | None:
    """The state dict: `data['model']` as the reference saves it, or `data` itself (bare)."""
    if not isinstance(data, dict):
        return None
    return data["model"] if isinstance(data.get("model"), dict) else data


def is_l0sg_checkpoint(data: Any) -> bool:
    """Whether loaded checkpoint data looks like the NanoFlow reference code's."""
    state = _state_of(data)
    if state is None:
        return False
    keys = [k for k in strip_prefix(state) if isinstance(k, str)]
    return any(k.startswith(("flows.", "flow.coupling.", "estimator.net.")) for k in keys) and any(
        k.startswith("upsample_conv.") for k in keys
    )


def reference_settings(document: Any, source: str | Path) -> dict[str, Any]:
    """The `waveflow_config` section of a reference JSON config (or the mapping itself)."""
    if not isinstance(document, dict):
        raise InputError(source, "expected a JSON object (the reference's config)")
    section = document.get("waveflow_config", document)
    if not isinstance(section, dict):
        raise InputError(source, "'waveflow_config' is not a mapping")
    return section


def _flag(value: Any) -> bool:
    """The reference's JSON writes booleans as strings ("False"), which Python reads as true."""
    return value.strip().lower() == "true" if isinstance(value, str) else bool(value)


def convert_l0sg(
    data: dict[str, Any],
    source: str | Path,
    settings: dict[str, Any] | None = None,
    n_height: int = 16,
    settings_source: str | Path | None = None,
) -> tuple[ModelConfig, dict[str, Tensor]]:
    """`(config, training-form state dict)` of a reference checkpoint; see the module doc.

    `settings`: the reference config (`reference_settings`); without it the architecture is
    read off the tensor shapes, with `n_height` rows (the squeeze height is in no tensor).
    `settings_source`: the config's file, which errors about its values name.
    """
    settings = dict(settings or {})
    config_file = settings_source or source
    for name in ("n_flow", "n_height", "n_layer_per_cycle", "n_layer", "res_channels"):
        if name in settings and not str(settings[name]).strip().isdigit():
            raise InputError(
                config_file, f"the config's {name} is not a whole number: {settings[name]!r}"
            )
    state = strip_prefix(_state_of(data))
    src = SourceState(state, source)
    keys = list(state)
    if any(k.startswith("flow.coupling.") for k in keys):
        kind, net = "naive", "flow.coupling.net"
    elif any(k.startswith("estimator.net.") for k in keys):
        full = any(k.startswith("flow_embedding.") for k in keys)
        kind, net = ("full" if full else "decomp"), "estimator.net"
    else:
        kind, net = "waveflow", "flows.0.coupling.net"

    n_layers = count_indexed(keys, f"{net}.res_blocks.{{}}.")
    channels = src.state[f"{net}.front_conv.0.conv.bias"].shape[0]
    n_mels = _agreed_input_size(state, ".filter_gate_conv_c", source)
    embedding_dim = _weight_shape(state, "flow_embedding")[1] if kind == "full" else 512
    if kind == "naive":
        if "n_flow" not in settings:
            raise InputError(
                source,
                "a naive NanoFlow checkpoint does not record its number of flows",
                [remedy("(the reference config)", config="FILE")],
            )
        n_flows = int(settings["n_flow"])
    else:
        n_flows = count_indexed(keys, "flows.{}.")
    flow_prefix = (
        "flow.coupling"
        if kind == "naive"
        else ("flows.{k}.coupling" if kind == "waveflow" else "flows.{k}")
    )
    first = flow_prefix.format(k=0)
    nsf = f"{first}.proj.conv.bias" in state
    _check_coupling(settings, kind, nsf, config_file)
    bins = (state[f"{first}.proj.conv.bias"].shape[0] + 1) // 3 if nsf else 32
    height = int(settings.get("n_height", n_height))
    per_cycle = int(settings.get("n_layer_per_cycle", 1))
    if per_cycle != 1:
        raise InputError(
            config_file, f"n_layer_per_cycle {per_cycle}: only height dilation 1 is supported"
        )
    if _flag(settings.get("bipartize", False)):
        raise InputError(
            config_file, "bipartized row permutations are not supported by the importer"
        )
    _check_setting(settings, "n_layer", n_layers, config_file)
    _check_setting(settings, "res_channels", channels, config_file)
    _check_setting(settings, "cin_channels", n_mels, config_file)
    _check_setting(settings, "n_flow", n_flows, config_file)
    if kind == "full":
        _check_setting(settings, "size_flow_embed", embedding_dim, config_file)

    config = ModelConfig(
        family="waveflow" if kind == "waveflow" else "nanoflow",
        n_flows=n_flows,
        n_layers=n_layers,
        n_group=height,
        channels=channels,
        coupling="rqs" if nsf else "affine",
        spline_bins=bins,
        spline_tail_bound=_number(settings, "tail_bound", 5.0, config_file),
        n_mels=n_mels,
        hop_length=256,
        sample_rate=22050,
        upsample_strides=[16, 16],
        permutation="reverse",
        permute_first_flow=True,
        sharing="full" if kind in ("full", "waveflow") else kind,
        embedding_dim=embedding_dim,
        embedding_variant="reference",
    )
    try:
        config.validate()
    except Exception as e:
        raise InputError(source, f"the checkpoint's architecture is not supported ({e})") from None
    model = build_model(config)
    out = TargetState(model, source)

    for i in range(2):  # Sequential: conv, LeakyReLU, conv, LeakyReLU
        out.set_weight_norm(f"upsampler.layers.{i}", *src.weight_norm(f"upsample_conv.{2 * i}"))
        out.set(f"upsampler.layers.{i}.bias", src.tensor(f"upsample_conv.{2 * i}.bias"))

    scaled = kind != "full"
    if kind == "waveflow":
        for k in range(n_flows):
            _convert_wavenet(src, out, f"flows.{k}.coupling.net", f"nets.{k}", n_layers, scaled)
    else:
        _convert_wavenet(src, out, net, "net", n_layers, scaled)

    n_projections = 1 if kind == "naive" else n_flows
    for k in range(n_projections):
        _convert_projection(src, out, flow_prefix.format(k=k), f"projections.{k}", nsf)

    if kind == "full":
        out.set("flow_indication.embedding.weight", src.weight("flow_embedding"))
        for l in range(n_layers):
            prefix = f"flow_indication.bias_projections.{l}"
            hyper = f"{net}.res_blocks.{l}.filter_gate_conv_h"
            out.set_weight_norm(prefix, *src.weight_norm(hyper))
            out.set(f"{prefix}.bias", src.tensor(f"{hyper}.bias"))
        gates = torch.stack([src.tensor(f"flows.{k}.multgate") for k in range(n_flows)])
        out.set("flow_indication.residual_gates", gates[:, : n_layers - 1])

    unused = src.unused(IGNORED_KEYS)
    if unused:
        raise InputError(
            source, f"{len(unused)} tensors fit no part of the model (first: {unused[0]})"
        )
    return config, out.finish()


def _weight_shape(state: dict[str, Tensor], prefix: str) -> tuple[int, ...]:
    """The shape of module `prefix`'s weight, weight-normed (`weight_v`) or plain."""
    for key in (f"{prefix}.weight", f"{prefix}.weight_v"):
        if key in state:
            return tuple(state[key].shape)
    raise KeyError(prefix)


def _agreed_input_size(state: dict[str, Tensor], module: str, source: str | Path) -> int:
    """The input channels every conv named `*{module}` has; a damaged one is named.

    Read off one layer alone, a damaged layer would set the model's size and the error
    would then blame the next, intact layer.
    """
    sizes = {
        key: tensor.shape[1]
        for key, tensor in state.items()
        if key.endswith((f"{module}.weight", f"{module}.weight_v"))
        and isinstance(tensor, Tensor)
        and tensor.dim() > 1
    }
    if not sizes:
        raise InputError(source, f"missing tensor {module.lstrip('.')}.weight for this model")
    counts = Counter(sizes.values())
    agreed = counts.most_common(1)[0][0]
    odd = [key for key, size in sizes.items() if size != agreed]
    if odd:
        raise InputError(
            source,
            f"{odd[0]} has {sizes[odd[0]]} input channels, where {counts[agreed]} of the "
            f"{len(sizes)} such layers have {agreed}",
        )
    return agreed


def _check_coupling(settings: dict[str, Any], kind: str, nsf: bool, source: str | Path) -> None:
    """The config's `coupling_type` and `bijection` against what the tensors hold."""
    named = settings.get("coupling_type")
    if named is not None and COUPLING_TYPES.get(named) != kind:
        held = next(name for name, k in COUPLING_TYPES.items() if k == kind)
        raise InputError(
            source, f"the config says coupling_type {named!r}, the weights are a {held!r}"
        )
    if "bijection" in settings and ("nsf" in str(settings["bijection"]).lower()) != nsf:
        held = "RQ-NSF" if nsf else "affine"
        raise InputError(
            source, f"the config says bijection {settings['bijection']!r}, the weights are {held}"
        )


def _number(settings: dict[str, Any], name: str, default: float, source: str | Path) -> float:
    value = settings.get(name, default)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(source, f"the config's {name} is not a number: {value!r}") from None


def _check_setting(settings: dict[str, Any], name: str, found: int, source: str | Path) -> None:
    if name in settings and int(settings[name]) != found:
        raise InputError(
            source, f"the config says {name} {settings[name]}, the weights have {found}"
        )


def _convert_wavenet(
    src: SourceState, out: TargetState, net: str, target: str, n_layers: int, scaled: bool
) -> None:
    """One `Wavenet2D` (or its hyper variant's shared parts) into a `WaveNet2D`."""
    out.set_weight_norm(f"{target}.front", *src.weight_norm(f"{net}.front_conv.0.conv"))
    out.set(f"{target}.front.bias", src.tensor(f"{net}.front_conv.0.conv.bias"))
    for l in range(n_layers):
        block, layer = f"{net}.res_blocks.{l}", f"{target}.layers.{l}"
        scale = RESIDUAL_SCALE**l if scaled else 1.0
        g, v = src.weight_norm(f"{block}.filter_gate_conv.conv")
        out.set_weight_norm(f"{layer}.dilated_conv", g * scale, v)
        out.set(f"{layer}.dilated_conv.bias", src.tensor(f"{block}.filter_gate_conv.conv.bias"))
        out.set_weight_norm(f"{layer}.cond_conv", *src.weight_norm(f"{block}.filter_gate_conv_c"))
        out.set(f"{layer}.cond_conv.bias", src.tensor(f"{block}.filter_gate_conv_c.bias"))
        g, v = src.weight_norm(f"{block}.res_skip_conv")
        bias = src.tensor(f"{block}.res_skip_conv.bias")
        channels = bias.shape[0] // 2
        if l == n_layers - 1:  # only the skip half is ever used
            g, v, bias = g[channels:], v[channels:], bias[channels:]
        else:
            g, bias = g.clone(), bias.clone()
            g[:channels] /= scale
            bias[:channels] /= scale
        out.set_weight_norm(f"{layer}.res_skip_conv", g, v)
        out.set(f"{layer}.res_skip_conv.bias", bias)


def _convert_projection(
    src: SourceState, out: TargetState, flow: str, target: str, nsf: bool
) -> None:
    """`ZeroConv2d` (exp(3 * scale) folded) or the NSF projection (derivative offset)."""
    if nsf:
        weight = src.weight(f"{flow}.proj.conv")
        bias = src.tensor(f"{flow}.proj.conv.bias").clone()
        bins = (bias.shape[0] + 1) // 3
        bias[2 * bins :] -= identity_derivative_logit(DEFAULT_MIN_DERIVATIVE)
    else:
        factor = torch.exp(3 * src.tensor(f"{flow}.proj_log_s_t.scale")).flatten()
        weight = src.tensor(f"{flow}.proj_log_s_t.conv.weight") * factor[:, None, None, None]
        bias = src.tensor(f"{flow}.proj_log_s_t.conv.bias") * factor
    out.set(f"{target}.weight", weight)
    out.set(f"{target}.bias", bias)


__all__ = ["is_l0sg_checkpoint", "reference_settings", "convert_l0sg"]

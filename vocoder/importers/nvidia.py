"""NVIDIA's WaveGlow (NVIDIA/waveglow, DeepLearningExamples) as this toolkit's "waveglow".

Two published forms, both read by `vocoder.importers.safe_pickle.load_foreign_checkpoint`:
- training checkpoints `{'model': <glow.WaveGlow>, ...}` (or the module saved alone): the
  pickled module, read as a `ModuleRecord` (weight norm as `weight_g`/`weight_v`, or plain
  `weight` once removed);
- torch.hub / NGC checkpoints `{'state_dict': {'module.upsample.weight', ...}, 'config'}`.

Names, NVIDIA -> ours, for flow k and layer l (C channels, L layers, w channels in flow k):

    upsample                        upsampler.conv
    convinv.k.conv.weight [w, w, 1] invconvs.k.weight [w, w]
    WN.k.start                      nets.k.start
    WN.k.in_layers.l                nets.k.layers.l.in_conv
    WN.k.cond_layer (2CL outputs)   nets.k.layers.l.cond_conv (its outputs 2Cl .. 2C(l+1))
      or WN.k.cond_layers.l         (older code and DeepLearningExamples: one per layer)
    WN.k.res_skip_layers.l          nets.k.layers.l.res_skip_conv
    WN.k.end                        projections.k, output halves swapped: NVIDIA emits
                                    (b, log_s), our affine coupling reads (log_s, t)

The oldest code, glow_old.py (separate res_layers and skip_layers), swaps the coupling
halves in odd flows; its checkpoints are refused, not imported approximately.

Weight norm is per output channel (dim 0), so splitting or concatenating convs along their
outputs splits or concatenates `g` and `v` exactly. Everything else (grouping of audio and
mel, early outputs first in z, the coupling's first half conditioning) is the same in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vocoder.errors import ConfigError, InputError, some_of
from vocoder.importers.safe_pickle import ModuleRecord, module_state_dict
from vocoder.importers.weights import SourceState, TargetState, count_indexed, strip_prefix
from vocoder.models import ModelConfig, build_model

# glow_old.py (its WN with separate res_layers and skip_layers) swaps the coupling halves
# in every odd flow, which no config of this toolkit's WaveGlow expresses
OLD_CODE = (
    "a WaveGlow of NVIDIA's glow_old.py (separate res_layers and skip_layers, coupling "
    "halves swapped in odd flows), which this toolkit cannot run exactly; not imported"
)
HOP_LENGTH = 256  # NVIDIA's upsampler: ConvTranspose1d(n_mels, n_mels, 1024, stride=256)
SAMPLE_RATE = 22050


def _state_dict_in(data: Any) -> Mapping[str, Tensor] | None:
    """The tensor dict of a hub checkpoint (`state_dict`), of `{'model': dict}`, or `data`."""
    if not isinstance(data, Mapping):
        return None
    for candidate in (data.get("state_dict"), data.get("model"), data):
        if isinstance(candidate, Mapping) and candidate:
            if all(isinstance(k, str) and isinstance(v, Tensor) for k, v in candidate.items()):
                return candidate
    return None


def _has_nvidia_names(state: Mapping[str, Tensor]) -> bool:
    state = strip_prefix(state)
    return (
        "upsample.weight" in state
        and "convinv.0.conv.weight" in state
        and any(k.startswith("WN.0.start.") for k in state)
    )


def _module_in(data: Any) -> ModuleRecord | None:
    """The pickled module of a training checkpoint (`{'model': module}`), or of a file that
    holds the module alone (`torch.save(waveglow, path)`)."""
    if isinstance(data, ModuleRecord):
        return data
    model = data.get("model") if isinstance(data, Mapping) else None
    return model if isinstance(model, ModuleRecord) else None


def is_nvidia_waveglow(data: Any) -> bool:
    """Whether `data` (from `load_foreign_checkpoint`) holds an NVIDIA WaveGlow."""
    module = _module_in(data)
    if module is not None:
        return module.class_name in ("glow.WaveGlow", "glow_old.WaveGlow")
    state = _state_dict_in(data)
    return state is not None and _has_nvidia_names(state)


def _nvidia_state(
    data: Any, source: Path, config: dict | None
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The state dict with NVIDIA's names, and what the checkpoint or `config` says of it."""
    hints: dict[str, Any] = {}
    model = _module_in(data)
    if model is not None:
        if model.class_name == "glow_old.WaveGlow":
            raise InputError(source, OLD_CODE)
        if model.class_name != "glow.WaveGlow":
            raise InputError(source, f"its model is a {model.class_name}, not glow.WaveGlow")
        state = module_state_dict(model, source)
        keys = ("n_flows", "n_group", "n_early_every", "n_early_size")
        hints.update({k: model.state[k] for k in keys if k in model.state})
        wn = (model.state.get("_modules") or {}).get("WN")
        first = (wn.state.get("_modules") or {}).get("0") if isinstance(wn, ModuleRecord) else None
        if isinstance(first, ModuleRecord):
            keys = ("n_layers", "n_channels")
            hints.update({f"WN_config.{k}": first.state[k] for k in keys if k in first.state})
    else:
        found = _state_dict_in(data)
        if found is None or not _has_nvidia_names(found):
            raise InputError(source, "not an NVIDIA WaveGlow checkpoint")
        state = dict(found)
        if isinstance(data, Mapping) and isinstance(data.get("config"), Mapping):
            hints.update(_plain_config(data["config"]))
    if config is not None:
        hints.update(_plain_config(config.get("waveglow_config", config)))
    return strip_prefix(state), hints


def _plain_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """NVIDIA's `waveglow_config`, flat: `{"n_flows": 12, "WN_config.n_layers": 8, ...}`."""
    out = {k: v for k, v in config.items() if k != "WN_config"}
    if isinstance(config.get("WN_config"), Mapping):
        out.update({f"WN_config.{k}": v for k, v in config["WN_config"].items()})
    return out


def _shape(state: Mapping[str, Tensor], prefix: str, source: Path) -> tuple[int, int, int]:
    """The weight shape of 1-D conv `prefix` (`weight`, or `weight_v` under weight norm)."""
    for key in (f"{prefix}.weight", f"{prefix}.weight_v"):
        if key in state:
            shape = tuple(state[key].shape)
            if len(shape) != 3:
                raise InputError(source, f"{key} has shape {shape}, not that of a 1-D conv")
            return shape
    raise InputError(source, f"missing tensor {prefix}.weight for NVIDIA's WaveGlow")


def _int(hints: dict[str, Any], key: str, default: int, source: Path) -> int:
    value = hints.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(source, f"its config's {key} is {value!r}, not an integer")
    return value


def _model_config(state: dict[str, Tensor], hints: dict[str, Any], source: Path) -> ModelConfig:
    """The `ModelConfig` read from the tensor shapes, checked against `hints`."""
    n_mels, _, kernel = _shape(state, "upsample", source)
    if kernel != 4 * HOP_LENGTH:
        raise InputError(source, f"upsampler kernel {kernel}, expected {4 * HOP_LENGTH} (hop 256)")
    n_flows = count_indexed(state, "convinv.{}.")
    widths = [_shape(state, f"convinv.{k}.conv", source)[0] for k in range(n_flows)]
    if n_flows == 0 or count_indexed(state, "WN.{}.") != n_flows:
        raise InputError(source, f"{n_flows} 1x1 convs but {count_indexed(state, 'WN.{}.')} WNs")
    drops = [k for k in range(1, n_flows) if widths[k] != widths[k - 1]]
    # early outputs: where the 1x1 convs narrow, unless the checkpoint or config says
    step = drops[0] if drops else 0
    every = _int(hints, "n_early_every", step, source)
    size = _int(hints, "n_early_size", widths[step - 1] - widths[step] if drops else 2, source)
    channels, _, _ = _shape(state, "WN.0.start", source)
    n_layers = count_indexed(state, "WN.0.in_layers.{}.")
    kernel_size = _shape(state, "WN.0.in_layers.0", source)[2] if n_layers else 0
    config = ModelConfig(
        family="waveglow",
        n_flows=n_flows,
        n_layers=n_layers,
        n_group=widths[0],
        channels=channels,
        kernel_size=kernel_size,
        n_mels=n_mels,
        hop_length=HOP_LENGTH,
        sample_rate=SAMPLE_RATE,
        n_early_every=every,
        n_early_size=size,
    )
    try:
        config.validate()
    except ConfigError as e:
        raise InputError(source, f"not a WaveGlow this toolkit can build ({e})") from None
    if config.glow_channel_schedule() != widths:
        raise InputError(
            source,
            f"its 1x1 convs have {widths} channels, not the schedule of {size} early channels "
            f"every {every} flows",
        )
    found = {
        "n_mel_channels": n_mels,
        "n_flows": n_flows,
        "n_group": widths[0],
        "WN_config.n_layers": n_layers,
        "WN_config.n_channels": channels,
        "WN_config.kernel_size": kernel_size,
    }
    for key, value in found.items():
        if key in hints and hints[key] != value:
            raise InputError(source, f"its config says {key} = {hints[key]!r}, its weights {value}")
    return config


class _Reader:
    """`SourceState` reads with the shapes NVIDIA's WaveGlow of `config` must have."""

    def __init__(self, src: SourceState, source: Path):
        self.src = src
        self.source = source

    def check(self, name: str, tensor: Tensor, shape: tuple[int, ...]) -> Tensor:
        if tuple(tensor.shape) != shape:
            raise InputError(
                self.source, f"{name} has shape {tuple(tensor.shape)}, expected {shape}"
            )
        return tensor

    def weight(self, prefix: str, shape: tuple[int, ...]) -> Tensor:
        return self.check(f"{prefix}.weight", self.src.weight(prefix), shape)

    def bias(self, prefix: str, size: int) -> Tensor:
        return self.check(f"{prefix}.bias", self.src.tensor(f"{prefix}.bias"), (size,))

    def conv(self, prefix: str, shape: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
        """`(g, v, bias)` of weight-normed conv `prefix` (a plain weight gives g = ||W||)."""
        g, v = self.src.weight_norm(prefix)
        self.check(f"{prefix}.weight_v", v, shape)
        self.check(f"{prefix}.weight_g", g, (shape[0],) + (1,) * (len(shape) - 1))
        return g, v, self.bias(prefix, shape[0])


def _cond_convs(read: _Reader, wn: str, c: ModelConfig) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Each layer's `(g, v, bias)` of the cond conv, split from a fused one if need be."""
    shape = (2 * c.channels, c.n_mels * c.n_group, 1)
    if read.src.has(f"{wn}.cond_layer.bias"):
        g, v, b = read.conv(f"{wn}.cond_layer", (c.n_layers * shape[0], *shape[1:]))
        return list(zip(g.split(shape[0]), v.split(shape[0]), b.split(shape[0]), strict=True))
    return [read.conv(f"{wn}.cond_layers.{i}", shape) for i in range(c.n_layers)]


def _res_skip_conv(read: _Reader, wn: str, i: int, c: ModelConfig):
    """Layer i's `(g, v, bias)` of the res/skip conv (2C outputs, C for the last layer)."""
    outputs = c.channels if i == c.n_layers - 1 else 2 * c.channels
    return read.conv(f"{wn}.res_skip_layers.{i}", (outputs, c.channels, 1))


def convert_nvidia_waveglow(
    data: Any, source: str | Path, config: dict | None = None
) -> tuple[ModelConfig, dict[str, Tensor]]:
    """`(ModelConfig, state dict)` of NVIDIA WaveGlow `data`, for `build_model` (training form).

    `config` is NVIDIA's config.json (or its `waveglow_config`); when given, or when the
    checkpoint carries its own, it must agree with the tensor shapes.
    """
    source = Path(source)
    state, hints = _nvidia_state(data, source, config)
    if any(".skip_layers." in key for key in state):
        raise InputError(source, OLD_CODE)
    c = _model_config(state, hints, source)
    src = SourceState(state, source)
    read = _Reader(src, source)
    dst = TargetState(build_model(c), source)
    upsample = read.weight("upsample", (c.n_mels, c.n_mels, 4 * c.hop_length))
    dst.set("upsampler.conv.weight", upsample)
    dst.set("upsampler.conv.bias", read.bias("upsample", c.n_mels))
    for k, width in enumerate(c.glow_channel_schedule()):
        wn, net, half = f"WN.{k}", f"nets.{k}", width // 2
        dst.set(f"invconvs.{k}.weight", read.weight(f"convinv.{k}.conv", (width, width, 1)))
        _set_conv(dst, f"{net}.start", read.conv(f"{wn}.start", (c.channels, half, 1)))
        cond = _cond_convs(read, wn, c)
        for i in range(c.n_layers):
            layer = f"{net}.layers.{i}"
            shape = (2 * c.channels, c.channels, c.kernel_size)
            _set_conv(dst, f"{layer}.in_conv", read.conv(f"{wn}.in_layers.{i}", shape))
            _set_conv(dst, f"{layer}.cond_conv", cond[i])
            _set_conv(dst, f"{layer}.res_skip_conv", _res_skip_conv(read, wn, i, c))
        # NVIDIA's end conv emits (b, log_s); our coupling reads (log_s, t)
        order = torch.cat([torch.arange(half, width), torch.arange(half)])
        end = read.weight(f"{wn}.end", (width, c.channels, 1))
        dst.set(f"projections.{k}.weight", end[order])
        dst.set(f"projections.{k}.bias", read.bias(f"{wn}.end", width)[order])
    unused = src.unused()
    if unused:
        raise InputError(source, f"tensors NVIDIA's WaveGlow does not have: {some_of(unused)}")
    return c, dst.finish()


def _set_conv(dst: TargetState, prefix: str, conv: tuple[Tensor, Tensor, Tensor]) -> None:
    g, v, bias = conv
    dst.set_weight_norm(prefix, g, v)
    dst.set(f"{prefix}.bias", bias)


__all__ = ["is_nvidia_waveglow", "convert_nvidia_waveglow"]

"""`FlowVocoder`: what every flow vocoder offers, whatever its family.

A flow vocoder maps audio `[B, T]` and its log-mel `[B, n_mels, F]` to a latent `z [B, T]`
with an exact log-determinant; the density of audio is N(z; 0, 1) times |det dz/dx|.
Subclasses implement `upsample`, `_forward_flows`, `_inverse_flows` and `receptive_field`;
NanoFlow families also `_cache_flow_embedding`.

Length rules: `forward` and `inverse` need T to be a multiple of `n_group` and at most
`F * hop_length` (the conditioning is upsampled to `F * hop_length` samples, then its first T
are used). `log_prob` instead trims audio to the largest multiple of `n_group` first.

Padded batches: `log_prob` with `lengths` scores zero-padded utterances of different lengths
in one pass, each as if alone. Families with `masks_padding` do it in their `_forward_flows`
(a column mask); the others score each utterance on its own.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.utils import parametrize
from torch.utils.flop_counter import FlopCounterMode

from vocoder.errors import InputError
from vocoder.flows.coupling import AffineElementwise, Elementwise, SplineElementwise
from vocoder.models.config import ModelConfig

LOG_2PI = math.log(2 * math.pi)


def network_reach(config: ModelConfig) -> int:
    """Columns one flow's network sees on each side of its output column: its dilated convs
    (dilations 1, 2, .., 2^(L-1)) reach (kernel - 1) / 2 * (2^L - 1)."""
    return (config.kernel_size - 1) // 2 * (2**config.n_layers - 1)


@dataclass(frozen=True)
class ReceptiveField:
    """How far one output sample's transform reaches, in the squeezed layout and in samples.

    rows: rows above a row that one flow's transform of it depends on (WaveFlow/NanoFlow,
        at most n_group - 1); 0 for the Glow families, which mix all channels of a group.
    columns: columns (groups of n_group consecutive samples) one flow's network sees,
        centred on the output column.
    samples: the span of samples the whole model's output sample can depend on,
        n_group * (n_flows * (columns - 1) + 1), ignoring the mel conditioning.
    """

    rows: int
    columns: int
    samples: int


def elementwise_for(config: ModelConfig) -> Elementwise:
    """The per-element bijection a config's couplings use."""
    if config.coupling == "rqs":
        return SplineElementwise(config.spline_bins, config.spline_tail_bound, config.channels)
    return AffineElementwise()


def fold_weight_norm(module: nn.Module) -> None:
    """Replace every weight-norm (any) parametrization under `module` by its plain weight.

    Unlike `parametrize.remove_parametrizations`, this never edits the parametrized class,
    which `copy.deepcopy` shares between a module and its copies.
    """
    for m in list(module.modules()):
        if not parametrize.is_parametrized(m):
            continue
        with torch.no_grad():  # a parametrization's output is a fresh tensor: no clone needed
            values = {name: getattr(m, name) for name in m.parametrizations}
        m.__class__ = m.__class__.__bases__[0]
        del m.parametrizations
        for name, value in values.items():
            m.register_parameter(name, nn.Parameter(value))


class FlowVocoder(nn.Module):
    """Base class of the flow vocoders; see the module docstring for the length rules."""

    masks_padding = False
    """Whether `_forward_flows` takes a column mask, so that a padded batch needs one pass."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.inference_form = False

    # ---- implemented by each family ----

    def upsample(self, mel: Tensor) -> Tensor:
        """`[B, n_mels, F]` -> `[B, n_mels, >= F * hop_length]`."""
        raise NotImplementedError

    def _forward_flows(
        self, audio: Tensor, cond: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Audio `[B, T]`, conditioning `[B, n_mels, T]` -> `(z [B, T], logdet [B])`.

        `mask` (`masks_padding` families only) `[B, T / n_group]`: 1 on each utterance's own
        columns, 0 on its padding, which must then reach neither the real columns nor `logdet`.
        """
        raise NotImplementedError

    def _inverse_flows(self, z: Tensor, cond: Tensor) -> Tensor:
        raise NotImplementedError

    def receptive_field(self) -> ReceptiveField:
        raise NotImplementedError

    def _cache_flow_embedding(self) -> None:
        """Replace a flow indication embedding by cached per-flow vectors (NanoFlow)."""

    # ---- the common contract ----

    def conditioning(self, mel: Tensor, length: int) -> Tensor:
        """The upsampled mel trimmed to `length` samples: `[B, n_mels, length]`."""
        frames = mel.shape[-1]
        if length > frames * self.config.hop_length:
            raise InputError(
                "audio",
                f"{length} samples need at least {math.ceil(length / self.config.hop_length)} "
                f"mel frames at hop {self.config.hop_length}, got {frames}",
            )
        return self.upsample(mel)[..., :length]

    def _check(self, signal: Tensor, mel: Tensor, what: str) -> None:
        c = self.config
        if signal.dim() != 2:
            raise InputError(what, f"expected shape [batch, samples], got {tuple(signal.shape)}")
        if mel.dim() != 3 or mel.shape[1] != c.n_mels:
            raise InputError("mel", f"expected [batch, {c.n_mels}, frames], got {tuple(mel.shape)}")
        if mel.shape[0] != signal.shape[0]:
            raise InputError("mel", f"batch {mel.shape[0]} != {what} batch {signal.shape[0]}")
        length = signal.shape[1]
        if length == 0 or length % c.n_group:
            raise InputError(
                what, f"length {length} is not a positive multiple of n_group {c.n_group}"
            )

    def forward(self, audio: Tensor, mel: Tensor) -> tuple[Tensor, Tensor]:
        """Audio `[B, T]` and mel `[B, n_mels, F]` -> `(z [B, T], logdet [B])`."""
        self._check(audio, mel, "audio")
        return self._forward_flows(audio, self.conditioning(mel, audio.shape[1]))

    def log_prob(
        self,
        audio: Tensor,
        mel: Tensor,
        lengths: Tensor | None = None,
        mel_lengths: Tensor | None = None,
    ) -> Tensor:
        """Mean log-density per sample in nats, `[B]`, under a N(0, 1) prior.

        Audio is first trimmed to the largest multiple of `n_group` samples; the mean is over
        the samples kept. Includes the Gaussian's 0.5 * log(2 pi) term.

        A zero-padded batch of utterances: `lengths` `[B]` (LongTensor) gives each one's
        samples, `mel_lengths` `[B]` its mel frames (default: all of `mel`'s). Each figure then
        equals that of `audio[i, :lengths[i]]` and `mel[i, :, :mel_lengths[i]]` alone, up to
        float rounding: each utterance's conditioning is upsampled from its own frames, and
        the padding is masked out of the network and the sums.
        """
        if lengths is not None or mel_lengths is not None:
            return self._padded_log_prob(audio, mel, lengths, mel_lengths)
        length = audio.shape[-1] // self.config.n_group * self.config.n_group
        audio = audio[..., :length]
        z, logdet = self(audio, mel)
        log_pz = -0.5 * (z.square() + LOG_2PI).sum(dim=1)
        return (log_pz + logdet) / length

    def _padded_log_prob(
        self, audio: Tensor, mel: Tensor, lengths: Tensor | None, mel_lengths: Tensor | None
    ) -> Tensor:
        h = self.config.n_group
        batch = audio.shape[0]
        samples = [audio.shape[-1]] * batch if lengths is None else lengths.tolist()
        frames = [mel.shape[-1]] * batch if mel_lengths is None else mel_lengths.tolist()
        if len(samples) != batch or not all(h <= n <= audio.shape[-1] for n in samples):
            raise InputError(
                "lengths", f"expected {batch} lengths in [{h}, {audio.shape[-1]}], got {samples}"
            )
        if len(frames) != batch or not all(1 <= f <= mel.shape[-1] for f in frames):
            raise InputError(
                "mel_lengths", f"expected {batch} lengths in [1, {mel.shape[-1]}], got {frames}"
            )
        if not self.masks_padding:
            return torch.cat(
                [
                    self.log_prob(audio[i : i + 1, :n], mel[i : i + 1, :, :f])
                    for i, (n, f) in enumerate(zip(samples, frames, strict=True))
                ]
            )
        kept = [n // h * h for n in samples]
        audio = audio[:, : max(kept)]
        self._check(audio, mel, "audio")
        if mel_lengths is None:
            cond = self.conditioning(mel, audio.shape[1])
        else:  # the upsampler reaches past a mel's last frame: upsample each from its own
            cond = mel.new_zeros(batch, mel.shape[1], audio.shape[1])
            for i, (n, f) in enumerate(zip(kept, frames, strict=True)):
                cond[i, :, :n] = self.conditioning(mel[i : i + 1, :, :f], n)[0]
        kept_t = torch.tensor(kept, device=audio.device)
        columns = torch.arange(audio.shape[1] // h, device=audio.device)
        mask = (columns < kept_t[:, None] // h).to(audio.dtype)  # [B, W]
        # column j holds samples j*h .. j*h + h - 1 (the squeeze is column-major)
        keep = mask.repeat_interleave(h, dim=1) > 0
        # the padding's values never matter; zeroed, inf or NaN there cannot reach a gradient
        audio = torch.where(keep, audio, 0.0)
        z, logdet = self._forward_flows(audio, cond, mask)
        log_pz = -0.5 * torch.where(keep, z.square() + LOG_2PI, 0.0).sum(dim=1)
        return (log_pz + logdet) / kept_t.to(logdet.dtype)

    def inverse(self, z: Tensor, mel: Tensor) -> Tensor:
        """Latent `[B, T]` and mel -> audio `[B, T]` (the plain, unoptimised inverse)."""
        self._check(z, mel, "z")
        return self._inverse_flows(z, self.conditioning(mel, z.shape[1]))

    def infer(
        self, mel: Tensor, sigma: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """Sample audio `[B, F * hop_length]` for mel `[B, n_mels, F]`, z ~ N(0, sigma^2)."""
        if mel.dim() != 3:
            raise InputError("mel", f"expected [batch, n_mels, frames], got {tuple(mel.shape)}")
        shape = (mel.shape[0], mel.shape[-1] * self.config.hop_length)
        # drawn where the generator lives (CPU or GPU), so a seed gives the same z anywhere
        device = generator.device if generator is not None else mel.device
        z = torch.randn(shape, generator=generator, device=device, dtype=mel.dtype)
        return self.inverse(sigma * z.to(mel.device), mel)

    def to_inference_form(self) -> FlowVocoder:
        """A copy in eval mode with weight norm folded and flow embeddings cached."""
        model = copy.deepcopy(self)
        fold_weight_norm(model)
        model._cache_flow_embedding()
        model.inference_form = True
        return model.eval()

    def parameter_count(self, inference_form: bool = False) -> int:
        """Number of parameters, of this model or of its inference form."""
        model = self.to_inference_form() if inference_form and not self.inference_form else self
        return sum(p.numel() for p in model.parameters())

    def flops_per_sample(self, frames: int = 4) -> float:
        """2 x multiply-adds of one forward pass of the inference form, per audio sample.

        Counts convolutions and matrix products (not elementwise ops) over `frames` mel
        frames, on fake tensors: shapes only, nothing is computed.
        """
        model = self if self.inference_form else self.to_inference_form()
        c = self.config
        length = frames * c.hop_length
        # FakeTensorMode (torch's shape-only tensors, as used by torch.compile) rather than
        # the meta device: it keeps the device type, so autocast regions still work
        like = next(model.parameters())
        with FakeTensorMode(allow_non_fake_inputs=True):
            audio = torch.zeros(1, length, device=like.device, dtype=like.dtype)
            mel = torch.zeros(1, c.n_mels, frames, device=like.device, dtype=like.dtype)
            with FlopCounterMode(display=False) as counter:
                model(audio, mel)
        return counter.get_total_flops() / length


__all__ = [
    "FlowVocoder",
    "ReceptiveField",
    "elementwise_for",
    "fold_weight_norm",
    "network_reach",
    "LOG_2PI",
]

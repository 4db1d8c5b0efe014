"""The flow vocoders against their contract: invertibility, exact likelihood, structure."""

from __future__ import annotations

import json
import math

import pytest
import soundfile as sf
import torch
import yaml
from variants import ROW_VARIANTS, TINY, VARIANTS, tiny_model

from vocoder.cli import main
from vocoder.errors import ConfigError, InputError
from vocoder.features import MelConfig, MelSpectrogram
from vocoder.flows.squeeze import squeeze
from vocoder.models import (
    ModelConfig,
    build_model,
    list_model_presets,
    load_model_preset,
    model_config_from_dict,
    resolve_model_config,
)
from vocoder.models.flow_indication import CachedFlowIndication, FlowIndication
from vocoder.nets import wavenet2d
from vocoder.nets.upsample import MelUpsampler2D


def inputs(model, samples: int, batch: int = 2, dtype=torch.float32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    frames = math.ceil(samples / c.hop_length)
    audio = 0.5 * torch.randn(batch, samples, generator=g, dtype=dtype)
    mel = torch.randn(batch, c.n_mels, frames, generator=g, dtype=dtype)
    return audio, mel


@pytest.mark.parametrize("samples", [203, 61])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_inverse_of_forward_is_identity(variant, samples):
    """Odd lengths: forward/inverse refuse them, log_prob trims to a multiple of n_group.

    203 and 61 samples leave 200 and 60 (h = 4: 50 and 15 columns) or 200 and 56 (groups of
    8: 25 and 7 columns), so even and odd widths are both covered; the mel has
    ceil(samples / hop) frames, more than the trimmed audio needs.
    """
    model = tiny_model(variant, spread=0.1)
    odd, mel = inputs(model, samples)
    length = samples // model.config.n_group * model.config.n_group
    audio = odd[:, :length]
    with torch.no_grad():
        with pytest.raises(InputError, match="multiple of n_group"):
            model(odd, mel)
        z, logdet = model(audio, mel)
        back = model.inverse(z, mel)
        assert torch.equal(model.log_prob(odd, mel), model.log_prob(audio, mel))
    assert z.shape == audio.shape and logdet.shape == (2,)
    assert not torch.allclose(z, audio, atol=1e-3)  # the flows do something
    assert (back - audio).abs().max().item() < 1e-4


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_logdet_is_log_abs_det_of_the_jacobian(variant):
    model = tiny_model(variant, dtype=torch.float64, spread=0.1)
    samples = 8 * model.config.n_group if model.config.n_group == 4 else 32
    audio, mel = inputs(model, samples, batch=1, dtype=torch.float64)
    z, logdet = model(audio, mel)
    jac = torch.autograd.functional.jacobian(lambda a: model(a, mel)[0], audio)
    expected = torch.linalg.slogdet(jac.reshape(samples, samples))[1]
    assert abs(logdet.item() - expected.item()) <= 1e-3 * abs(expected.item()) + 1e-9
    assert abs(expected.item()) > 1e-2  # not the identity


@pytest.mark.parametrize("variant", ROW_VARIANTS)
def test_each_flow_is_autoregressive_over_rows(variant):
    model = tiny_model(variant, spread=0.1)
    audio, mel = inputs(model, 32, batch=1)
    h = model.config.n_group
    cond = squeeze(model.conditioning(mel, audio.shape[1]), h)
    prepared = model.prepare_conditioning(cond)
    x = squeeze(audio, h)
    with torch.no_grad():
        for k in range(model.config.n_flows):
            conditioner = model.flow_conditioner(k, prepared)
            y, _ = model.coupling(x, conditioner)
            for i in range(h):
                changed = x.clone()
                changed[:, i] += 1.0
                y2, _ = model.coupling(changed, conditioner)
                assert torch.equal(y2[:, :i], y[:, :i]), f"flow {k}: row {i} leaks upwards"
                if i + 1 < h:  # and the rows below do depend on it
                    assert not torch.allclose(y2[:, i + 1], y[:, i + 1])


@pytest.mark.parametrize("variant", ["waveflow", "nanoflow", "nanoflow-rqs", "nanoflow-glow"])
def test_inference_form_gives_the_same_outputs(variant):
    model = tiny_model(variant, spread=0.1)
    audio, mel = inputs(model, 64)
    inference = model.to_inference_form()
    assert inference.inference_form and not model.inference_form
    assert not any("parametrizations" in name for name, _ in inference.named_parameters())
    assert any("parametrizations" in name for name, _ in model.named_parameters())
    with torch.no_grad():
        z, logdet = model(audio, mel)
        z2, logdet2 = inference(audio, mel)
    assert (z - z2).abs().max().item() < 1e-5
    assert (logdet - logdet2).abs().max().item() < 1e-5
    assert inference.parameter_count() == model.parameter_count(inference_form=True)
    assert inference.parameter_count() < model.parameter_count()
    # a second copy from the same model still works (weight-norm classes are not shared)
    assert model.to_inference_form().parameter_count() == inference.parameter_count()


def test_untrained_nanoflow_is_decomp_plus_cached_per_flow_biases():
    """With gates at their zero init, NanoFlow = decomp + a constant bias per (flow, layer)."""
    torch.manual_seed(0)
    full = build_model(ModelConfig(**VARIANTS["nanoflow"]))
    with torch.no_grad():
        for projection in full.projections:
            projection.weight.normal_(0.0, 0.1)
    inference = full.to_inference_form()
    cached = inference.flow_indication
    assert isinstance(full.flow_indication, FlowIndication)
    assert isinstance(cached, CachedFlowIndication)
    n_flows, n_layers, channels = 3, 2, 8
    assert cached.bias.shape == (n_flows, n_layers, 2 * channels)
    gate = cached.residual_gate  # the reference variant's gate: ones at init
    assert cached.gate is None and torch.equal(gate, torch.ones(n_flows, n_layers, channels))
    assert not torch.allclose(cached.bias[0], cached.bias[1])

    decomp = build_model(ModelConfig(**dict(VARIANTS["nanoflow"], sharing="decomp")))
    decomp = decomp.to_inference_form()
    shared = {k: v for k, v in inference.state_dict().items() if "flow_indication" not in k}
    decomp.load_state_dict(shared)  # strict: decomp has exactly the non-embedding weights
    audio, mel = inputs(full, 64)
    with torch.no_grad():
        z_full, logdet_full = full(audio, mel)
        z_plain, _ = decomp(audio, mel)
        decomp.flow_indication = CachedFlowIndication(None, cached.bias, None)
        z_biased, logdet_biased = decomp(audio, mel)
    assert not torch.allclose(z_plain, z_full, atol=1e-4)  # the biases matter
    assert (z_biased - z_full).abs().max().item() < 1e-5
    assert (logdet_biased - logdet_full).abs().max().item() < 1e-5


def test_log_prob_on_a_real_clip(ljspeech_clips):
    wav = sorted((ljspeech_clips / "wavs").glob("*.wav"))[0]
    audio, rate = sf.read(wav, dtype="float32", frames=5003)
    assert rate == 22050
    audio = torch.from_numpy(audio).unsqueeze(0)
    mel = MelSpectrogram(MelConfig())(audio).float()
    config = ModelConfig(family="nanoflow", n_flows=2, n_layers=2, n_group=16, channels=8)
    model = build_model(config)
    with torch.no_grad():
        ll = model.log_prob(audio, mel)
    assert ll.shape == (1,) and torch.isfinite(ll).all()
    # untrained flows are the identity (zero projections): z = audio, trimmed to 4992 samples
    kept = audio[:, :4992]
    expected = (-0.5 * kept.square() - 0.5 * math.log(2 * math.pi)).mean()
    assert abs(ll.item() - expected.item()) < 1e-6


@pytest.mark.parametrize("variant", [*ROW_VARIANTS, "waveglow"])
def test_padded_batch_log_prob_equals_each_utterance_alone(variant, monkeypatch):
    """`log_prob` with lengths: each figure is the utterance's own, whatever the padding.

    The padding is noise, not zeros, and each mel has just the frames its audio needs, so
    its padding lies next to the last samples (the upsampler reaches past a mel's end, hence
    `mel_lengths`). WaveGlow scores each utterance alone; the
    row-autoregressive families mask the padding, and without the mask it leaks.
    """
    model = tiny_model(variant, spread=0.1)
    g = torch.Generator().manual_seed(2)
    # 200, 60 and 128 samples kept (200, 56, 128 for groups of 8), mels of ceil(kept / 16)
    lengths, frames = torch.tensor([203, 61, 130]), torch.tensor([13, 4, 8])
    audio = 0.5 * torch.randn(3, 203, generator=g)
    mel = torch.randn(3, model.config.n_mels, 13, generator=g)
    for i, f in enumerate(frames.tolist()):
        mel[i, :, f:] *= 10  # loud, to show wherever it leaks
    with torch.no_grad():
        alone = torch.cat(
            [
                model.log_prob(audio[i : i + 1, :n], mel[i : i + 1, :, :f])
                for i, (n, f) in enumerate(zip(lengths.tolist(), frames.tolist(), strict=True))
            ]
        )
        batched = model.log_prob(audio, mel, lengths, frames)
        full = model.log_prob(audio, mel, torch.tensor([203, 203, 203]))
        assert (full - model.log_prob(audio, mel)).abs().max().item() < 2e-6
        if model.masks_padding:
            whole_mels = model.log_prob(audio, mel, lengths)  # padding frames upsampled too
            forward_flows = model._forward_flows
            monkeypatch.setattr(model, "_forward_flows", lambda a, c, mask: forward_flows(a, c))
            unmasked = model.log_prob(audio, mel, lengths, frames)
    assert (batched - alone).abs().max().item() < 2e-6
    if model.masks_padding:
        assert (whole_mels - alone)[1:].abs().min().item() > 1e-5
        assert (unmasked - alone)[1:].abs().min().item() > 1e-3


@pytest.mark.parametrize("variant", ["waveflow", "waveflow-rqs", "nanoflow"])
def test_padded_batch_log_prob_ignores_non_finite_padding(variant):
    """What lies past an utterance's end is never read, not even by the gradients (inf
    padding once made 2 * inf * 0 = NaN gradients for tens of parameters)."""
    model = tiny_model(variant, spread=0.1)
    g = torch.Generator().manual_seed(3)
    audio = 0.5 * torch.randn(2, 160, generator=g)
    mel = torch.randn(2, model.config.n_mels, 10, generator=g)
    audio[1, 64:] = float("inf")
    batched = model.log_prob(audio, mel, torch.tensor([160, 64]), torch.tensor([10, 4]))
    with torch.no_grad():
        alone = model.log_prob(audio[1:, :64], mel[1:, :, :4])
    assert torch.isfinite(batched).all()
    assert (batched[1] - alone[0]).abs().item() < 2e-6
    batched.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_infer_shape_sigma_and_generator():
    model = tiny_model("nanoflow", spread=0.1)
    _, mel = inputs(model, 48, batch=2)
    with torch.no_grad():
        a = model.infer(mel, sigma=0.6, generator=torch.Generator().manual_seed(3))
        b = model.infer(mel, sigma=0.6, generator=torch.Generator().manual_seed(3))
        silent = model.infer(mel, sigma=0.0)
    assert a.shape == (2, mel.shape[-1] * 16)
    assert torch.equal(a, b)
    z, _ = model(a, mel)
    expected_z = 0.6 * torch.randn(a.shape, generator=torch.Generator().manual_seed(3))
    assert (z - expected_z).abs().max().item() < 1e-4
    assert torch.isfinite(silent).all()


def test_length_and_shape_errors():
    model = tiny_model("waveflow", spread=0.1)
    audio, mel = inputs(model, 64)
    with pytest.raises(InputError, match="multiple of n_group"):
        model(audio[:, :63], mel)
    with pytest.raises(InputError, match="mel frames"):
        model(audio, mel[:, :, :3])  # 64 samples need 4 frames at hop 16
    with pytest.raises(InputError, match="mel"):
        model(audio, mel[:, :5])
    # log_prob trims instead: 63 samples -> 60
    assert model.log_prob(audio[:, :63], mel).shape == (2,)
    for lengths in ([64, 65], [64, 3], [64]):
        with pytest.raises(InputError, match="lengths"):
            model.log_prob(audio, mel, torch.tensor(lengths))
    with pytest.raises(InputError, match="mel_lengths"):
        model.log_prob(audio, mel, torch.tensor([64, 64]), torch.tensor([4, 5]))
    with pytest.raises(InputError, match="mel frames"):  # 64 samples need 4 frames at hop 16
        model.log_prob(audio, mel, torch.tensor([64, 64]), torch.tensor([4, 3]))


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(hop_length=18), "multiple of n_group"),
        (dict(upsample_strides=[2, 4]), "multiply to"),
        (dict(permutation="bipartized", n_group=3, hop_length=15), "even n_group"),
        (dict(shared_layers=1), "nanoflow only"),
        (dict(family="nanoflow", shared_layers=5), "shared_layers"),
        (
            dict(family="nanoflow", additive_bias=False, multiplicative_gate=False),
            "at least one of",
        ),
        (dict(family="waveglow", n_group=6, hop_length=12, n_flows=8, n_early_size=1), "even"),
        (dict(kernel_size=2), "odd"),
        (dict(family="wavernn"), "wavernn"),
        (dict(n_group=1), "n_group must be at least 2 for waveflow"),
        (dict(family="nanoflow", n_group=1), "with one row the coupling"),
        (
            dict(family="nanoflow", n_layers=1, additive_bias=False, concat_embedding=False),
            "gate alone needs n_layers >= 2",
        ),
    ],
)
def test_config_validation(changes, message):
    with pytest.raises(ConfigError, match=message):
        model_config_from_dict(dict(TINY, **changes))


def test_config_rejects_unknown_keys_and_wrong_types():
    with pytest.raises(ConfigError, match="n_flow"):
        model_config_from_dict({"n_flow": 8})
    with pytest.raises(ConfigError, match="channels"):
        model_config_from_dict({"channels": "128"})


@pytest.mark.parametrize("hop, strides", [(256, (16, 16)), (300, (15, 20)), (512, (16, 32))])
def test_upsampler_strides_multiply_to_hop(hop, strides):
    config = ModelConfig(hop_length=hop, n_group=4)
    assert config.strides == strides
    mel = torch.randn(1, 3, 5)
    assert MelUpsampler2D(config.strides)(mel).shape == (1, 3, 5 * hop)


def test_resolve_model_config_from_every_source(tmp_path):
    assert "waveflow-h16-r64" in list_model_presets()
    preset = load_model_preset("waveflow-h16-r64")
    assert preset.channels == 64 and resolve_model_config("waveflow-h16-r64") == preset
    tiny = ModelConfig(**VARIANTS["nanoflow"])
    section = {k: v for k, v in vars(tiny).items()}

    (tmp_path / "m.yaml").write_text(yaml.safe_dump({"model": section, "train": {"lr": 1}}))
    (tmp_path / "plain.json").write_text(json.dumps(section))
    torch.save({"config": {"model": section}, "model": {}}, tmp_path / "c.pt")
    (tmp_path / "w.safetensors").write_bytes(b"")
    (tmp_path / "w.json").write_text(json.dumps({"model": section}))
    for name in ("m.yaml", "plain.json", "c.pt", "w.safetensors"):
        assert resolve_model_config(tmp_path / name) == tiny, name

    with pytest.raises(InputError, match="not a model preset"):
        resolve_model_config("no-such-model")
    (tmp_path / "lonely.safetensors").write_bytes(b"")
    with pytest.raises(InputError, match="lonely.json"):
        resolve_model_config(tmp_path / "lonely.safetensors")
    torch.save({"state": 1}, tmp_path / "bare.pt")
    with pytest.raises(InputError, match="config"):
        resolve_model_config(tmp_path / "bare.pt")


def test_info_command(tmp_path, capsys):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"model": VARIANTS["nanoflow"]}))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    model = build_model(ModelConfig(**VARIANTS["nanoflow"]))
    assert f"{model.parameter_count():,}" in out
    assert f"{model.parameter_count(inference_form=True):,}" in out
    assert "receptive field" in out and "FLOPs per sample" in out
    assert main(["info", str(tmp_path / "missing.yaml")]) == 2


def test_flops_and_receptive_field_of_a_tiny_waveflow():
    model = build_model(ModelConfig(**VARIANTS["waveflow"]))
    c = model.config
    # per sample, per flow: each layer's 3x3 conv and cond conv, the res/skip convs (the
    # last layer's skip only), the front conv and the projection; plus the upsampler, in its
    # polyphase form: per layer a [8 x (F_in + 1), 7] @ [7, s = 4] product, on F_in = 4 then
    # 16 frames (flops_per_sample's 4 frames), over T = 64 samples
    per_layer = 9 * 8 * 16 + 8 * 16
    upsampler = 8 * (4 + 1) * 7 * 4 + 8 * (16 + 1) * 7 * 4
    macs = c.n_flows * (2 * per_layer + 8 * 16 + 8 * 8 + 8 + 8 * 2) + upsampler / 64
    assert model.flops_per_sample() == 2 * macs
    field = model.receptive_field()
    assert field.rows == 3 and field.columns == 1 + 2 * 3
    assert field.samples == 4 * (3 * 6 + 1)


@pytest.mark.parametrize(
    "variant",
    ["waveflow-rqs", "nanoflow", "nanoflow-partial-concat", "nanoflow-naive-partial"]
    + ["nanoflow-bias-only", "nanoflow-gate-only", "nanoflow-concat-only"]
    + ["nanoflow-glow-naive", "nanoflow-glow-concat-rqs", "waveglow"],
)
def test_training_loss_reaches_every_parameter(variant):
    """A fresh model's NLL back-propagates into every parameter (no unused ones, for DDP)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**VARIANTS[variant]))
    audio, mel = inputs(model, 64)
    loss = -model.log_prob(audio, mel).mean()
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("variant", ["waveflow", "nanoflow", "nanoflow-partial-concat"])
def test_cpu_runs_the_2d_network_channels_last_with_the_same_values(variant, monkeypatch):
    """On a CPU every dilated conv of the 2-D WaveNet gets a channels-last input (oneDNN's
    faster layout), and the log-likelihood and its gradients are what NCHW gives."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**VARIANTS[variant]))
    audio, mel = inputs(model, 64)
    layouts: list[bool] = []

    def record(module, args):
        layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))

    for module in model.modules():
        if isinstance(module, wavenet2d.GatedLayer2D):
            module.dilated_conv.register_forward_pre_hook(record)

    def loss_and_grads():
        model.zero_grad()
        loss = -model.log_prob(audio, mel).mean()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    loss, grads = loss_and_grads()
    assert layouts and all(layouts)
    layouts.clear()
    monkeypatch.setattr(wavenet2d, "conv_layout", lambda x: x)
    nchw_loss, nchw_grads = loss_and_grads()
    assert layouts and not any(layouts)
    torch.testing.assert_close(loss, nchw_loss, rtol=1e-5, atol=1e-6)
    for grad, nchw in zip(grads, nchw_grads, strict=True):
        torch.testing.assert_close(grad, nchw, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("stride", [16, 15, 20, 4, 2, 1])
def test_upsampler_polyphase_matches_transposed_conv(stride):
    """The upsampler's matrix-product form computes exactly `ConvTranspose2d`, values and
    gradients, for even and odd strides."""
    torch.manual_seed(stride)
    upsampler = MelUpsampler2D((stride, 2))
    mel = torch.randn(2, 5, 7, requires_grad=True)
    got = upsampler(mel)
    x = mel.unsqueeze(1)
    for layer in upsampler.layers:
        x = torch.nn.functional.leaky_relu(layer(x), upsampler.negative_slope)
    expected = x.squeeze(1)
    assert got.shape == expected.shape == (2, 5, 7 * stride * 2)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    weights = [layer.parametrizations.weight.original1 for layer in upsampler.layers]
    grads = torch.autograd.grad(got.square().sum(), [mel, *weights])
    grads_expected = torch.autograd.grad(expected.square().sum(), [mel, *weights])
    for g, e in zip(grads, grads_expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)

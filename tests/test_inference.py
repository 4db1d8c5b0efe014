"""The inference engine against the plain model: compiled weights, incremental rows, engine."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from variants import ROW_VARIANTS, VARIANTS, tiny_model

from vocoder.audio import load_audio
from vocoder.errors import ConfigError, InputError, VocoderError
from vocoder.features import MelConfig, MelSpectrogram, mel_spectrogram
from vocoder.inference.compile import build_row_flows, prepare_for_inference
from vocoder.inference.cpu import GemmRowInverse
from vocoder.inference.cuda import (
    CapturedRun,
    GraphedRowInverse,
    bucket_width,
    fused_kernels,
    relative_error,
)
from vocoder.inference.denoiser import Denoiser
from vocoder.inference.engine import Synthesizer, make_row_inverse
from vocoder.inference.incremental import IncrementalInverse
from vocoder.inference.longform import NoiseStream
from vocoder.melio import DbNormalization, MeanVarStats, convert_mel
from vocoder.model_source import resolve_model_source
from vocoder.models import ModelConfig, build_model
from vocoder.precision import default_precision


def log_mel(n_mels: int, frames: int, seed: int = 0) -> torch.Tensor:
    """A random mel in a natural-log mel's range (no range warning)."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n_mels, frames, generator=g) * 8 - 9).clamp(max=1.5)


@pytest.fixture(scope="module")
def synthesizers():
    cache = {}

    def get(variant: str, precision: str = "fp32") -> tuple[torch.nn.Module, Synthesizer]:
        if (variant, precision) not in cache:
            model = tiny_model(variant)
            cache[variant, precision] = (
                model,
                Synthesizer.from_model(model, device="cpu", precision=precision),
            )
        return cache[variant, precision]

    return get


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_engine_equals_plain_inverse_for_the_same_noise(variant, synthesizers):
    model, synth = synthesizers(variant)
    c = model.config
    mel = log_mel(c.n_mels, 9)
    length = 9 * c.hop_length
    audio = synth.synthesize(mel, sigma=0.7, seed=11)
    z = 0.7 * NoiseStream(11).take(0, length)
    with torch.no_grad():
        expected = model.inverse(z[None], mel[None])[0]  # training form: uncached embedding
    assert audio.shape == (length,) and audio.dtype == torch.float32
    assert (audio - expected).abs().max().item() < 1e-4
    assert (expected - z).abs().max().item() > 1e-2  # the flows do something


@pytest.mark.parametrize("variant", ROW_VARIANTS)
def test_incremental_rows_equal_plain_inverse(variant):
    model = tiny_model(variant)
    c = model.config
    compiled = prepare_for_inference(model, "fp32", "cpu")
    inverse = IncrementalInverse(compiled.rows)
    g = torch.Generator().manual_seed(3)
    mel = torch.randn(2, c.n_mels, 6, generator=g)
    z = torch.randn(2, 6 * c.hop_length, generator=g)
    with torch.no_grad():
        expected = model.inverse(z, mel)
    audio = inverse(z, compiled.upsample(mel))
    assert (audio - expected).abs().max().item() < 1e-4


def test_z_shorter_than_the_mel_is_allowed_like_the_model(synthesizers):
    model, synth = synthesizers("nanoflow")
    c = model.config
    mel = log_mel(c.n_mels, 5)
    z = torch.randn(3 * c.hop_length + c.n_group)
    with torch.no_grad():
        expected = model.inverse(z[None], mel[None])[0]
    assert (synth.inverse(z, mel) - expected).abs().max().item() < 1e-4
    with pytest.raises(InputError, match="multiple of"):
        synth.inverse(z[:-1], mel)


@pytest.mark.parametrize("variant", ["reference", "appendix"])
def test_cached_biases_equal_the_uncached_embedding_path(variant):
    model = tiny_model("nanoflow-partial-concat", embedding_variant=variant)
    rows = build_row_flows(model.to_inference_form(), torch.float64, torch.device("cpu"))
    indication = model.flow_indication  # training form: embedding table + projections
    C = model.config.channels
    for k, flow in enumerate(rows.flows):
        e = indication.embedding(torch.tensor(k))
        layers = list(model.net.layers) + list(model.top_nets[k].layers)
        for l, (layer, step) in enumerate(zip(layers, flow.layers, strict=True)):
            bias = indication.bias_projections[l](e)
            expected = layer.dilated_conv.bias + layer.cond_conv.bias + bias
            torch.testing.assert_close(step.conv_bias, expected.double(), atol=1e-6, rtol=0)
            if step.res_weight is None:
                continue
            weight = layer.res_skip_conv.weight[:C, :, 0, 0]
            res_bias = layer.res_skip_conv.bias[:C]
            if variant == "appendix":  # exp(delta) on the hidden state: columns
                weight = weight * torch.exp(indication.log_gates[k, l])[None, :]
            else:  # a raw gate on the residual branch: rows, bias included
                gate = indication.residual_gates[k, l]
                weight, res_bias = weight * gate[:, None], res_bias * gate
            torch.testing.assert_close(step.res_weight[:, :, 0], weight.double(), atol=1e-6, rtol=0)
            torch.testing.assert_close(step.res_bias, res_bias.double(), atol=1e-6, rtol=0)
        front = model.net.front.bias + indication.front_projection(e)
        torch.testing.assert_close(flow.front_bias.flatten(), front.double(), atol=1e-6, rtol=0)
    # and the inference form's likelihood equals the training form's
    audio = 0.3 * torch.randn(2, 64)
    mel = torch.randn(2, model.config.n_mels, 4)
    with torch.no_grad():
        torch.testing.assert_close(
            model.to_inference_form().log_prob(audio, mel), model.log_prob(audio, mel)
        )


def test_conditioning_is_projected_once_per_utterance_for_shared_layers():
    compiled = prepare_for_inference(tiny_model("nanoflow"), "fp32", "cpu")
    rows = compiled.rows
    c = rows.config
    assert rows.shared_cond_weight.shape == (c.n_layers * 2 * c.channels, c.n_mels)
    assert all(f.cond_weight is None for f in rows.flows)  # every layer shared by all flows
    assert all(layer.shared for f in rows.flows for layer in f.layers)
    waveflow = prepare_for_inference(tiny_model("waveflow"), "fp32", "cpu").rows
    assert waveflow.shared_cond_weight is None
    assert all(f.cond_weight.shape[0] == c.n_layers * 2 * c.channels for f in waveflow.flows)


@pytest.mark.parametrize("variant", ["nanoflow", "waveflow-rqs", "waveglow"])
def test_padded_batches_equal_single_utterances(variant, synthesizers):
    model, synth = synthesizers(variant)
    n = model.config.n_mels
    mels = [log_mel(n, 11, 1), log_mel(n, 4, 2), log_mel(n, 7, 3)]
    batch = synth.synthesize_batch(mels, seed=[5, 6, 7])
    for mel, seed, audio in zip(mels, [5, 6, 7], batch, strict=True):
        alone = synth.synthesize(mel, seed=seed)
        assert audio.shape == alone.shape == (mel.shape[-1] * model.config.hop_length,)
        assert (audio - alone).abs().max().item() < 1e-5
    stacked = synth.synthesize(torch.stack([mels[0], mels[0]]), seed=5)
    assert stacked.shape == (2, 11 * model.config.hop_length)
    assert (stacked[0] - batch[0]).abs().max().item() < 1e-5
    assert (stacked[1] - stacked[0]).abs().max().item() > 1e-3  # item 1 uses seed 6


def test_cpu_batches_are_grouped_to_fill_one_lane(monkeypatch):
    model = tiny_model("nanoflow")
    c = model.config
    synth = Synthesizer.from_model(model, device="cpu")
    engine = synth._row_inverse
    assert isinstance(engine, GemmRowInverse)
    engine.lane_columns = 24 * c.hop_length // c.n_group  # a lane holds 24 frames
    sizes = []
    original = GemmRowInverse.__call__

    def recording(self, z, cond, lengths=None):
        sizes.append(z.shape[0])
        return original(self, z, cond, lengths)

    monkeypatch.setattr(GemmRowInverse, "__call__", recording)
    frames = [20, 11, 7, 6, 5, 3]  # the longest alone; then 11 + 7 (padded: 22); 6 + 5 + 3
    mels = [log_mel(c.n_mels, n, i) for i, n in enumerate(frames)]
    batch = synth.synthesize_batch(mels, seed=list(range(len(mels))))
    assert sizes == [1, 2, 3]
    sizes.clear()
    for i, (mel, audio) in enumerate(zip(mels, batch, strict=True)):
        assert (audio - synth.synthesize(mel, seed=i)).abs().max().item() < 1e-5
    assert sizes == [1] * len(mels)


def test_a_batch_given_too_few_seeds_or_names_is_a_config_error(synthesizers):
    model, synth = synthesizers("nanoflow")
    mels = [log_mel(model.config.n_mels, 6)] * 2
    with pytest.raises(ConfigError, match="seed: 1 seeds for 2 mels"):
        synth.synthesize_batch(mels, seed=[0])
    with pytest.raises(ConfigError, match="sources: 1 names for 2 mels"):
        synth.synthesize_batch(mels, sources=["a.npy"])
    # a flag in the seed's place was taken as seed 1
    for seed in (True, [0, False], np.bool_(True)):
        with pytest.raises(ConfigError, match="seed must be an integer or a sequence"):
            synth.synthesize_batch(mels, seed=seed)


def test_a_square_mel_is_taken_as_n_mels_by_frames_and_said(synthesizers, caplog):
    """A FastSpeech 2 mel [frames, n_mels] of exactly n_mels frames was synthesized
    transposed without a word (a file's is warned about)."""
    model, synth = synthesizers("nanoflow")
    n = model.config.n_mels
    with caplog.at_level(logging.WARNING, logger="vocoder.inference.inputs"):
        synth.synthesize(log_mel(n, n), seed=0)
        synth.synthesize(log_mel(n, n + 1), seed=0)
    said = [r.getMessage() for r in caplog.records]
    assert said == [f"mel: a square mel [{n}, {n}] is taken as [n_mels, frames]; if it is "
                    "[frames, n_mels], pass it transposed"]  # fmt: skip


def test_seeds_make_synthesis_reproducible(synthesizers):
    model, synth = synthesizers("nanoflow")
    mel = log_mel(model.config.n_mels, 6)
    assert torch.equal(synth.synthesize(mel, seed=1), synth.synthesize(mel, seed=1))
    assert not torch.equal(synth.synthesize(mel, seed=1), synth.synthesize(mel, seed=2))
    torch.manual_seed(0)
    first = synth.synthesize(mel)
    torch.manual_seed(0)
    assert torch.equal(first, synth.synthesize(mel))
    silent = synth.synthesize(mel, sigma=0.0)
    assert torch.equal(silent, synth.synthesize(mel, sigma=0.0, seed=99))  # z = 0


@pytest.mark.parametrize("variant", ["nanoflow", "waveglow"])
def test_bf16_is_close_to_fp32(variant, synthesizers):
    model, fp32 = synthesizers(variant)
    _, bf16 = synthesizers(variant, "bf16")
    mel = log_mel(model.config.n_mels, 12)
    error = relative_error(bf16.synthesize(mel, seed=4), fp32.synthesize(mel, seed=4))
    assert 0 < error < 2e-2


def test_bf16_asked_on_a_cpu_without_bf16_units_is_said_to_be_emulated(monkeypatch, caplog):
    from vocoder.inference import engine

    monkeypatch.setattr(engine, "cpu_bf16_units", lambda: None)
    with caplog.at_level(logging.WARNING):
        Synthesizer.from_model(tiny_model("nanoflow"), device="cpu", precision="bf16")
    assert "bf16 on a CPU without bf16 units runs emulated" in caplog.text
    caplog.clear()
    monkeypatch.setattr(engine, "cpu_bf16_units", lambda: "amx_bf16")
    with caplog.at_level(logging.WARNING):
        Synthesizer.from_model(tiny_model("nanoflow"), device="cpu", precision="bf16")
    assert "emulated" not in caplog.text


def test_fp16_on_the_cpu_is_refused():
    with pytest.raises(ConfigError, match="bf16 or fp32"):
        Synthesizer.from_model(tiny_model("nanoflow"), device="cpu", precision="fp16")


def test_cpu_uses_the_gemm_engine_and_the_plain_one_when_not_fast():
    compiled = prepare_for_inference(tiny_model("nanoflow"), "fp32", "cpu")
    assert type(make_row_inverse(compiled.rows, fast=True)) is GemmRowInverse
    assert type(make_row_inverse(compiled.rows, fast=False)) is IncrementalInverse


@pytest.mark.parametrize(
    ("mel", "problem"),
    [
        (torch.zeros(7, 10), "expected 8 mel bins"),
        (torch.zeros(10, 8), "transposed"),
        (torch.zeros(8, 0), "empty mel"),
        (torch.zeros(0, 8, 5), "empty mel"),
        (torch.zeros(80), "expected a mel"),
        (torch.zeros(1, 1, 8, 5), "expected a mel"),
        (torch.full((8, 5), float("nan")), "40 NaN or infinite"),
        (torch.tensor([[float("inf")] * 3] * 8), "24 NaN or infinite"),
        ("not a mel", "expected a mel tensor"),
        # token ids or codes given by mistake: refused, as a file's mel is (`load_mel`)
        (np.arange(40).reshape(8, 5), "expected floating-point mel values, got int64"),
        (
            torch.zeros(8, 5, dtype=torch.int16),
            "expected floating-point mel values, got torch.int16",
        ),
        (np.zeros((8, 5), dtype=object), "expected floating-point mel values, got object"),
        (torch.zeros(8, 5, dtype=torch.complex64), "expected floating-point mel values"),
    ],
)
def test_bad_mels_raise_input_errors_naming_the_source(mel, problem, synthesizers):
    _, synth = synthesizers("nanoflow")
    with pytest.raises(InputError, match=problem) as info:
        synth.synthesize(mel, source="speaker1/utt3.npy")
    assert info.value.source == "speaker1/utt3.npy"
    assert isinstance(info.value, VocoderError)


def test_a_mel_in_the_other_byte_order_is_read_as_in_this_one(synthesizers):
    """scipy.io, h5py and MATLAB files can hold big-endian arrays; torch takes none."""
    _, synth = synthesizers("nanoflow")
    mel = log_mel(8, 6).numpy()
    swapped = mel.astype(mel.dtype.newbyteorder(">" if mel.dtype.byteorder != ">" else "<"))
    expected = synth.synthesize(mel, seed=1)
    assert torch.equal(synth.synthesize(swapped, seed=1), expected)
    log10 = (mel / np.log(10)).astype(swapped.dtype)
    assert torch.allclose(synth.synthesize(log10, seed=1, mel_format="log10"), expected, atol=1e-5)
    z = np.random.default_rng(0).standard_normal(6 * 16).astype(np.float32)
    assert torch.equal(synth.inverse(z, mel), synth.inverse(torch.from_numpy(z), mel))


def test_a_callers_autocast_and_default_dtype_leave_the_synthesis_as_it_was(synthesizers):
    """A TTS pipeline's bf16 autocast region or float64 default dtype must not change what
    an fp32 synthesizer computes (it changed 1 % of the audio, or every noise sample)."""
    for variant in ("nanoflow", "waveglow"):
        _, synth = synthesizers(variant)
        mel = log_mel(8, 6)
        expected = synth.synthesize(mel, seed=2, denoise=0.1)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(synth.synthesize(mel, seed=2, denoise=0.1), expected)
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            assert torch.equal(synth.synthesize(mel, seed=2, denoise=0.1), expected)
        finally:
            torch.set_default_dtype(default)


def test_bad_options_are_config_errors(synthesizers):
    _, synth = synthesizers("nanoflow")
    mel = log_mel(8, 4)
    for kwargs in (
        dict(sigma=-1.0),
        dict(sigma=float("nan")),
        dict(denoise=-0.1),
        dict(denoise="0.1"),
        # a conversion's settings without its format were ignored: the mel taken as ln
        dict(stats=MeanVarStats(torch.zeros(8), torch.ones(8))),
        dict(db_normalization="symmetric=true"),
        dict(chunk_frames=0),
        # wrong types: each named, where Python's own TypeError named nothing
        dict(sigma=None),
        dict(seed=1.5),
        dict(chunk_frames=2.5),
    ):
        with pytest.raises(ConfigError, match=next(iter(kwargs))):
            synth.synthesize(mel, **kwargs)
    # numpy integers and 0-d tensors are integers and numbers
    same = synth.synthesize(mel, seed=np.int64(3), sigma=torch.tensor(0.8), denoise=np.float32(0))
    assert torch.equal(
        same, synth.synthesize(mel, seed=torch.tensor(3), sigma=0.8, denoise=torch.tensor(0.0))
    )


def test_the_range_warnings_remedy_is_a_keyword_of_synthesize(synthesizers, caplog):
    _, synth = synthesizers("nanoflow")
    mel = log_mel(8, 6)
    mel[:, :2] = np.log(1e-5)  # silence: the clamp's floor, -5 in log10
    log10 = (mel / np.log(10)).numpy()
    with caplog.at_level(logging.WARNING, logger="vocoder.inference.engine"):
        synth.synthesize(log10, seed=0)
    assert any(r.message.endswith("set mel_format=log10") for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vocoder.inference.engine"):
        converted = synth.synthesize(log10, seed=0, mel_format="log10")
        batch = synth.synthesize_batch([log10], seed=0, mel_format="log10")
    assert caplog.records == []  # taken as said: no second warning
    torch.testing.assert_close(converted, synth.synthesize(mel, seed=0))
    assert torch.equal(batch[0], converted)
    # the symmetric dB remedy names db_normalization, a keyword too
    loud = mel.clone()
    loud[:, 3] = 1.0  # a speech peak: the symmetric range's upper part
    symmetric = DbNormalization(symmetric=True).from_ln(loud).clamp(-4, 4).numpy()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vocoder.inference.engine"):
        synth.synthesize(symmetric, seed=0)
    said = "set mel_format=db-normalized, db_normalization=symmetric=true"
    assert any(r.message.endswith(said) for r in caplog.records), caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="vocoder.inference.engine"):
        kwargs = dict(mel_format="db-normalized", db_normalization="symmetric=true", seed=0)
        followed = synth.synthesize(symmetric, **kwargs)
        (batched,) = synth.synthesize_batch([symmetric], **kwargs)
    assert caplog.records == [] and torch.equal(followed, batched)


def test_numpy_mels_and_range_warnings(synthesizers, caplog):
    _, synth = synthesizers("nanoflow")
    normalized = np.random.default_rng(0).uniform(0.0, 1.0, (8, 6)).astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="vocoder.inference.engine"):
        audio = synth.synthesize(normalized, seed=0, source="tts/out.npy")
    assert audio.shape == (6 * 16,)
    assert any("tts/out.npy" in r.message and "db-normalized" in r.message for r in caplog.records)


def test_mel_from_audio_matches_the_feature_extractor(ljspeech_clips):
    wav = sorted((ljspeech_clips / "wavs").glob("*.wav"))[0]
    audio = load_audio(wav, 22050)[:22050]
    torch.manual_seed(0)
    model = build_model(ModelConfig(family="nanoflow", n_flows=2, n_layers=2, channels=8))
    synth = Synthesizer.from_model(model, device="cpu")
    mel = synth.mel_from_audio(audio)
    assert mel.shape == (80, 1 + 22050 // 256)
    torch.testing.assert_close(mel, MelSpectrogram(MelConfig())(audio))
    assert synth.sample_rate == 22050 and synth.mel_config == MelConfig()
    with pytest.raises(InputError, match="empty audio"):
        synth.mel_from_audio(torch.zeros(0))
    # integer PCM (soundfile's dtype="int16", scipy's wavfile) is scaled as soundfile reads it
    pcm = (audio * 2**15).round().clamp(-(2**15), 2**15 - 1).to(torch.int16)
    torch.testing.assert_close(synth.mel_from_audio(pcm.numpy()), synth.mel_from_audio(pcm / 2**15))
    with pytest.raises(InputError, match=r"looks like \[samples, channels\]"):  # soundfile's
        synth.mel_from_audio(torch.stack([audio, audio], 1).numpy())
    with pytest.raises(InputError, match=r"\[-1, 1\] or int16/int32 PCM, got torch.uint8"):
        synth.mel_from_audio(torch.zeros(1000, dtype=torch.uint8))
    # the mel helpers take numpy too, as the Synthesizer does
    torch.testing.assert_close(mel_spectrogram(audio.numpy()), mel)
    torch.testing.assert_close(convert_mel(mel.numpy() / np.log(10), "log10"), mel)


def test_precision_auto_is_what_the_command_line_runs():
    model = build_model(ModelConfig(family="nanoflow", n_flows=2, n_layers=2, channels=8))
    synth = Synthesizer.from_model(model, device="cpu", precision="auto")
    assert synth.precision == default_precision(torch.device("cpu"))


def test_denoiser_removes_a_stationary_tone_and_strength_zero_is_identity():
    sr, n = 22050, 22050
    t = torch.arange(n, dtype=torch.float64) / sr
    # sample_rate / 16, WaveFlow's artifact; a cosine, so frame 0 (reflect-padded) sees it whole
    tone = 0.1 * torch.cos(2 * torch.pi * 1378.125 * t)
    g = torch.Generator().manual_seed(0)
    speech = 0.1 * torch.randn(n, generator=g, dtype=torch.float64)
    kernel = torch.ones(1, 1, 8, dtype=torch.float64) / 8
    speech = torch.nn.functional.conv1d(speech[None, None], kernel, padding=4)[0, 0, :n]
    denoiser = Denoiser(tone.float()[:4096])
    noisy = (speech + tone).float()
    assert torch.equal(denoiser(noisy, 0.0), noisy)
    cleaned = denoiser(noisy, 1.0)
    assert cleaned.shape == noisy.shape and cleaned.dtype == noisy.dtype

    def tone_level(x: torch.Tensor) -> float:
        window = torch.hann_window(1024, dtype=torch.float64)
        spec = torch.stft(x.double(), 1024, 256, window=window, return_complex=True)
        return spec.abs()[64].mean().item()  # 1378.125 Hz is bin 64 of a 1024-point FFT

    assert tone_level(cleaned) < 0.2 * tone_level(noisy)
    assert denoiser(noisy[:100], 0.5).shape == (100,)  # shorter than the FFT


def test_denoiser_takes_bias_audio_shorter_than_half_an_fft():
    denoiser = Denoiser(torch.randn(300), n_fft=1024, hop_length=4, win_length=1024)
    assert denoiser.bias.shape == (513, 1) and torch.isfinite(denoiser.bias).all()


def test_engine_denoises_at_a_hop_whose_88_bias_frames_are_shorter_than_the_fft():
    """hop 4: NVIDIA's 88-frame zero mel is 352 samples, under half the 1024-point FFT; the
    engine synthesizes more frames so that the first STFT frame is all model output."""
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            family="waveflow", n_flows=2, n_layers=2, n_group=4, channels=8, n_mels=8, hop_length=4
        )
    )
    config = MelConfig(sample_rate=22050, hop_length=4, n_mels=8, n_fft=1024, win_length=1024)
    synth = Synthesizer.from_model(model.eval(), config, device="cpu", precision="fp32")
    mel = log_mel(8, 50)
    cleaned = synth.synthesize(mel, seed=0, denoise=0.05)
    assert cleaned.shape == (200,) and torch.isfinite(cleaned).all()
    assert synth._get_denoiser().bias.shape == (513, 1)


def test_engine_denoise_runs_and_keeps_length(synthesizers):
    model, synth = synthesizers("waveflow")
    mel = log_mel(model.config.n_mels, 70)
    plain = synth.synthesize(mel, seed=0)
    cleaned = synth.synthesize(mel, seed=0, denoise=0.1)
    assert cleaned.shape == plain.shape and torch.isfinite(cleaned).all()
    assert 0 < (cleaned - plain).abs().max().item()
    assert cleaned.norm() < plain.norm()


def test_export_round_trip(tmp_path, synthesizers):
    from vocoder.checkpoint import export_model, load_model
    from vocoder.inference.export import export_inference_model

    model, synth = synthesizers("nanoflow-rqs")
    mel_config = MelConfig(sample_rate=22050, hop_length=16, n_mels=8)
    export_model(model, mel_config, tmp_path / "train-form")
    weights, meta = export_inference_model(tmp_path / "train-form.safetensors", tmp_path / "inf")
    loaded, info = load_model(weights)
    assert info.form == "inference" and loaded.inference_form
    assert info.metadata["parameters"] == synth.parameter_count == loaded.parameter_count()
    again = Synthesizer.load(weights, device="cpu")
    assert again.name == "inf" and again.mel_config == mel_config
    mel = log_mel(8, 7)
    assert (again.synthesize(mel, seed=3) - synth.synthesize(mel, seed=3)).abs().max() < 1e-5
    half, _ = export_inference_model(weights, tmp_path / "half", precision="fp16")
    assert half.stat().st_size < 0.75 * weights.stat().st_size
    close = Synthesizer.load(half, device="cpu").synthesize(mel, seed=3)
    assert relative_error(close, synth.synthesize(mel, seed=3)) < 1e-2
    with pytest.raises(InputError, match="already exists"):
        export_inference_model(tmp_path / "train-form.safetensors", tmp_path / "inf")
    with pytest.raises(InputError, match="is a file this model is made from"):
        export_inference_model(weights, tmp_path / "inf", overwrite=True)


def test_model_source_resolution(tmp_path):
    existing = tmp_path / "m.safetensors"
    existing.write_bytes(b"x")
    assert resolve_model_source(existing) == existing
    with pytest.raises(InputError, match=r"missing\.safetensors: no such file"):
        resolve_model_source(tmp_path / "missing.safetensors")


class EagerReplay(GraphedRowInverse):
    """Graph capture needs a GPU. This stand-in "replays" by rerunning the captured function
    on the same static buffers, which is what a CUDA graph replay does; everything around
    it (buckets, static inputs, masks, the graph cache, verification) is the real code."""

    def _capture(self, batch, width):
        z, cond, keep, buffers = self.static_inputs(batch, width)
        return CapturedRun(z, cond, keep, buffers, lambda: self.inverse.run(buffers, z, cond, keep))


def test_bucket_widths():
    assert [bucket_width(w) for w in (1, 64, 65, 300, 1378, 13782)] == [
        64,
        64,
        128,
        320,
        1408,
        14336,
    ]
    assert all(bucket_width(w) - w <= max(63, w // 8) for w in range(1, 5000, 7))
    assert all(bucket_width(w) % 64 == 0 for w in range(1, 5000, 7))  # aligned slices


def test_graph_replay_bookkeeping_is_exact():
    model = tiny_model("nanoflow-rqs")
    compiled = prepare_for_inference(model, "fp32", "cpu")
    runner = EagerReplay(compiled.rows, fuse=False, max_graphs=2)
    g = torch.Generator().manual_seed(0)
    # first a padded batch (lengths 5 and 7 frames): verification sees real samples only
    mel = torch.randn(2, 8, 7, generator=g)
    z = torch.randn(2, 7 * 16, generator=g)
    z[1, 80:] = 1e4  # whatever lies beyond item 1's length must not matter
    with torch.no_grad():
        short = model.inverse(z[1:, :80], mel[1:, :, :5])
    # each item is upsampled alone (the upsampler looks a frame ahead), then padded
    cond = compiled.upsample(mel)
    cond[1] = torch.nn.functional.pad(compiled.upsample(mel[1:, :, :5])[0], (0, 32))
    audio = runner(z, cond, [112, 80])
    assert runner.verified and not runner.disabled
    assert (audio[1, :80] - short[0]).abs().max().item() < 1e-4
    for frames, batch in [(7, 1), (9, 1), (13, 1), (30, 1)]:
        mel = torch.randn(batch, 8, frames, generator=g)
        z = torch.randn(batch, frames * 16, generator=g)
        with torch.no_grad():
            expected = model.inverse(z, mel)
        assert (runner(z, compiled.upsample(mel)) - expected).abs().max().item() < 1e-4
    assert runner.verified and not runner.disabled
    # widths 28, 36, 52 shared one 64-column graph; (1, 128) evicted the batch-2 one
    assert list(runner.graphs) == [(1, 64), (1, 128)]


@pytest.mark.parametrize("variant", ["nanoflow-rqs", "waveflow"])
def test_fused_step_kernels_compile_whole_for_any_shape_and_match_the_plain_ones(variant):
    """The CUDA path compiles the step's elementwise work with fullgraph=True, where a host
    sync or graph break (say, an `.item()` in the spline) fails, and so does a code object
    compiled for more than 8 shapes or dtypes: a runner captures a graph per (batch,
    width bucket). "aot_eager" traces them the same way on the CPU, without generating
    kernels."""
    compiled = prepare_for_inference(tiny_model(variant), "fp32", "cpu")
    rows = compiled.rows
    plain = IncrementalInverse(rows)
    fused = IncrementalInverse(rows, fused_kernels(rows.elementwise, backend="aot_eager"))
    g = torch.Generator().manual_seed(1)
    shapes = [(1, 3), (2, 6), (1, 5), (3, 4), (2, 9), (1, 8), (4, 2), (1, 10), (2, 3), (5, 7)]
    for batch, frames in shapes:  # 10 shapes for one set of fused kernels
        mel = torch.randn(batch, 8, frames, generator=g)
        z = torch.randn(batch, frames * 16, generator=g)
        lengths = [frames * 16] * batch
        lengths[-1] -= 16 * (batch > 1)  # padded batches: the masked residual
        cond = compiled.upsample(mel)
        audio, expected = fused(z, cond, lengths), plain(z, cond, lengths)
        for a, e, n in zip(audio, expected, lengths, strict=True):
            assert (a[:n] - e[:n]).abs().max().item() < 1e-5


def test_graph_path_falls_back_to_the_eager_engine(caplog):
    model = tiny_model("waveflow")
    compiled = prepare_for_inference(model, "fp32", "cpu")
    mel, z = torch.randn(1, 8, 6), torch.randn(1, 96)
    with torch.no_grad():
        expected = model.inverse(z, mel)

    class BrokenReplay(EagerReplay):
        def _capture(self, batch, width):
            run = super()._capture(batch, width)
            return CapturedRun(run.z, run.cond, run.keep, run.buffers, lambda: None)

    for runner in (
        GraphedRowInverse(compiled.rows, fuse=False),
        BrokenReplay(compiled.rows, fuse=False),
    ):
        with caplog.at_level(logging.WARNING, logger="vocoder.inference.cuda"):
            audio = runner(z, compiled.upsample(mel))
        assert runner.disabled and (audio - expected).abs().max().item() < 1e-4
    assert any("eager incremental path" in r.message for r in caplog.records)

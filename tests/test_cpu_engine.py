"""The CPU fast path (`GemmRowInverse`) against the conv1d engine and the model, and the
default CPU precision."""

from __future__ import annotations

import math

import pytest
import torch
from variants import tiny_model

from vocoder.features import MelConfig, MelSpectrogram
from vocoder.inference.compile import prepare_for_inference
from vocoder.inference.cpu import GemmRowInverse, onednn_prepack, pack_lanes
from vocoder.inference.engine import make_row_inverse
from vocoder.inference.incremental import IncrementalInverse
from vocoder.metrics import log_mel_l1
from vocoder.precision import cpu_bf16_units, default_precision, onednn_bf16

# the row variants the GEMM path runs, with a third layer (a third dilation)
CPU_VARIANTS = (
    "waveflow",
    "waveflow-rqs",
    "waveflow-bipartized",
    "nanoflow",
    "nanoflow-appendix",
    "nanoflow-partial-concat",
)
# bf16 against fp32 from the same noise on the tiny models (measured: 56.6 to 59.4 dB, log-mel
# L1 0.0007 to 0.0011); bench/cpu_engine.py reports the published shapes (README)
BF16_MIN_SNR_DB = 45.0
BF16_MAX_LOG_MEL_L1 = 0.005


def inputs(config, batch: int, frames: int, seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    mel = torch.randn(batch, config.n_mels, frames, generator=g)
    z = torch.randn(batch, frames * config.hop_length, generator=g)
    return mel, z


@pytest.mark.parametrize("variant", CPU_VARIANTS)
def test_gemm_rows_equal_the_conv_engine_and_the_model_in_fp32(variant):
    model = tiny_model(variant, n_layers=3)
    compiled = prepare_for_inference(model, "fp32", "cpu")
    mel, z = inputs(model.config, 2, 7)
    cond = compiled.upsample(mel)
    fast = GemmRowInverse(compiled.rows)(z, cond)
    assert (fast - IncrementalInverse(compiled.rows)(z, cond)).abs().max().item() < 1e-5
    with torch.no_grad():
        expected = model.inverse(z, mel)
    assert (fast - expected).abs().max().item() < 1e-4
    assert (expected - z).abs().max().item() > 1e-2  # the flows do something


def test_dilations_wider_than_the_signal_see_only_zero_padding():
    model = tiny_model("nanoflow", n_layers=6)  # dilations up to 32
    compiled = prepare_for_inference(model, "fp32", "cpu")
    mel, z = inputs(model.config, 1, 2)
    cond = compiled.upsample(mel)
    width = z.shape[1] // model.config.n_group
    assert compiled.rows.flows[0].layers[-1].dilation > width
    fast = GemmRowInverse(compiled.rows)(z, cond)
    assert (fast - IncrementalInverse(compiled.rows)(z, cond)).abs().max().item() < 1e-5


def test_lanes_hold_items_end_to_end_up_to_the_limit():
    # items of 5, 3, 10, 2 and 30 columns, 2 apart, lanes of at most 12 columns
    assert pack_lanes([5, 3, 10, 2, 30], gap=2, limit=12) == [
        [(0, 0), (1, 7)],
        [(2, 0)],
        [(3, 0)],
        [(4, 0)],  # wider than a lane: alone
    ]
    assert pack_lanes([4, 4, 4], gap=0, limit=12) == [[(0, 0), (1, 4), (2, 8)]]


@pytest.mark.parametrize("variant", ["waveflow", "nanoflow"])
@pytest.mark.parametrize("lane_columns", [None, 40])
def test_batched_items_equal_single_items(variant, lane_columns):
    model = tiny_model(variant, n_layers=3)
    compiled = prepare_for_inference(model, "fp32", "cpu")
    inverse = GemmRowInverse(compiled.rows, lane_columns=lane_columns)
    mel, z = inputs(model.config, 4, 9)
    hop, h = model.config.hop_length, model.config.n_group
    lengths = [9 * hop, 5 * hop, 2 * hop, 4 * hop]
    lanes = pack_lanes([n // h for n in lengths], inverse.gap, inverse.lane_columns)
    assert len(lanes) == (1 if lane_columns is None else 3)  # 36, 20 + 8, 16 columns
    for i, n in enumerate(lengths):  # what lies beyond an item must not matter
        z[i, n:] = 1e3
    cond = compiled.upsample(mel)
    batched = inverse(z, cond, lengths)
    for i, n in enumerate(lengths):
        alone = inverse(z[i : i + 1, :n], cond[i : i + 1, :, :n])
        assert (batched[i, :n] - alone[0]).abs().max().item() < 1e-5
        assert not batched[i, n:].any()


@pytest.mark.skipif(not onednn_bf16(), reason="this CPU's oneDNN does not run bf16 natively")
def test_prepacked_onednn_weights_give_the_plain_gemms_result():
    model = tiny_model("nanoflow", n_layers=3)
    compiled = prepare_for_inference(model, "bf16", "cpu")
    plain = GemmRowInverse(compiled.rows, prepack=False)
    prepacked = GemmRowInverse(compiled.rows, prepack=True)
    assert all(layer.prepacked is not None for flow in prepacked.packed for layer in flow.layers)
    mel, z = inputs(model.config, 3, 9)
    hop = model.config.hop_length
    cond = compiled.upsample(mel)
    for lengths in (None, [9 * hop, 5 * hop, 2 * hop]):  # one GEMM per item, then stacked
        expected = plain(z, cond, lengths)
        got = prepacked(z, cond, lengths)
        for i, n in enumerate(lengths or [z.shape[1]] * 3):
            err = (got[i, :n] - expected[i, :n]).pow(2).sum() / expected[i, :n].pow(2).sum()
            assert err.item() < 1e-5  # the same bf16 products, summed by the same library
    alone = prepacked(z[:1], cond[:1])[0]
    assert (alone - prepacked(z, cond)[0]).abs().max().item() < 1e-3


def test_fp32_runs_on_prepacked_weights_by_default_to_float_rounding():
    """In fp32 the GEMMs run on oneDNN-prepacked weights at every width (1.4-1.8x on Zen 4:
    bench/cpu_engine.py); the audio stays the conv path's to float rounding."""
    model = tiny_model("nanoflow", n_layers=3)
    compiled = prepare_for_inference(model, "fp32", "cpu")
    engine = GemmRowInverse(compiled.rows)
    if onednn_prepack(torch.zeros(4, 4)) is None:  # a build without the ops: plain GEMMs
        assert all(layer.prepacked is None for flow in engine.packed for layer in flow.layers)
        return
    assert all(layer.prepacked is not None for flow in engine.packed for layer in flow.layers)
    mel, z = inputs(model.config, 2, 9)
    cond = compiled.upsample(mel)
    expected = IncrementalInverse(compiled.rows)(z, cond)
    assert (engine(z, cond) - expected).abs().max().item() < 1e-5


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_cpu_fast_path_is_the_gemm_engine_and_fast_false_the_conv_one(precision):
    rows = prepare_for_inference(tiny_model("nanoflow", n_layers=3), precision, "cpu").rows
    assert type(make_row_inverse(rows, fast=True)) is GemmRowInverse
    assert type(make_row_inverse(rows, fast=False)) is IncrementalInverse


@pytest.mark.parametrize("variant", ["waveflow", "nanoflow"])
def test_bf16_output_is_within_the_documented_bound_of_fp32(variant):
    model = tiny_model(variant, n_layers=3)
    c = model.config
    mel, z = inputs(c, 1, 40)
    audio = {}
    for precision in ("fp32", "bf16"):
        compiled = prepare_for_inference(model, precision, "cpu")
        engine = GemmRowInverse if precision == "bf16" else IncrementalInverse
        audio[precision] = engine(compiled.rows)(0.8 * z, compiled.upsample(mel))[0]
    ref, test = audio["fp32"], audio["bf16"]  # against the exact conv1d path
    assert not torch.equal(ref, test)  # bf16 really ran
    snr = 10 * math.log10(ref.double().pow(2).sum() / (ref - test).double().pow(2).sum())
    mels = MelSpectrogram(
        MelConfig(
            sample_rate=c.sample_rate,
            hop_length=c.hop_length,
            n_mels=c.n_mels,
            n_fft=64,
            win_length=64,
        )
    )
    l1 = log_mel_l1(mels(ref[None]), mels(test[None]))
    assert snr >= BF16_MIN_SNR_DB
    assert l1 <= BF16_MAX_LOG_MEL_L1


@pytest.mark.parametrize(
    ("flags", "units"),
    [
        ("fpu sse avx2 avx512f avx512_bf16 avx512_vnni", "avx512_bf16"),
        ("fpu avx512f avx512_bf16 amx_bf16 amx_tile", "amx_bf16"),
        ("fpu sse avx2 avx512f avx512bw", None),
    ],
)
def test_bf16_units_are_read_from_the_cpu_flags(tmp_path, flags, units):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    assert cpu_bf16_units(cpuinfo) == units


def test_missing_cpuinfo_means_no_bf16_units_and_gpus_default_to_fp32(tmp_path):
    assert cpu_bf16_units(tmp_path / "absent") is None
    assert default_precision(torch.device("cuda")) == "fp32"
    expected = "bf16" if cpu_bf16_units() and onednn_bf16() else "fp32"
    assert default_precision(torch.device("cpu")) == expected

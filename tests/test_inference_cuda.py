"""The CUDA fast path (graph-captured incremental rows) against the plain inverse.

Every test here needs a CUDA GPU; without one they are skipped (see conftest).
"""

from __future__ import annotations

import functools
import time

import pytest
import torch

from vocoder.inference.cuda import GraphedRowInverse, bucket_width, relative_error
from vocoder.inference.engine import Synthesizer
from vocoder.inference.longform import receptive_context
from vocoder.models import ModelConfig, build_model, load_model_preset

pytestmark = pytest.mark.cuda

SMALL = dict(n_flows=4, n_layers=4, n_group=16, channels=32, n_mels=80, hop_length=256)
VARIANTS = {
    "waveflow": dict(SMALL, family="waveflow"),
    "waveflow-rqs": dict(SMALL, family="waveflow", coupling="rqs", spline_bins=16),
    "nanoflow": dict(SMALL, family="nanoflow", embedding_dim=32),
    "nanoflow-partial-concat": dict(
        SMALL, family="nanoflow", shared_layers=2, concat_embedding=True, embedding_dim=32
    ),
    "waveglow": dict(SMALL, family="waveglow", n_group=8, n_early_every=2),
}
TOLERANCE = {"fp32": 1e-3, "bf16": 1e-2, "fp16": 1e-2}


def has_triton() -> bool:
    """Whether torch.compile can generate GPU kernels here (else the fused path falls back)."""
    try:
        from torch.utils._triton import has_triton as available
    except ImportError:
        return False
    return available()


def small_model(variant: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**VARIANTS[variant]))
    with torch.no_grad():
        for projection in model.projections:
            projection.weight.normal_(0.0, 0.02)
            projection.bias.normal_(0.0, 0.02)
        indication = getattr(model, "flow_indication", None)
        if indication is not None:
            indication.log_gates.normal_(0.0, 0.1)
    return model.eval()


def inputs(frames: int, batch: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mel = torch.rand(batch, 80, frames, generator=g) * 8 - 9
    z = 0.8 * torch.randn(batch, frames * 256, generator=g)
    return mel, z


@functools.cache
def plain_inverse(variant: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mel, z, audio) of the plain inverse, float32 on the CPU: seconds on one thread, so
    computed once for all precisions."""
    mel, z = inputs(30, batch=2)
    with torch.no_grad():
        return mel, z, small_model(variant).inverse(z, mel)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fast_path_matches_the_plain_inverse(variant, precision):
    model = small_model(variant)
    mel, z, expected = plain_inverse(variant)
    synth = Synthesizer.from_model(model, device="cuda", precision=precision)
    audio = synth.inverse(z, mel)
    assert relative_error(audio, expected) < TOLERANCE[precision]
    if "glow" not in variant:
        runner = synth._row_inverse
        assert isinstance(runner, GraphedRowInverse)
        assert runner.verified and not runner.disabled and len(runner.graphs) == 1
        # the fused kernels were captured, not the plain-kernel fallback
        assert runner.fuse == has_triton()


def test_graphs_are_reused_across_lengths_in_a_bucket_and_batches_are_exact():
    model = small_model("nanoflow")
    synth = Synthesizer.from_model(model, device="cuda")
    mels = [inputs(frames, seed=frames)[0][0] for frames in (40, 38, 37)]
    # 640, 608 and 592 columns (hop 256 / h 16 = 16 per frame) share the 640 bucket
    assert {bucket_width(m.shape[-1] * 16) for m in mels} == {640}
    single = [synth.synthesize(m, seed=i) for i, m in enumerate(mels)]
    runner = synth._row_inverse
    assert len(runner.graphs) == 1  # one (batch 1, bucket) graph served all three lengths
    # a replay (not the first, checked run) took in its new inputs
    eager = Synthesizer.from_model(model, device="cuda", fast=False)
    assert relative_error(single[2], eager.synthesize(mels[2], seed=2)) < 1e-4
    batch = synth.synthesize_batch(mels, seed=[0, 1, 2])
    for a, b in zip(batch, single, strict=True):
        assert a.shape == b.shape and relative_error(a, b) < 1e-4


def test_unfused_graphs_and_the_eager_path_agree():
    model = small_model("waveflow-rqs")
    mel, z = inputs(20)
    with torch.no_grad():
        expected = model.inverse(z, mel)
    compiled = Synthesizer.from_model(model, device="cuda").compiled
    cond = compiled.upsample(mel)
    plain = GraphedRowInverse(compiled.rows, fuse=False)
    assert relative_error(plain(z, cond).cpu(), expected) < 1e-3
    assert not plain.disabled and plain.graphs
    eager = Synthesizer.from_model(model, device="cuda", fast=False)
    assert relative_error(eager.inverse(z, mel), expected) < 1e-3


def test_long_form_on_the_gpu_matches_unchunked():
    synth = Synthesizer.from_model(small_model("nanoflow"), device="cuda")
    # the exact context: chunked then equals unchunked up to rounding (windows of unequal
    # length are batched, so this also checks the graphs' column masks)
    synth.context = receptive_context(synth.model_config, exact=True)
    mel = inputs(600)[0][0]
    whole = synth.synthesize(mel, seed=3)
    chunked = synth.synthesize(mel, seed=3, chunk_frames=200)
    assert relative_error(chunked, whole) < 1e-3


def test_fast_path_beats_the_eager_engine_on_nanoflow_r128():
    config = load_model_preset("nanoflow-h16-r128")
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():
        for projection in model.projections:
            projection.weight.normal_(0.0, 1e-3)
    mel = inputs(87)[0][0]  # 1 s

    def timed(synth: Synthesizer) -> float:
        synth.synthesize(mel, seed=0)  # capture / warm up
        torch.cuda.synchronize()
        start = time.perf_counter()
        synth.synthesize(mel, seed=0)
        torch.cuda.synchronize()
        return time.perf_counter() - start

    fast = timed(Synthesizer.from_model(model, device="cuda", precision="bf16"))
    eager = timed(Synthesizer.from_model(model, device="cuda", precision="bf16", fast=False))
    assert fast < eager

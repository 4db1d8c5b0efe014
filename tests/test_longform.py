"""Long utterances: seeded noise by sample range, window plans, chunked == unchunked."""

from __future__ import annotations

import pytest
import torch

from vocoder.inference.engine import Synthesizer
from vocoder.inference.longform import (
    NoiseStream,
    join_windows,
    plan_windows,
    receptive_context,
)
from vocoder.models import ModelConfig, build_model, load_model_preset
from vocoder.models.base import network_reach

TINY = dict(n_flows=3, n_layers=2, n_group=4, channels=8, n_mels=8, hop_length=16)


def tiny_synthesizer(**changes) -> Synthesizer:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**TINY, **changes}))
    with torch.no_grad():
        for projection in model.projections:
            projection.weight.normal_(0.0, 0.3)
            projection.bias.normal_(0.0, 0.1)
    return Synthesizer.from_model(model.eval(), device="cpu")


def log_mel(frames: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(8, frames, generator=g) * 8 - 9


def test_noise_is_the_same_however_it_is_cut():
    stream = NoiseStream(7, block=100)
    whole = stream.take(0, 1000)
    pieces = torch.cat(
        [NoiseStream(7, block=100).take(a, b) for a, b in [(0, 37), (37, 450), (450, 1000)]]
    )
    assert torch.equal(whole, pieces)
    assert torch.equal(NoiseStream(7, block=100).take(250, 260), whole[250:260])
    assert not torch.equal(NoiseStream(8, block=100).take(0, 1000), whole)
    assert abs(whole.std().item() - 1) < 0.1 and stream.take(5, 5).numel() == 0


@pytest.mark.parametrize(("frames", "chunk"), [(100, 30), (100, 25), (101, 40), (64, 64), (9, 4)])
def test_windows_tile_the_utterance_and_crossfades_add_to_one(frames, chunk):
    hop = 16
    windows, crossfade = plan_windows(frames, hop, chunk, context=40, crossfade=48)
    assert windows[0].first and windows[-1].last and windows[-1].keep[1] == frames * hop
    for w in windows:
        assert 0 <= w.mel[0] <= w.frames[0] < w.frames[1] <= w.mel[1] <= frames
        assert w.frames[0] * hop <= w.keep[0] < w.keep[1] <= w.frames[1] * hop
        if not w.first:  # the kept part has the full context before it...
            assert w.keep[0] - w.frames[0] * hop >= 40 or w.frames[0] == 0
        if not w.last:  # ...and after it
            assert w.frames[1] * hop - w.keep[1] >= 40 or w.frames[1] == frames
    for left, right in zip(windows, windows[1:], strict=False):
        assert left.keep[1] - right.keep[0] == crossfade
    ones = [torch.ones((w.frames[1] - w.frames[0]) * hop) for w in windows]
    torch.testing.assert_close(
        join_windows(windows, ones, crossfade, hop), torch.ones(frames * hop)
    )


def test_receptive_context_of_the_reference_configs():
    waveflow = load_model_preset("waveflow-h16-r128")
    assert receptive_context(waveflow) == 8 * 255 * 16  # 1.48 s each side
    assert receptive_context(waveflow, exact=True) == (8 * 15 + 1) * 255 * 16
    waveglow = load_model_preset("waveglow")
    assert receptive_context(waveglow) == receptive_context(waveglow, exact=True) == 12 * 255 * 8


@pytest.mark.parametrize(
    "changes",
    [dict(family="nanoflow"), dict(family="waveflow", coupling="rqs", spline_bins=8)],
)
def test_chunked_equals_unchunked_with_the_full_receptive_field(changes):
    synth = tiny_synthesizer(**changes)
    synth.context = receptive_context(synth.model_config, exact=True)
    synth.crossfade = 32
    mel = log_mel(150)
    whole = synth.synthesize(mel, seed=3)
    for chunk in (20, 37, 64):
        chunked = synth.synthesize(mel, seed=3, chunk_frames=chunk)
        assert chunked.shape == whole.shape == (150 * 16,)
        assert (chunked - whole).abs().max().item() < 1e-5
    # the test can fail: without context the joins are wrong
    synth.context = 0
    assert (synth.synthesize(mel, seed=3, chunk_frames=20) - whole).abs().max().item() > 1e-3


def test_the_exact_context_counts_the_first_rows_reach():
    """Row 0 of the first flow inverted reaches r columns (its parameters see the
    conditioning and biases), so the exact context is (n_flows * (h - 1) + 1) * r columns:
    one r short, the join differs where that dependence is strong (large biases, h = 2)."""
    torch.manual_seed(2)
    model = build_model(ModelConfig(**{**TINY, "n_flows": 1, "n_layers": 3, "n_group": 2}))
    with torch.no_grad():
        for projection in model.projections:
            projection.weight.normal_(0.0, 0.5)
            projection.bias.normal_(0.0, 0.5)
    synth = Synthesizer.from_model(model.eval(), device="cpu")
    synth.crossfade = 2
    exact = receptive_context(synth.model_config, exact=True)
    assert exact == 2 * network_reach(synth.model_config) * 2
    mel = log_mel(150)
    whole = synth.synthesize(mel, seed=3)

    def worst_join(context: int) -> float:
        synth.context = context
        return max(
            (synth.synthesize(mel, seed=3, chunk_frames=chunk) - whole).abs().max().item()
            for chunk in (20, 37, 64)
        )

    assert worst_join(exact) < 1e-5
    assert worst_join(exact - network_reach(synth.model_config) * 2) > 1e-3


def test_glow_chunked_equals_unchunked():
    synth = tiny_synthesizer(family="waveglow", n_flows=4, n_group=8, n_early_every=2)
    synth.crossfade = 32
    mel = log_mel(120, 1)
    whole = synth.synthesize(mel, seed=1)
    assert (synth.synthesize(mel, seed=1, chunk_frames=30) - whole).abs().max().item() < 1e-5


def test_memory_budget_chunks_long_mels_automatically():
    synth = tiny_synthesizer(family="nanoflow")
    synth.context = receptive_context(synth.model_config, exact=True)
    mel = log_mel(400, 2)
    whole = synth.synthesize(mel, seed=9)
    per_sample = synth._bytes_per_sample()
    synth.memory_budget = per_sample * 100 * 16  # room for about 100 frames
    chunk = synth._auto_chunk_frames(400)
    assert chunk is not None and chunk < 400
    assert synth._auto_chunk_frames(50) is None
    assert (synth.synthesize(mel, seed=9) - whole).abs().max().item() < 1e-5

"""Parameter counts of the shipped configs against the published figures (run with -s).

Counts are of the inference form: weight norm folded, NanoFlow's embedding biases and gates
cached (the W^l projections and the embedding table dropped), as the paper quotes them.

Why ours differ:
- WaveFlow/NanoFlow (about -0.6 %): the reference code gives the last layer of the 2-D
  WaveNet a full C -> 2C residual/skip conv whose residual half is never used (C^2 + C per
  network: 0.132 M in WaveFlow-r128, 0.033 M in r64, 0.017 M in NanoFlow). We leave it out,
  as WaveGlow's WN does; everything else matches the back-of-envelope count exactly.
- NanoFlow + RQ-NSF: 2.915 in the paper; ours is 2.898 + the same missing 0.017 M = 2.915.
- WaveGlow (-0.2 %): the 87.9 M of the paper is NVIDIA's model with weight norm on (our
  training-form count is 87.879 M); folded it is 87.732 M.
"""

from __future__ import annotations

import pytest

from vocoder.models import build_model, list_model_presets, load_model_preset

PAPER_M = {
    "waveflow-h16-r64": 5.925,
    "waveflow-h16-r128": 22.336,
    "nanoflow-naive-h16-r128": 2.792,
    "nanoflow-decomp-h16-r128": 2.794,
    "nanoflow-h16-r128": 2.818,
    "waveflow-rqs-h16-r128": 22.432,
    "nanoflow-rqs-h16-r128": 2.915,
    "waveglow": 87.9,
}


@pytest.fixture(scope="module")
def counts() -> dict[str, tuple[int, int]]:
    """Every shipped preset built once: name -> (training-form, inference-form) count."""
    result = {}
    for name in list_model_presets():
        model = build_model(load_model_preset(name))
        result[name] = (model.parameter_count(), model.parameter_count(inference_form=True))
        del model
    return result


def test_every_shipped_config_builds_and_is_in_the_table(counts):
    assert set(PAPER_M) <= set(counts)
    assert "nanoflow-glow" in counts
    assert all(inference > 0 for _, inference in counts.values())


def test_parameter_counts_match_the_paper(counts):
    print(f"\n{'model':<26}{'ours (M)':>10}{'paper (M)':>11}{'diff':>9}{'training (M)':>14}")
    for name, (training, inference) in counts.items():
        paper = PAPER_M.get(name)
        diff = "" if paper is None else f"{100 * (inference / 1e6 - paper) / paper:+.2f}%"
        paper_text = "" if paper is None else f"{paper:.3f}"
        print(f"{name:<26}{inference / 1e6:>10.3f}{paper_text:>11}{diff:>9}{training / 1e6:>14.3f}")
    for name, paper in PAPER_M.items():
        ours = counts[name][1] / 1e6
        assert abs(ours - paper) <= 0.01 * paper, f"{name}: {ours:.3f} M vs {paper} M"


def test_exact_counts_from_the_back_of_envelope_formula(counts):
    """Per layer (9*C*2C + 2C) + (80*2C + 2C) + res/skip; front 2C; projection; upsampler."""

    def wavenet(c: int) -> int:
        layers = 8 * (9 * c * 2 * c + 2 * c) + 8 * (80 * 2 * c + 2 * c)
        res_skip = 7 * (c * 2 * c + 2 * c) + (c * c + c)
        return layers + res_skip + 2 * c

    upsampler = 2 * (96 + 1)
    assert counts["waveflow-h16-r64"][1] == 8 * (wavenet(64) + 64 * 2 + 2) + upsampler
    assert counts["waveflow-h16-r128"][1] == 8 * (wavenet(128) + 128 * 2 + 2) + upsampler
    assert counts["nanoflow-naive-h16-r128"][1] == wavenet(128) + 258 + upsampler
    assert counts["nanoflow-decomp-h16-r128"][1] == wavenet(128) + 8 * 258 + upsampler
    embedding = 8 * 8 * (2 * 128 + 128)
    assert counts["nanoflow-h16-r128"][1] == wavenet(128) + 8 * 258 + upsampler + embedding
    rqs = 128 * 95 + 95
    assert counts["nanoflow-rqs-h16-r128"][1] == wavenet(128) + 8 * rqs + upsampler + embedding
    assert counts["waveflow-rqs-h16-r128"][1] == 8 * (wavenet(128) + rqs) + upsampler


def test_exact_waveglow_count(counts):
    """NVIDIA's WaveGlow, flow by flow: invertible conv, WN over half of w channels, end conv."""

    def flow(w: int, c: int = 256, cond: int = 80 * 8) -> int:
        start = (w // 2) * c + c
        layers = 8 * (3 * c * 2 * c + 2 * c) + 8 * (cond * 2 * c + 2 * c)
        res_skip = 7 * (c * 2 * c + 2 * c) + (c * c + c)
        end = c * w + w  # log_s and t for the w - w/2 transformed channels
        return w * w + start + layers + res_skip + end

    upsampler = 80 * 80 * 1024 + 80  # ConvTranspose1d(80, 80, 1024, stride 256)
    expected = sum(flow(w) for w in [8] * 4 + [6] * 4 + [4] * 4) + upsampler
    assert counts["waveglow"][1] == expected

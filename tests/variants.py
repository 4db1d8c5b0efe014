"""The tiny models every variant test runs on: one table for the model contract
(`test_models.py`) and the inference engines (`test_inference.py`, `test_cpu_engine.py`),
ablations included."""

import torch

from vocoder.models import ModelConfig, build_model

TINY = dict(n_flows=3, n_layers=2, n_group=4, channels=8, n_mels=8, hop_length=16)
TINY_GLOW = dict(TINY, n_flows=4, n_group=8, n_early_every=2, n_early_size=2)

VARIANTS = {
    "waveflow": dict(TINY, family="waveflow"),
    "waveflow-rqs": dict(TINY, family="waveflow", coupling="rqs", spline_bins=8),
    "waveflow-bipartized": dict(TINY, family="waveflow", permutation="bipartized", n_flows=4),
    "nanoflow-naive": dict(TINY, family="nanoflow", sharing="naive"),
    "nanoflow-decomp": dict(TINY, family="nanoflow", sharing="decomp"),
    "nanoflow": dict(TINY, family="nanoflow", sharing="full", embedding_dim=16),
    "nanoflow-appendix": dict(
        TINY, family="nanoflow", embedding_dim=16, embedding_variant="appendix"
    ),
    "nanoflow-first-flow-permuted": dict(
        TINY, family="nanoflow", embedding_dim=16, permute_first_flow=True
    ),
    "nanoflow-rqs": dict(TINY, family="nanoflow", coupling="rqs", spline_bins=8, embedding_dim=16),
    "nanoflow-naive-rqs": dict(TINY, family="nanoflow", sharing="naive", coupling="rqs"),
    "nanoflow-partial-concat": dict(
        TINY, family="nanoflow", shared_layers=1, concat_embedding=True, embedding_dim=16
    ),
    "nanoflow-naive-partial": dict(TINY, family="nanoflow", sharing="naive", shared_layers=1),
    # the embedding ablations: each of eq. 8 to 10 on its own
    "nanoflow-bias-only": dict(
        TINY, family="nanoflow", multiplicative_gate=False, embedding_dim=16
    ),
    "nanoflow-gate-only": dict(TINY, family="nanoflow", additive_bias=False, embedding_dim=16),
    "nanoflow-concat-only": dict(
        TINY,
        family="nanoflow",
        additive_bias=False,
        multiplicative_gate=False,
        concat_embedding=True,
        embedding_dim=16,
    ),
    "waveglow": dict(TINY_GLOW, family="waveglow"),
    "waveglow-rqs": dict(TINY_GLOW, family="waveglow", coupling="rqs", spline_bins=8),
    "nanoflow-glow": dict(TINY_GLOW, family="nanoflow-glow", embedding_dim=16),
    "nanoflow-glow-appendix": dict(
        TINY_GLOW, family="nanoflow-glow", embedding_dim=16, embedding_variant="appendix"
    ),
    "nanoflow-glow-naive": dict(TINY_GLOW, family="nanoflow-glow", sharing="naive"),
    "nanoflow-glow-decomp": dict(TINY_GLOW, family="nanoflow-glow", sharing="decomp"),
    "nanoflow-glow-concat-rqs": dict(
        TINY_GLOW,
        family="nanoflow-glow",
        coupling="rqs",
        spline_bins=8,
        additive_bias=False,
        concat_embedding=True,
        embedding_dim=16,
    ),
}
ROW_VARIANTS = sorted(v for v in VARIANTS if "glow" not in v)


def tiny_model(
    variant: str, seed: int = 0, spread: float = 0.2, dtype=torch.float32, **changes
) -> torch.nn.Module:
    """A tiny model (`VARIANTS[variant]` with `changes`) whose zero-initialised parts (the
    conditioning projections, NanoFlow's gates) get random values of scale `spread`, so that
    no flow is trivial."""
    torch.manual_seed(seed)
    model = build_model(ModelConfig(**{**VARIANTS[variant], **changes})).to(dtype)
    with torch.no_grad():
        for projection in model.projections:
            projection.weight.normal_(0.0, 0.1)
            projection.bias.normal_(0.0, 0.1)
        indication = getattr(model, "flow_indication", None)
        if indication is not None and indication.log_gates is not None:
            indication.log_gates.normal_(0.0, spread)
        if indication is not None and indication.residual_gates is not None:
            indication.residual_gates.normal_(1.0, spread)
    return model.eval()

"""The inference form of a model written to disk: weight norm folded, NanoFlow biases cached,
network weights at the chosen precision."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vocoder import __version__
from vocoder.checkpoint import cast_network_weights, export_model, lineage, load_model
from vocoder.inference.compile import precision_dtype
from vocoder.model_source import resolve_model_source


def export_inference_model(
    name_or_path: str | Path | None,
    out_stem: str | Path,
    precision: str = "fp32",
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Write the inference form of a model (weight norm folded, NanoFlow biases cached) as
    `<out_stem>.safetensors` + `<out_stem>.json`, loadable by `Synthesizer.load`.

    `precision` "fp16"/"bf16" stores the network weights at half size; the mel upsampler,
    WaveGlow's 1x1 convolutions and all bias vectors stay float32.
    """
    dtype = precision_dtype(precision)
    source = resolve_model_source(name_or_path)
    model, info = load_model(source)
    inference = model if model.inference_form else model.to_inference_form()
    cast_network_weights(inference, dtype)
    metadata: dict[str, Any] = {
        "name": Path(out_stem).name,
        "precision": precision,
        "parameters": inference.parameter_count(),
        "source": str(source),
        "exported_by": f"vocoder {__version__}",
    }
    # which weights: a checkpoint's EMA ones when it had them; an export's as it recorded
    from_export = info.source.suffix == ".safetensors"
    weights = info.metadata.get("weights") if from_export else info.weights
    if weights in ("ema", "model"):
        metadata["weights"] = weights
    if info.step is not None:
        metadata["step"] = info.step
    metadata.update(lineage(info.metadata))  # a published origin; the clips trained on
    made_from = [info.source]
    if info.source.suffix == ".safetensors":  # an export: its JSON too
        made_from.append(info.source.with_suffix(".json"))
    return export_model(
        inference, info.features, out_stem, metadata, overwrite=overwrite, inputs=made_from
    )


__all__ = ["export_inference_model"]

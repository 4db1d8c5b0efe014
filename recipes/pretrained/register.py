"""Copy a trained small WaveFlow into pretrained/ and record it in the registry.

Reads the latest checkpoint of a `vocoder train` run and writes it with
`vocoder.checkpoint.export_model` in training form (weight norm kept, so that `vocoder train`
can fine-tune from it with `train.init_from`) as `<out>.safetensors` + `<out>.json`, with the
network's weight matrices stored in fp32 or fp16 (the mel upsampler and the biases stay
fp32, as `vocoder export --precision fp16` does). Then it adds or updates the model's entry
in pretrained/registry.json (file sizes and sha256, the inference-form parameter count and,
with --figures, the test-split summary figures) and writes the model card
pretrained/<name>.md from those same figures.

    python recipes/pretrained/register.py exp/pretrained/wf-small --dtype fp16 \
        --figures recipes/pretrained/figures.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from vocoder.checkpoint import cast_network_weights, export_model, load_model
from vocoder.cli import describe_error
from vocoder.config import load_mapping
from vocoder.errors import VocoderError
from vocoder.files import atomic_output
from vocoder.pretrained import PRETRAINED_DIR, REGISTRY_FILE, sha256_file
from vocoder.train.logging import read_log

NAME = "waveflow-small-cpu"
DESCRIPTION = (
    "Small WaveFlow (h=16, 32 channels, 4 flows x 5 layers) trained for {hours:.1f} h on 2 CPU "
    "cores: a CPU-friendly stand-in until GPU-trained models ship, far from converged "
    "(noisy speech); see the model card"
)
DATA = "LJ Speech mini + male-reader train splits (367 clips, 36.7 min; 19 more for validation)"
HARDWARE = "CPU, 2 shared cores, no GPU"


def training_seconds(run: Path) -> float:
    """Training wall time, summed over the logged intervals of the run (resumes included)."""
    seconds, last_step = 0.0, 0
    for entry in read_log(run, "train"):
        if entry["steps_per_s"] > 0:
            seconds += (entry["step"] - last_step) / entry["steps_per_s"]
        last_step = entry["step"]
    return seconds


CARD = """# {name}

{description}.

| | |
| --- | --- |
| model | WaveFlow, h = 16, 4 flows x 5 layers, 32 residual channels, affine coupling, \
{parameters:,} parameters (inference form) |
| weights | `{name}.safetensors`, network weights in {dtype}, training form (fine-tunable) |
| data | {data}; the test splits were never read in training |
| training | {step:,} steps of `vocoder train` (batch {batch} x {segment} samples, Adam lr \
{lr:g} halved every {halve:,} steps, {precision}), {hours:.1f} h on {hardware} |
| recipe | `bash recipes/pretrained/run.sh` (config `recipes/pretrained/waveflow-small-cpu.yaml`) |
| license | code MIT; LJ Speech public domain; male-reader Apache-2.0 (PhilippMatthes/dc_tts) |

## Quality on the test splits

{split}, sigma {sigma}, seed 0, CPU; `vocoder evaluate` (stage 3 of the recipe). Griffin-Lim
(librosa, 60 iterations) is scored on the same mels: the floor a vocoder must beat.

| | test LL (nats/sample) | PESQ-wb | STOI | log-mel L1 | MCD (dB) |
| --- | --- | --- | --- | --- | --- |
| {name} | {ll:.3f} | {pesq_wb:.2f} | {stoi:.3f} | {log_mel_l1:.3f} | {mcd:.2f} |
| Griffin-Lim | - | {gl_pesq_wb:.2f} | {gl_stoi:.3f} | {gl_log_mel_l1:.3f} | {gl_mcd:.2f} |

Per split (this model): {per_split}.{dtype_note}

The model does not beat Griffin-Lim: it is far from converged (flow vocoders train for
hundreds of thousands of GPU steps) and its speech is noisy. It stands in until
GPU-trained models ship, so that the toolkit's commands work out of the box.

## Speed

CPU: {cpu_speed} x real time (`vocoder synthesize` of the {n_lj} LJ Speech test clips, batch 1,
{speed_precision}, 2 cores; stage 4 of the recipe). GPU: not measured.
"""


def write_card(path: Path, entry: dict, metadata: dict, dtype: str, run: Path) -> None:
    """The model card, from the registry entry, its figures, the weights' metadata and the
    run's resolved config."""
    fig = entry["summary"]
    config = load_mapping(run / "config.yaml")
    per_split = "; ".join(
        f"{split}: LL {s['ll']:.3f}, PESQ {s['pesq_wb']:.2f}, STOI {s['stoi']:.3f}, "
        f"log-mel L1 {s['log_mel_l1']:.3f}, MCD {s['mcd']:.2f}"
        for split, s in fig["per_split"].items()
    )
    other = fig.get("ll_other_dtype")
    dtype_note = (
        f" Stored in {other['dtype']}, the same weights give a test LL of {other['ll']:.3f}."
        if other
        else ""
    )
    text = CARD.format(
        dtype_note=dtype_note,
        name=entry["name"],
        description=entry["description"].removesuffix("; see the model card"),
        batch=config["data"]["batch_size"],
        segment=config["data"]["segment_length"],
        lr=config["train"]["lr"],
        halve=config["train"]["lr_halve_every"],
        precision=metadata["training_precision"],
        parameters=entry["parameters"],
        dtype=dtype,
        data=entry["data"],
        step=metadata["step"],
        hours=metadata["training_hours"],
        hardware=entry["hardware"],
        split=fig["split"],
        sigma=fig["sigma"],
        **{k: fig[k] for k in ("ll", "pesq_wb", "stoi", "log_mel_l1", "mcd")},
        **{f"gl_{k}": v for k, v in fig["griffin_lim"].items()},
        per_split=per_split,
        cpu_speed=fig.get("cpu_speed_x_real_time", "not measured"),
        speed_precision=fig.get("cpu_speed_precision", "precision not recorded"),
        n_lj=fig["split"].split("ljspeech-mini test (")[1].split()[0],
    )
    with atomic_output(path, overwrite=True) as tmp:
        tmp.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="the `vocoder train` run folder")
    parser.add_argument("--out", type=Path, default=PRETRAINED_DIR / NAME)
    parser.add_argument("--dtype", choices=("fp32", "fp16"), default="fp32")
    parser.add_argument("--figures", type=Path, help="JSON of summary figures for the registry")
    parser.add_argument("--registry", type=Path, default=PRETRAINED_DIR / REGISTRY_FILE)
    parser.add_argument("--no-registry", action="store_true", help="write the files only")
    args = parser.parse_args()

    model, info = load_model(args.run, weights="model")
    parameters = model.parameter_count(inference_form=True)
    if args.dtype == "fp16":  # as `vocoder export --precision fp16`: network weights only
        cast_network_weights(model, torch.float16)
    hours = training_seconds(args.run) / 3600
    metadata = {
        "name": NAME,
        "step": info.step,
        "weights_dtype": args.dtype,
        "trained_on": HARDWARE,
        "training_hours": round(hours, 2),
        # as the run resolved it: `auto` is recorded as what it chose
        "training_precision": load_mapping(args.run / "config.yaml")["train"]["precision"],
        "data": DATA,
        "recipe": "recipes/pretrained/run.sh",
        "card": f"pretrained/{NAME}.md",
    }
    weights, meta = export_model(model, info, args.out, metadata, overwrite=True)
    print(f"wrote {weights} ({weights.stat().st_size:,} bytes) and {meta}")
    if args.no_registry:
        return

    registry = json.loads(args.registry.read_text()) if args.registry.is_file() else {}
    registry.setdefault("format", 1)
    models = registry.setdefault("models", [])
    old = next((m for m in models if m.get("name") == NAME), {})
    entry = {
        "name": NAME,
        "description": DESCRIPTION.format(hours=hours),
        "family": info.model.family,
        "parameters": parameters,
        "data": DATA,
        "hardware": HARDWARE,
        "default": True,
        "card": f"{NAME}.md",
        "files": [
            {"name": p.name, "sha256": sha256_file(p), "size": p.stat().st_size}
            for p in (weights, meta)
        ],
        # without --figures, keep the figures already recorded
        "summary": json.loads(args.figures.read_text()) if args.figures else old.get("summary", {}),
    }
    models[:] = [m for m in models if m.get("name") != NAME]
    for m in models:
        m["default"] = False
    models.insert(0, entry)
    with atomic_output(args.registry, overwrite=True) as tmp:
        tmp.write_text(json.dumps(registry, indent=2) + "\n")
    print(f"updated {args.registry}")
    if entry["summary"]:
        write_card(PRETRAINED_DIR / entry["card"], entry, metadata, args.dtype, args.run)
        print(f"wrote {PRETRAINED_DIR / entry['card']}")


if __name__ == "__main__":
    try:
        main()
    except (VocoderError, OSError) as e:  # a missing or unusable input: one line, exit 2,
        print(f"error: {describe_error(e)}", file=sys.stderr)  # as vocoder's commands say it
        sys.exit(2)

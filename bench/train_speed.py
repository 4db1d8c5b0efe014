"""Training throughput: steps/s and samples/s of one model at batch 8 x 16000 samples.

Runs the trainer's own step (`vocoder.train.step.train_step`: autocast, backward,
gradient clipping, Adam) on random audio and mels, in fp32 and bf16, on CUDA when present
(else CPU), and prints a table (and writes JSON with --json).

    python bench/train_speed.py                          # the WaveFlow-r64 preset
    python bench/train_speed.py --model nanoflow-h16-r128 --steps 50
    python bench/train_speed.py --config recipes/ljspeech/conf/waveglow.yaml --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vocoder.devices import device_name, resolve_device  # noqa: E402
from vocoder.errors import VocoderError  # noqa: E402
from vocoder.models import build_model, load_model_preset  # noqa: E402
from vocoder.train.config import load_experiment_config  # noqa: E402
from vocoder.train.step import LogLikelihood, train_step  # noqa: E402


def measure(config, precision, device, batch, samples, steps, warmup) -> dict:
    torch.manual_seed(0)
    model = build_model(config).to(device)
    objective = LogLikelihood(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    frames = samples // config.hop_length + 1
    audio = 0.1 * torch.randn(batch, samples, device=device)
    mel = torch.randn(batch, config.n_mels, frames, device=device) - 5.0
    for _ in range(warmup):
        train_step(objective, optimizer, scaler, audio, mel, precision, grad_clip=5.0)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    skipped = 0
    for _ in range(steps):
        scale = scaler.get_scale()
        result = train_step(objective, optimizer, scaler, audio, mel, precision, grad_clip=5.0)
        # fp16: a step the grad scaler skipped (inf/NaN gradients) lowered its scale
        skipped += result.skipped or scaler.get_scale() < scale
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    row = {
        "precision": precision,
        "steps_per_s": steps / elapsed,
        "samples_per_s": steps * batch * samples / elapsed,
        "ms_per_step": 1000 * elapsed / steps,
        "skipped_steps": skipped,
    }
    if device.type == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", default="waveflow-h16-r64", help="model preset")
    source.add_argument("--config", type=Path, help="an experiment config (its model section)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--samples", type=int, default=16000, help="segment length")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per precision")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precisions", default="fp32,bf16", help="comma-separated")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    if args.config is not None:
        config = load_experiment_config(args.config).model
        name = args.config.stem
    else:
        config = load_model_preset(args.model)
        name = args.model
    device = resolve_device(args.device)
    if device.type == "cuda":
        # TF32 left as `vocoder train` leaves it (PyTorch's defaults: on for cuDNN
        # convolutions, off for matmuls), so fp32 is timed as training runs it
        hardware = torch.cuda.get_device_name(device)
    else:
        cpu = device_name(torch.device("cpu"))
        hardware = f"{cpu}, {torch.get_num_threads()} threads"
    rows = []
    for precision in args.precisions.split(","):
        if precision == "fp16" and device.type != "cuda":
            continue
        rows.append(
            measure(config, precision, device, args.batch, args.samples, args.steps, args.warmup)
        )
    params = build_model(config).parameter_count()
    print(f"{name}: {params / 1e6:.3f} M parameters, batch {args.batch} x {args.samples} samples")
    print(f"device: {device} ({hardware}), torch {torch.__version__}")
    print(f"{'precision':<10}{'steps/s':>10}{'samples/s':>14}{'ms/step':>10}{'peak GiB':>10}")
    for r in rows:
        peak = f"{r['peak_memory_gib']:.2f}" if "peak_memory_gib" in r else "-"
        print(
            f"{r['precision']:<10}{r['steps_per_s']:>10.2f}{r['samples_per_s']:>14,.0f}"
            f"{r['ms_per_step']:>10.1f}{peak:>10}"
        )
    if args.json is not None:
        result = {
            "model": name,
            "parameters": params,
            "batch": args.batch,
            "samples": args.samples,
            "device": str(device),
            "hardware": hardware,
            "torch": torch.__version__,
            "results": rows,
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except VocoderError as e:  # a CUDA device without a GPU, an unknown preset: one line
        sys.exit(f"error: {e}")

"""CPU row engine: the conv1d path (`IncrementalInverse`) vs the GEMM path (`GemmRowInverse`).

    python bench/cpu_engine.py --json /tmp/cpu_engine.json

For each model (presets with random weights, projections and NanoFlow gates made non-zero
as in bench/inference_speed.py; the shipped pretrained model by name) and precision, times
mel -> audio (upsampling included) at batch 1 on --seconds of audio, old and new path
alternating within each repeat (median of --repeats, after one warm-up), and a square
matmul in the same dtype between them, so every fraction compares rates measured side by
side on a shared machine. Reports seconds, x real time, achieved GFLOP/s
(`flops_per_sample` of the inference form x samples / seconds) and that as a fraction of
the matmul rate; and the quality of each bf16 output against the exact fp32 path from the
same latent: SNR (dB) and log-mel L1.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from imported_cpu import matmul_gflops, snr_db
from inference_speed import inputs, random_model

from vocoder.checkpoint import load_model
from vocoder.devices import device_name
from vocoder.features import MelConfig, MelSpectrogram
from vocoder.inference.compile import prepare_for_inference
from vocoder.inference.cpu import GemmRowInverse
from vocoder.inference.incremental import IncrementalInverse
from vocoder.metrics import log_mel_l1
from vocoder.model_source import resolve_model_source
from vocoder.precision import DTYPES, cpu_bf16_units

MODELS = ("nanoflow-h16-r128", "waveflow-h16-r64", "waveflow-small-cpu")
PATHS = {"conv1d": IncrementalInverse, "gemm": GemmRowInverse}


def load(name: str) -> torch.nn.Module:
    try:
        return random_model(name)
    except Exception:  # not a preset: a pretrained name
        model, _ = load_model(resolve_model_source(name))
        return model.to_inference_form()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(
        f"# {device_name(torch.device('cpu'))}, torch {torch.__version__}, "
        f"{torch.backends.cpu.get_cpu_capability()}, bf16 units: {cpu_bf16_units()}, "
        f"{args.threads} threads, batch 1, {args.seconds:g} s"
    )
    print(
        f"{'model':<19} {'prec':<5} {'path':<7} {'seconds':>8} {'x RT':>6} {'GFLOP/s':>8} "
        f"{'matmul':>7} {'frac':>5} {'speed-up':>8} {'SNR dB':>7} {'mel L1':>7}"
    )
    rows = []
    for name in args.models.split(","):
        model = load(name)
        c = model.config
        mel, z = inputs(1, args.seconds, c, torch.device("cpu"))
        samples = z.numel()
        flops = model.flops_per_sample() * samples
        mels = MelSpectrogram(
            MelConfig(sample_rate=c.sample_rate, hop_length=c.hop_length, n_mels=c.n_mels)
        )
        # the exact fp32 path, whatever precisions are asked for and in what order
        exact = prepare_for_inference(model, "fp32", "cpu")
        reference = PATHS["conv1d"](exact.rows)(z, exact.upsample(mel))
        for precision in args.precisions.split(","):
            compiled = prepare_for_inference(model, precision, "cpu")
            runners = {path: cls(compiled.rows) for path, cls in PATHS.items()}
            times: dict[str, list[float]] = {path: [] for path in PATHS}
            peaks, audio = [], {}
            for repeat in range(args.repeats + 1):
                peaks.append(matmul_gflops(DTYPES[precision], repeats=1))
                for path, runner in runners.items():
                    start = time.perf_counter()
                    audio[path] = runner(z, compiled.upsample(mel))
                    if repeat:  # the first round warms up
                        times[path].append(time.perf_counter() - start)
            peak = statistics.median(peaks[1:])
            for path in PATHS:
                seconds = statistics.median(times[path])
                gflops = flops / seconds / 1e9
                row = {
                    "model": name,
                    "precision": precision,
                    "path": path,
                    "seconds": seconds,
                    "x_real_time": samples / c.sample_rate / seconds,
                    "gflops": gflops,
                    "matmul_gflops": peak,
                    "fraction_of_matmul": gflops / peak,
                    "speed_up": statistics.median(times["conv1d"]) / seconds,
                }
                row["snr_db"] = snr_db(reference, audio[path])
                row["log_mel_l1"] = log_mel_l1(mels(reference), mels(audio[path]))
                rows.append(row)
                snr = row.get("snr_db", math.nan)
                snr = "exact" if math.isinf(snr) else f"{snr:.1f}"
                print(
                    f"{name:<19} {precision:<5} {path:<7} {seconds:>8.3f} "
                    f"{row['x_real_time']:>6.3f} {gflops:>8.1f} {peak:>7.1f} "
                    f"{row['fraction_of_matmul']:>5.2f} {row['speed_up']:>7.2f}x {snr:>7} "
                    f"{row.get('log_mel_l1', math.nan):>7.4f}",
                    flush=True,
                )
    if args.json:
        info = {
            "processor": device_name(torch.device("cpu")),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_units": cpu_bf16_units(),
            "torch": torch.__version__,
            "threads": args.threads,
            "seconds_audio": args.seconds,
            "batch": 1,
        }
        # strict JSON: an exact match's infinite SNR is written as null
        rows = [
            {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in r.items()}
            for r in rows
        ]
        args.json.write_text(json.dumps({"device": info, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

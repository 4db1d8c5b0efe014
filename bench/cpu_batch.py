"""CPU throughput over many utterances: one at a time against lanes of several.

    python bench/cpu_batch.py --json /tmp/cpu_batch.json

`GemmRowInverse` lays a batch's items end to end in lanes of up to `lane_columns` columns
(`vocoder.inference.cpu.pack_lanes`). For each model and precision this times the row
engine on a fixed set of utterances (lengths drawn uniformly from --min-seconds to
--max-seconds, seeded): each alone (batch 1), then all of them as one batch at each
--lanes width, the runs alternating within each repeat (median of --repeats, after one
warm-up), on --threads threads. It reports x real time of the whole set, the speed-up over
batch 1, and the largest difference of any item's audio from its batch-1 audio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from cpu_engine import load
from inference_speed import inputs

from vocoder.devices import device_name
from vocoder.inference.compile import prepare_for_inference
from vocoder.inference.cpu import GemmRowInverse
from vocoder.precision import cpu_bf16_units

MODELS = ("waveflow-small-cpu", "waveflow-h16-r64")


def utterances(model, count: int, low: float, high: float, upsample):
    """`count` (z [1, T], conditioning [1, n_mels, T]) pairs of random lengths."""
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(count):
        seconds = low + (high - low) * torch.rand((), generator=g).item()
        mel, z = inputs(1, seconds, model.config, torch.device("cpu"))
        items.append((z, upsample(mel)))
    return items


def as_batch(items):
    """The items padded to one batch: (z [B, T], conditioning [B, n_mels, T], lengths)."""
    lengths = [z.shape[1] for z, _ in items]
    longest = max(lengths)
    pad = torch.nn.functional.pad
    z = torch.cat([pad(z, (0, longest - z.shape[1])) for z, _ in items])
    cond = torch.cat([pad(c, (0, longest - c.shape[2])) for _, c in items])
    return z, cond, lengths


def measure(rows, items, lanes: list[int], repeats: int):
    """({run: seconds of each timed repeat}, {run: each item's audio}) for batch 1 and each
    lane width, the runs alternating within a repeat."""
    z, cond, lengths = as_batch(items)
    single = GemmRowInverse(rows)
    runs = {"batch 1": lambda: [single(zi, ci)[0] for zi, ci in items]}
    for width in lanes:
        engine = GemmRowInverse(rows, lane_columns=width)
        runs[f"lanes {width}"] = lambda engine=engine: list(engine(z, cond, lengths))
    times: dict[str, list[float]] = {run: [] for run in runs}
    audio = {}
    for repeat in range(repeats + 1):
        for run, fn in runs.items():
            start = time.perf_counter()
            audio[run] = fn()
            if repeat:  # the first round warms up
                times[run].append(time.perf_counter() - start)
    return times, audio


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--precisions", default="bf16,fp32")
    p.add_argument("--count", type=int, default=16)
    p.add_argument("--min-seconds", type=float, default=0.5)
    p.add_argument("--max-seconds", type=float, default=3.0)
    p.add_argument("--lanes", default="2048,4096,8192,16384")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    lanes = [int(n) for n in args.lanes.split(",")]
    print(
        f"# {device_name(torch.device('cpu'))}, torch {torch.__version__}, "
        f"bf16 units: {cpu_bf16_units()}, {args.threads} threads, {args.count} utterances "
        f"of {args.min_seconds:g}-{args.max_seconds:g} s"
    )
    header = f"{'model':<19} {'prec':<5} {'run':<14} {'seconds':>8} {'x RT':>6} {'speed-up':>8}"
    print(f"{header} {'max diff':>9}")
    rows = []
    for name in args.models.split(","):
        model = load(name)
        for precision in args.precisions.split(","):
            compiled = prepare_for_inference(model, precision, "cpu")
            items = utterances(
                model, args.count, args.min_seconds, args.max_seconds, compiled.upsample
            )
            lengths = [z.shape[1] for z, _ in items]
            audio_seconds = sum(lengths) / model.config.sample_rate
            times, audio = measure(compiled.rows, items, lanes, args.repeats)
            base = statistics.median(times["batch 1"])
            for run in times:
                seconds = statistics.median(times[run])
                diff = max(
                    (a[:n] - b[:n]).abs().max().item()
                    for a, b, n in zip(audio[run], audio["batch 1"], lengths, strict=True)
                )
                row = {
                    "model": name,
                    "precision": precision,
                    "run": run,
                    "seconds": seconds,
                    "x_real_time": audio_seconds / seconds,
                    "speed_up": base / seconds,
                    "max_abs_diff": diff,
                }
                rows.append(row)
                print(
                    f"{name:<19} {precision:<5} {run:<14} {seconds:>8.3f} "
                    f"{row['x_real_time']:>6.2f} {row['speed_up']:>7.2f}x {diff:>9.2e}",
                    flush=True,
                )
    if args.json:
        info = {
            "processor": device_name(torch.device("cpu")),
            "bf16_units": cpu_bf16_units(),
            "torch": torch.__version__,
            "threads": args.threads,
            "utterances": args.count,
            "seconds_range": [args.min_seconds, args.max_seconds],
        }
        args.json.write_text(json.dumps({"device": info, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

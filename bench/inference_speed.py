"""Synthesis speed: the plain inverse vs the incremental engine vs the CUDA fast path.

    python bench/inference_speed.py --quick                  # a short CPU or GPU check
    python bench/inference_speed.py --json bench/h100.json   # the full table on a GPU

For each model (random weights, projections and NanoFlow gates made non-zero so the work is
real), precision and case (batch x seconds of audio), times mel -> audio (upsampling
included) and prints samples/s, x real time, peak memory and the speed-up over the plain
inverse (peak memory: CUDA memory reserved, graph pools included). Methods:

- plain: `FlowVocoder.inverse` of the inference form (weight norm folded), under autocast
  for half precision: every row re-runs the whole network over all rows.
- incremental: `IncrementalInverse`, eager (one layer-row per step).
- cuda: `GraphedRowInverse`, the incremental loop replayed from a CUDA graph, with fused
  elementwise kernels (GPU only); cuda-plain: the same without fusion. One runner per
  model and precision serves all cases, as in a `Synthesizer` (it compiles once and checks
  itself against the eager engine in a warm-up run; each case captures its own graph).

The plain inverse is slow on a CPU: cases longer than --plain-max-seconds time it on that
many seconds instead and scale its rate (its cost is linear in length); those rows say
"scaled". CPU peak memory is the process's peak RSS so far (a high-water mark).
The JSON is rewritten after every row, and --budget stops starting rows after that many
seconds, so a run cut short keeps what it measured (the target model comes first).
Speed anchors (the NanoFlow reference code, measured for this project on an H100): ~450 ms
per utterance at batch 1 (2.1x real time for 1 s, 23x for 10 s); targets here are >= 100x
and >= 300x.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

from vocoder.devices import device_name, resolve_device
from vocoder.errors import VocoderError
from vocoder.inference.compile import prepare_for_inference
from vocoder.inference.cuda import GraphedRowInverse, graphs_available
from vocoder.inference.incremental import IncrementalInverse
from vocoder.models import build_model, load_model_preset

MODELS = ("nanoflow-h16-r128", "waveflow-h16-r64", "waveflow-h16-r128")  # targets first
TARGETS = {("nanoflow-h16-r128", 1, 1.0): 100.0, ("nanoflow-h16-r128", 1, 10.0): 300.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=None, help="comma-separated model presets")
    p.add_argument(
        "--cases", default=None, help="comma-separated BATCHxSECONDS cases (1x1,1x10,16x1,16x10)"
    )
    p.add_argument("--precisions", default=None, help="default: fp32 (CPU); fp32,bf16,fp16 (GPU)")
    p.add_argument(
        "--methods",
        default="plain,incremental,cuda,cuda-plain",
        help="which to time (cuda ones on GPUs only)",
    )
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per method (median; 3)")
    p.add_argument(
        "--plain-max-seconds",
        type=float,
        default=None,
        help="longest audio the plain inverse really runs (default: 0.25 on CPU, no limit GPU)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="defaults of WaveFlow-r64 and NanoFlow-r128, 1 s, batch 1, one repeat (options "
        "given say otherwise)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument(
        "--budget", type=float, default=None, help="seconds: start no row after this many"
    )
    args = p.parse_args(argv)
    defaults = (
        ("waveflow-h16-r64,nanoflow-h16-r128", "1x1", 1)
        if args.quick
        else (",".join(MODELS), "1x1,1x10,16x1,16x10", 3)
    )
    for name, default in zip(("models", "cases", "repeats"), defaults, strict=True):
        if getattr(args, name) is None:  # --quick fills in defaults, never what was given
            setattr(args, name, default)
    return args


def random_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(load_model_preset(name))
    with torch.no_grad():
        for projection in model.projections:
            projection.weight.normal_(0.0, 1e-3)
            projection.bias.normal_(0.0, 1e-3)
        indication = getattr(model, "flow_indication", None)
        if indication is not None and indication.log_gates is not None:
            indication.log_gates.normal_(0.0, 0.05)
        if indication is not None and indication.residual_gates is not None:
            indication.residual_gates.normal_(1.0, 0.05)
    return model.to_inference_form()


def peak_memory(device: torch.device) -> float:
    """MB: CUDA peak reserved since the last reset (a CUDA graph's memory pool is reserved,
    not allocated), or the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_reserved(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def timed(fn, device: torch.device, repeats: int) -> tuple[float, float]:
    """(median seconds, peak MB) of `fn()` after one untimed warm-up run."""
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()  # what stays reserved is what this method holds
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak_memory(device)


def inputs(batch: int, seconds: float, config, device) -> tuple[torch.Tensor, torch.Tensor]:
    frames = max(1, math.ceil(seconds * config.sample_rate / config.hop_length))
    g = torch.Generator().manual_seed(0)
    mel = torch.rand(batch, config.n_mels, frames, generator=g) * 8 - 9
    z = 0.8 * torch.randn(batch, frames * config.hop_length, generator=g)
    return mel.to(device), z.to(device)


def make_runner(compiled, method: str):
    """The row engine a method times (None for the plain inverse)."""
    if method == "plain":
        return None
    if method == "incremental":
        return IncrementalInverse(compiled.rows)
    return GraphedRowInverse(compiled.rows, fuse=method == "cuda")


def run_case(model, compiled, method, runner, batch, seconds, args, device) -> dict:
    c = model.config
    scaled_from = None
    if method == "plain" and args.plain_max_seconds and seconds > args.plain_max_seconds:
        scaled_from = args.plain_max_seconds
    mel, z = inputs(batch, scaled_from or seconds, c, device)
    if method == "plain":

        def fn():
            with torch.no_grad(), compiled.autocast():
                return model.inverse(z, mel)

    else:
        if isinstance(runner, GraphedRowInverse):
            runner.graphs.clear()  # free the last case's graph: peak memory is this case's

        def fn():
            return runner(z, compiled.upsample(mel))

    seconds_taken, memory = timed(fn, device, args.repeats)
    if method.startswith("cuda") and (runner.disabled or not runner.verified):
        print(f"  warning: {method} fell back to the eager path", file=sys.stderr)
    elif method == "cuda" and not runner.fuse:
        print("  warning: cuda fell back to plain (unfused) kernels", file=sys.stderr)
    samples = z.numel()
    if scaled_from:  # by the samples each length has (whole frames), not its nominal seconds
        full = batch * math.ceil(seconds * c.sample_rate / c.hop_length) * c.hop_length
        seconds_taken *= full / samples
        samples = full
    rate = samples / seconds_taken
    return {
        "method": method,
        "seconds_taken": seconds_taken,
        "samples_per_s": rate,
        "x_real_time": rate / c.sample_rate,
        "peak_mb": memory,
        "scaled_from_seconds": scaled_from,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
        if args.plain_max_seconds is None:
            args.plain_max_seconds = 0.25
    precisions = (args.precisions or ("fp32" if device.type == "cpu" else "fp32,bf16,fp16")).split(
        ","
    )
    methods = [
        m for m in args.methods.split(",") if not m.startswith("cuda") or graphs_available(device)
    ]
    cases = [(int(b), float(s)) for b, s in (c.split("x") for c in args.cases.split(","))]
    environment = {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else device_name(torch.device("cpu")),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    print(f"# {environment}")
    header = (
        f"{'model':<18} {'prec':<5} {'case':<7} {'method':<12} {'time':>10} "
        f"{'samples/s':>11} {'x rt':>8} {'peak MB':>8} {'vs plain':>8}"
    )
    print(header)
    results = []
    start = time.perf_counter()

    def out_of_time() -> bool:
        return args.budget is not None and time.perf_counter() - start > args.budget

    for name in args.models.split(","):
        if out_of_time():
            break
        model = random_model(name).to(device)
        for precision in precisions:
            if out_of_time():
                break
            compiled = prepare_for_inference(model, precision, device)
            runners = {m: make_runner(compiled, m) for m in methods}
            for batch, seconds in cases:
                plain_time = None
                for method in methods:
                    if out_of_time():
                        break
                    row = run_case(
                        model, compiled, method, runners[method], batch, seconds, args, device
                    )
                    if method == "plain":
                        plain_time = row["seconds_taken"]
                    ratio = plain_time / row["seconds_taken"] if plain_time else None
                    row.update(
                        model=name,
                        precision=precision,
                        batch=batch,
                        seconds=seconds,
                        vs_plain=ratio,
                    )
                    results.append(row)
                    scaled = " (scaled)" if row["scaled_from_seconds"] else ""
                    print(
                        f"{name:<18} {precision:<5} {batch:>2}x{seconds:<4g} {method:<12} "
                        f"{row['seconds_taken'] * 1e3:>8.0f}ms {row['samples_per_s']:>11.0f} "
                        f"{row['x_real_time']:>8.2f} {row['peak_mb']:>8.0f} "
                        f"{(f'{ratio:.1f}x' if ratio else '-'):>8}{scaled}",
                        flush=True,
                    )
                    if args.json:
                        write_json(args.json, environment, results)
            del runners, compiled
            if device.type == "cuda":
                torch.cuda.empty_cache()
    models = args.models.split(",")
    if len(results) < len(models) * len(precisions) * len(cases) * len(methods):
        print(f"# --budget {args.budget:g} s spent: the rows after these were not run")
    if device.type == "cuda":
        for (name, batch, seconds), target in TARGETS.items():
            best = [
                r["x_real_time"]
                for r in results
                if (r["model"], r["batch"], r["seconds"]) == (name, batch, seconds)
                and r["method"] == "cuda"
            ]
            if best:
                verdict = "met" if max(best) >= target else "MISSED"
                print(
                    f"target {name} batch {batch} {seconds:g} s >= {target:g}x: "
                    f"{max(best):.0f}x {verdict}"
                )
    if args.json:
        write_json(args.json, environment, results)
        print(f"wrote {args.json}")
    return 0


def write_json(path: Path, environment: dict, results: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"environment": environment, "results": results}, indent=2) + "\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except VocoderError as e:  # a CUDA device without a GPU, an unknown preset: one line
        sys.exit(f"error: {e}")

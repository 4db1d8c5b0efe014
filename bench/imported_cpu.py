"""CPU speed of an imported published-shape NanoFlow, fp32 vs bf16, with the matmul rate.

    python bench/imported_cpu.py --json /tmp/imported_cpu.json

Imports a NanoFlow reference-code checkpoint (default: the golden with the shapes of the
published nanoflow-h16-r128-emb512 weights, random values), then for fp32 and bf16 times
`Synthesizer.synthesize` (mel -> audio, upsampling included) at batch 1 on a real mel
(LJ050-0030, cut to --seconds), after one warm-up, median of --repeats. Both precisions get
the same latent (the seed's noise stream does not depend on precision). Reports seconds,
x real time, achieved GFLOP/s (`flops_per_sample` of the inference form x samples /
seconds) and that as a fraction of a 2048^2 matmul's rate in the same dtype, measured in
the same run; and bf16 quality against fp32: SNR (dB) and log-mel L1.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

from vocoder.audio import load_audio
from vocoder.devices import device_name
from vocoder.importers import import_checkpoint
from vocoder.inference.cpu import onednn_linear, onednn_prepack
from vocoder.inference.engine import Synthesizer
from vocoder.metrics import log_mel_l1
from vocoder.precision import DTYPES

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared/reference/goldens/nanoflow-h16-r128-emb512.pt"
CPU_PRECISIONS = ("fp32", "bf16")


def median_time(fn, repeats: int, warmup: int = 1) -> tuple[float, object]:
    for _ in range(warmup):
        fn()
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 3) -> float:
    """The best rate (GFLOP/s) of an n x n matmul in `dtype` here: `torch.mm`, or oneDNN's
    linear on prepacked weights (what the CPU engine runs), whichever is faster. On an AMD
    EPYC (Zen 4) `torch.mm` reached 190 GFLOP/s in fp32 and oneDNN 430: a fraction of the
    first alone flattered every path."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    seconds, _ = median_time(lambda: a @ b, repeats)
    packed = onednn_prepack(b)
    if packed is not None:
        onednn, _ = median_time(lambda: onednn_linear(a, packed), repeats)
        seconds = min(seconds, onednn)
    return 2 * n**3 / seconds / 1e9


def snr_db(reference: torch.Tensor, test: torch.Tensor) -> float:
    """Signal-to-noise ratio (dB) of `test` against `reference`."""
    noise = (reference - test).double().pow(2).sum()
    return 10 * math.log10(reference.double().pow(2).sum() / noise)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=GOLDEN)
    p.add_argument("--config", type=Path, default=None, help="default: the .json beside it")
    p.add_argument("--wav", type=Path, default=ROOT / "app/examples/LJ050-0030.wav")
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if not args.checkpoint.is_file():
        p.error(
            f"{args.checkpoint}: no such file; pass --checkpoint (the default golden is in "
            "../shared beside the development checkout, not in a clone)"
        )
    torch.set_num_threads(args.threads)
    config = args.config or args.checkpoint.with_suffix(".json")

    model = import_checkpoint(args.checkpoint, config).model
    flops_per_sample = model.flops_per_sample()
    synths = {d: Synthesizer.from_model(model, device="cpu", precision=d) for d in CPU_PRECISIONS}
    synth = synths["fp32"]
    frames = math.ceil(args.seconds * synth.sample_rate / synth.hop_length)
    mel = synth.mel_from_audio(load_audio(args.wav, synth.sample_rate))[:, :frames]
    samples = mel.shape[-1] * synth.hop_length
    rows, audio = {}, {}
    for precision, s in synths.items():
        seconds, audio[precision] = median_time(
            lambda s=s: s.synthesize(mel, sigma=0.8, seed=0), args.repeats
        )
        peak = matmul_gflops(DTYPES[precision])
        achieved = flops_per_sample * samples / seconds / 1e9
        rows[precision] = {
            "seconds": seconds,
            "x_real_time": samples / synth.sample_rate / seconds,
            "gflops": achieved,
            "matmul_gflops": peak,
            "fraction_of_matmul": achieved / peak,
        }
    ref, test = audio["fp32"], audio["bf16"]
    snr = snr_db(ref, test)
    l1 = log_mel_l1(synth.mel_from_audio(ref), synth.mel_from_audio(test))
    quality = {"bf16_snr_db": snr, "bf16_log_mel_l1": l1}

    print(
        f"{args.checkpoint.name}: {samples} samples ({samples / synth.sample_rate:.2f} s), "
        f"batch 1, {device_name(torch.device('cpu'))}, {args.threads} threads, "
        f"{flops_per_sample / 1e6:.2f} MFLOP/sample"
    )
    print(f"{'prec':<5} {'seconds':>8} {'x RT':>7} {'GFLOP/s':>8} {'matmul':>8} {'frac':>6}")
    for precision, r in rows.items():
        print(
            f"{precision:<5} {r['seconds']:>8.3f} {r['x_real_time']:>7.3f} {r['gflops']:>8.1f}"
            f" {r['matmul_gflops']:>8.1f} {r['fraction_of_matmul']:>6.3f}"
        )
    print(f"bf16 vs fp32 (same z): SNR {snr:.2f} dB, log-mel L1 {l1:.4f}")
    if args.json:
        result = {
            "checkpoint": str(args.checkpoint),
            "config": str(config),
            "frames": mel.shape[-1],
            "samples": samples,
            "sample_rate": synth.sample_rate,
            "batch": 1,
            "repeats": args.repeats,
            "threads": args.threads,
            "flops_per_sample": flops_per_sample,
            "precisions": rows,
            "quality": quality,
            "device": {
                "processor": device_name(torch.device("cpu")),
                "machine": platform.machine(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "torch": torch.__version__,
                "torch_config": torch.__config__.show(),
            },
        }
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

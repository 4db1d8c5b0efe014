"""CPU training speed of two checkouts side by side: the trainer's step, alternating.

    git worktree add /tmp/before HEAD~1
    python bench/train_ab.py /tmp/before . --config recipes/pretrained/waveflow-small-cpu.yaml

On a shared machine one process's samples/s swings by a third from minute to minute, so
two runs one after the other compare little. Here each checkout gets a live worker process
(its own `vocoder` first on the path, one model, one batch of random audio and mels, warmed
up), and the two take turns: each round runs --steps trainer steps (`train_step`: autocast,
backward, clipping, Adam) in one, then in the other, the order swapped every round. It
prints each side's samples/s and the per-round speed-up of the second over the first
(median and range), which the drift between rounds mostly cancels out of.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from vocoder.devices import device_name

WORKER = r"""
import sys, time
from pathlib import Path
import torch
tree, source, precision, batch, samples, threads = sys.argv[1:7]
sys.path.insert(0, tree)
import vocoder
if not Path(vocoder.__file__).resolve().is_relative_to(Path(tree).resolve()):
    sys.exit(f"{tree}: imported vocoder from {vocoder.__file__}")
from vocoder.models import build_model, load_model_preset
from vocoder.train.config import load_experiment_config
from vocoder.train.step import LogLikelihood, train_step
torch.set_num_threads(int(threads))
if source.endswith((".yaml", ".yml")):
    config = load_experiment_config(Path(source)).model
else:
    config = load_model_preset(source)
torch.manual_seed(0)
model = build_model(config)
objective = LogLikelihood(model)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
scaler = torch.amp.GradScaler("cpu", enabled=False)
batch, samples = int(batch), int(samples)
audio = 0.1 * torch.randn(batch, samples)
mel = torch.randn(batch, config.n_mels, samples // config.hop_length + 1) - 5.0
def step():
    train_step(objective, optimizer, scaler, audio, mel, precision, grad_clip=5.0)
for _ in range(2):
    step()
print("ready", flush=True)
for line in sys.stdin:
    start = time.perf_counter()
    for _ in range(int(line)):
        step()
    print(time.perf_counter() - start, flush=True)
"""


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("first", type=Path, help="a checkout (the baseline)")
    p.add_argument("second", type=Path, help="another checkout")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", default="waveflow-h16-r64", help="model preset")
    source.add_argument("--config", type=Path, help="an experiment config (its model section)")
    p.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--samples", type=int, default=8192, help="segment length")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--steps", type=int, default=2, help="trainer steps per turn")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    model = str(args.config.resolve()) if args.config else args.model
    trees = [args.first.resolve(), args.second.resolve()]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(tree), model, args.precision]
            + [str(args.batch), str(args.samples), str(args.threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for tree in trees
    ]
    for tree, worker in zip(trees, workers, strict=True):
        if worker.stdout.readline().strip() != "ready":
            sys.exit(f"{tree}: the worker did not start (its error is above)")
    seconds: list[list[float]] = [[], []]
    for r in range(args.rounds):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            workers[i].stdin.write(f"{args.steps}\n")
            workers[i].stdin.flush()
            seconds[i].append(float(workers[i].stdout.readline()))
    for worker in workers:
        worker.stdin.close()
        worker.wait()
    samples = args.batch * args.samples * args.steps
    print(
        f"# {model}, {args.precision}, batch {args.batch} x {args.samples}, "
        f"{device_name(torch.device('cpu'))}, {args.threads} threads, {args.rounds} rounds of "
        f"{args.steps} steps"
    )
    for tree, times in zip(trees, seconds, strict=True):
        rates = sorted(samples / t for t in times)
        print(
            f"{tree}: {statistics.median(rates):,.0f} samples/s "
            f"(rounds {rates[0]:,.0f}-{rates[-1]:,.0f})"
        )
    ratios = [a / b for a, b in zip(seconds[0], seconds[1], strict=True)]
    print(
        f"speed-up of the second: median {statistics.median(ratios):.3f} "
        f"(rounds {min(ratios):.3f}-{max(ratios):.3f})"
    )


if __name__ == "__main__":
    main()

"""CPU training in fp32 vs bf16 autocast: speed and what the trained model scores.

    python bench/train_precision.py --steps 1800 --score-every 300 --json /tmp/tp.json

Trains one model config (default: the shipped small model's recipe) from the same
initialisation on the same sequence of batches (random segments of LJ Speech mini's train
split, cut by the trainer's `SegmentDataset`) once per precision, on the CPU, with the
trainer's own step (`train_step`: autocast, backward, the config's clipping, Adam). The
precisions take turns step by step (the order swapping every step), so a shared machine's
drift falls on both, and each step is timed alone. Every --score-every steps and at the
end, each model's held-out log-likelihood (nats per sample, scored in fp32, higher is
better) on the test split is recorded with the training seconds spent so far: whether
bf16 training is numerically safe for this model, at equal steps and at equal time.
Reports each run's samples/s, its training loss over the last quarter of the steps, the
final test LL and, where scores allow, each precision's test LL at the training time the
fastest one took for all its steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vocoder.data.ljspeech import audio_path
from vocoder.data.segments import SegmentDataset, UtteranceDataset
from vocoder.data.splits import read_id_list
from vocoder.devices import device_name
from vocoder.evaluate import batched_log_prob
from vocoder.models import build_model
from vocoder.precision import cpu_bf16_units
from vocoder.train.config import load_experiment_config
from vocoder.train.step import LogLikelihood, train_step

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared/data/ljspeech-mini"
CONFIG = ROOT / "recipes/pretrained/waveflow-small-cpu.yaml"


def split_files(data: Path, split: str) -> list[Path]:
    return [audio_path(data, i) for i in read_id_list(data / f"{split}.txt")]


def batches(segments: SegmentDataset, batch: int, steps: int, seed: int):
    """`steps` batches of (audio, mel) segments, cut as the trainer cuts them: the same
    ones for every precision."""
    step, epoch = 0, 0
    while True:
        segments.set_epoch(epoch)
        shuffle = torch.Generator().manual_seed(seed + epoch)
        loader = DataLoader(segments, batch, shuffle=True, generator=shuffle, drop_last=True)
        for audio, mel in loader:
            if step == steps:
                return
            yield audio, mel
            step += 1
        epoch += 1


@dataclass
class Run:
    """One precision's model, optimiser and record."""

    precision: str
    model: torch.nn.Module
    objective: LogLikelihood
    optimizer: torch.optim.Optimizer
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0  # training steps only, scoring excluded
    # (steps, training seconds so far, test LL)
    scores: list[tuple[int, float, float]] = field(default_factory=list)


def new_run(config, precision: str, seed: int) -> Run:
    torch.manual_seed(seed)  # the same initialisation for every precision
    model = build_model(config.model)
    return Run(
        precision,
        model,
        LogLikelihood(model),
        torch.optim.Adam(model.parameters(), lr=config.train.lr),
    )


def held_out_ll(model: torch.nn.Module, audio: list, mels: list) -> float:
    """Mean test LL, one clip at a time (on a CPU batching does not pay; see README)."""
    model.eval()
    with torch.no_grad():
        score = statistics.mean(
            batched_log_prob(model, [a], [m])[0] for a, m in zip(audio, mels, strict=True)
        )
    model.train()
    return score


def train_side_by_side(config, runs: list[Run], data, score_every: int, score) -> None:
    """Step every run on each batch in turn (the order swapping every step), timing each
    step; `score(model)` before the first step, every `score_every` steps and after the
    last."""
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    grad_clip = config.train.grad_clip
    initial = score(runs[0].model)  # every run starts from the same weights (`new_run`)
    for run in runs:
        run.scores.append((0, 0.0, initial))
    step = 0
    for step, (audio, mel) in enumerate(data, start=1):
        for run in runs if step % 2 else runs[::-1]:
            start = time.perf_counter()
            result = train_step(
                run.objective, run.optimizer, scaler, audio, mel, run.precision, grad_clip
            )
            run.seconds += time.perf_counter() - start
            run.losses.append(result.loss)
        if score_every and step % score_every == 0:
            for run in runs:
                run.scores.append((step, run.seconds, score(run.model)))
            progress = ", ".join(
                f"{r.precision} {r.scores[-1][2]:.4f} ({r.seconds:.0f} s)" for r in runs
            )
            print(f"  step {step}: test LL {progress}", flush=True)
    for run in runs:
        if run.scores[-1][0] != step:
            run.scores.append((step, run.seconds, score(run.model)))


def ll_at_time(scores: list[tuple[int, float, float]], seconds: float) -> float | None:
    """The test LL reached after `seconds` of training, interpolated linearly between the
    two scores around it; None beyond the last one."""
    for (_, t0, ll0), (_, t1, ll1) in pairwise(scores):
        if t0 <= seconds <= t1:
            return ll0 + (ll1 - ll0) * (seconds - t0) / (t1 - t0)
    return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--data", type=Path, default=DATA, help="an LJ Speech-layout folder")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=None, help="default: the config's")
    p.add_argument("--segment", type=int, default=None, help="samples; default: the config's")
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument(
        "--score-every", type=int, default=0, help="test LL every N steps (default: at the end)"
    )
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if not args.data.is_dir():
        p.error(
            f"{args.data}: no such folder; pass --data (the default LJ Speech mini is in "
            "../shared beside the development checkout, not in a clone)"
        )
    torch.set_num_threads(args.threads)
    config = load_experiment_config(args.config)
    features = config.features
    batch = args.batch or config.data.batch_size
    segment = args.segment or config.data.segment_length
    segments = SegmentDataset(split_files(args.data, "train"), features, segment, args.seed)
    test = UtteranceDataset(split_files(args.data, "test"), features)
    test_items = [test[i] for i in range(len(test))]  # each clip read and its mel made once
    test_audio = [item[0] for item in test_items]
    test_mels = [item[1] for item in test_items]
    print(
        f"# {args.config.name}: {device_name(torch.device('cpu'))}, torch "
        f"{torch.__version__}, bf16 units: {cpu_bf16_units()}, {args.threads} threads, "
        f"{args.steps} steps of batch {batch} x {segment} samples, "
        f"{len(segments)} train / {len(test)} test clips, precisions taking turns"
    )
    runs = [new_run(config, precision, args.seed) for precision in args.precisions.split(",")]
    data = batches(segments, batch, args.steps, args.seed)

    def score(model: torch.nn.Module) -> float:
        return held_out_ll(model, test_audio, test_mels)

    train_side_by_side(config, runs, data, args.score_every, score)
    # equal time: where each run stood when the fastest had spent all its seconds
    budget = min(run.seconds for run in runs)
    print(
        f"{'precision':<9} {'samples/s':>9} {'last-quarter loss':>17} {'test LL':>8} "
        f"{'LL at ' + format(budget, '.0f') + ' s':>12}"
    )
    rows = []
    for run in runs:
        tail = run.losses[-max(1, args.steps // 4) :]
        at_budget = ll_at_time(run.scores, budget)
        row = {
            "precision": run.precision,
            "samples_per_s": args.steps * batch * segment / run.seconds,
            "last_quarter_loss": statistics.mean(tail),
            "test_ll": run.scores[-1][2],
            "test_ll_at_equal_time": at_budget,
            "scores": [{"steps": n, "train_seconds": t, "test_ll": ll} for n, t, ll in run.scores],
            "losses": run.losses,
        }
        rows.append(row)
        equal = "-" if at_budget is None else f"{at_budget:.4f}"
        print(
            f"{run.precision:<9} {row['samples_per_s']:>9,.0f} "
            f"{row['last_quarter_loss']:>17.4f} {row['test_ll']:>8.4f} {equal:>12}"
        )
        print("  " + ", ".join(f"{n}: {ll:.4f} ({t:.0f} s)" for n, t, ll in run.scores))
    if args.json:
        info = {
            "config": str(args.config),
            "steps": args.steps,
            "batch": batch,
            "segment": segment,
            "threads": args.threads,
            "bf16_units": cpu_bf16_units(),
            "torch": torch.__version__,
            "processor": device_name(torch.device("cpu")),
            "seed": args.seed,
            "equal_time_seconds": budget,
        }
        args.json.write_text(json.dumps({"run": info, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

"""CPU training in fp32 vs bf16 autocast: speed and what the trained model scores.

    python bench/train_precision.py --steps 300 --json /tmp/train_precision.json

Trains one model config (default: the shipped small model's recipe) from the same
initialisation on the same sequence of batches (random segments of LJ Speech mini's train
split, cut by the trainer's `SegmentDataset`) once per precision, on the CPU, with the
trainer's own step (`train_step`: autocast, backward, the config's clipping, Adam).
Reports each run's samples/s, its training loss over the last quarter of the steps, and
the held-out log-likelihood (nats per sample, scored in fp32, higher is better) of the
final weights on the test split: the measure of whether bf16 training is numerically safe
for this model, not only faster.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vocoder.data.ljspeech import audio_path
from vocoder.data.segments import SegmentDataset, UtteranceDataset
from vocoder.data.splits import read_id_list
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


def train(config, precision: str, data, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build_model(config.model)
    objective = LogLikelihood(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    grad_clip = config.train.grad_clip
    losses, start = [], time.perf_counter()
    for audio, mel in data:
        result = train_step(objective, optimizer, scaler, audio, mel, precision, grad_clip)
        losses.append(result.loss)
    seconds = time.perf_counter() - start
    return {"model": model, "losses": losses, "seconds": seconds}


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
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_experiment_config(args.config)
    features = config.features
    batch = args.batch or config.data.batch_size
    segment = args.segment or config.data.segment_length
    segments = SegmentDataset(split_files(args.data, "train"), features, segment, args.seed)
    test = UtteranceDataset(split_files(args.data, "test"), features)
    test_audio, test_mels = zip(*(test[i][:2] for i in range(len(test))), strict=True)
    print(
        f"# {args.config.name}: {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, bf16 units: {cpu_bf16_units()}, {args.threads} threads, "
        f"{args.steps} steps of batch {batch} x {segment} samples, "
        f"{len(segments)} train / {len(test)} test clips"
    )
    print(f"{'precision':<9} {'samples/s':>9} {'last-quarter loss':>17} {'test LL':>8}")
    rows = []
    for precision in args.precisions.split(","):
        data = batches(segments, batch, args.steps, args.seed)
        run = train(config, precision, data, args.seed)
        with torch.no_grad():
            model = run["model"].eval()
            test_ll = statistics.mean(batched_log_prob(model, list(test_audio), list(test_mels)))
        tail = run["losses"][-max(1, args.steps // 4) :]
        row = {
            "precision": precision,
            "samples_per_s": args.steps * batch * segment / run["seconds"],
            "last_quarter_loss": statistics.mean(tail),
            "test_ll": test_ll,
            "losses": run["losses"],
        }
        rows.append(row)
        print(
            f"{precision:<9} {row['samples_per_s']:>9,.0f} {row['last_quarter_loss']:>17.4f} "
            f"{test_ll:>8.4f}",
            flush=True,
        )
    if args.json:
        info = {
            "config": str(args.config),
            "steps": args.steps,
            "batch": batch,
            "segment": segment,
            "threads": args.threads,
            "bf16_units": cpu_bf16_units(),
        }
        args.json.write_text(json.dumps({"run": info, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

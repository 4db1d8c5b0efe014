"""How often a process of a 2-process gloo job aborts as it exits, by the way it exits.

    python bench/distributed_exit.py --runs 30 --busy 2

Each run starts two processes under torchrun that join a gloo group, take three DDP steps on a small
model, gather an object from every rank and meet at a barrier (as the trainer's end does),
leave the group, and exit: through the interpreter's teardown (`sys.exit`, what
`python -m vocoder` did before), or through `vocoder.cli.end_process`. A gloo thread that
is still releasing the last collective's tensors when teardown begins aborts the process
(SIGABRT). It prints, for each way, how many of the --runs jobs had a process abort.
Aborts are timing-dependent: they need a busy machine, which --busy N processes spinning
alongside make (a test suite on a CI runner is one).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import torch
import torch.distributed as dist
from torch import nn

EXITS = ("teardown", "end_process")


def worker(exit_by: str) -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(
        nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1))
    )
    optimizer = torch.optim.Adam(model.parameters())
    for _ in range(3):
        model(torch.randn(8, 64)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    gathered: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, "digest")
    dist.barrier()
    dist.destroy_process_group()
    if exit_by == "teardown":
        sys.exit(0)
    from vocoder.cli import end_process

    end_process(0)


def job_aborts(exit_by: str) -> bool:
    """Run one 2-process job under torchrun; whether one of its processes ended by SIGABRT."""
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         __file__, "--worker", exit_by],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    aborted = "exitcode: -6" in done.stderr
    if done.returncode != 0 and not aborted:
        raise RuntimeError(f"the job failed otherwise:\n{done.stderr[-2000:]}")
    return aborted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="jobs for each way (default 30)")
    parser.add_argument("--busy", type=int, default=2, help="processes spinning alongside")
    parser.add_argument("--worker", choices=EXITS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
    print(
        f"torch {torch.__version__}, 2 processes, gloo, {os.cpu_count()} CPU cores, "
        f"{args.busy} busy processes alongside"
    )
    spin = [sys.executable, "-c", "while True: pass"]
    busy = [subprocess.Popen(spin) for _ in range(args.busy)]
    try:
        aborted = {exit_by: 0 for exit_by in EXITS}
        for _ in range(args.runs):  # the two ways in turn, under the same load
            for exit_by in EXITS:
                aborted[exit_by] += job_aborts(exit_by)
    finally:
        for process in busy:
            process.kill()
    for exit_by, count in aborted.items():
        print(f"{exit_by:12s} {count} of {args.runs} jobs had a process abort (SIGABRT)")


if __name__ == "__main__":
    main()

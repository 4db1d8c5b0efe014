"""Summary figures for the registry, from `vocoder evaluate` reports and a synthesize log.

    python recipes/pretrained/collect_figures.py exp/pretrained/eval/fp32-ljspeech-mini.json \
        exp/pretrained/eval/fp32-male-reader.json \
        --synthesize-log exp/pretrained/eval/synthesize.log \
        --other-dtype fp16 exp/pretrained/eval/fp16-*.json --out recipes/pretrained/figures.json

Means are over all test clips of the reports together (`EvalReport.summary` of their
files pooled: each clip counts once, NaN scores such as PESQ on a clip it cannot score are
left out), with each report's own means under "per_split". The real-time factor is the
one `vocoder synthesize` printed, with the precision it ran in. With --other-dtype, the
test LL of the weights stored in that other precision is recorded too.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from vocoder.cli import describe_error
from vocoder.errors import VocoderError
from vocoder.evaluate import EvalReport, FileScores

METRICS = {"stoi": "stoi", "pesq_wb": "pesq_wb", "log_mel_l1": "log_mel_l1", "mcd": "mcd_db"}


def _pooled(reports: list[dict]) -> dict:
    """`EvalReport.summary()` over the files of all `reports` together."""
    files = [FileScores(**f) for report in reports for f in report["files"]]
    return EvalReport(files, info={}).summary()


def _split(path: Path) -> str:
    return next(s for s in ("ljspeech-mini", "male-reader") if s in path.stem)


def _rounded(summary: dict, system: str) -> dict:
    return {key: round(summary[system][metric], 4) for key, metric in METRICS.items()}


def figures(reports: dict[str, dict], synthesize_log: str | None) -> dict:
    pooled = _pooled(list(reports.values()))
    splits = [f"{name} test ({len(r['files'])} clips)" for name, r in reports.items()]
    out: dict = {
        "split": " + ".join(splits),
        "sigma": next(iter(reports.values()))["info"]["sigma"],
        "ll": round(pooled["ll"], 4),
        **_rounded(pooled, "model"),
        "griffin_lim": _rounded(pooled, "griffin_lim"),
        "per_split": {
            name: {"ll": round(r["summary"]["ll"], 4), **_rounded(r["summary"], "model")}
            for name, r in reports.items()
        },
    }
    if synthesize_log:
        out.update(cpu_speed(synthesize_log))
    return out


def cpu_speed(synthesize_log: str) -> dict:
    """The real-time factor of the run's total (its last line) and the precision it ran in
    (its first: "model NAME (...) on cpu, bf16 (default: ...); ..."), or {}."""
    found = re.findall(r"of audio in ([\d.]+) s \(([\d.]+)x real time\)", synthesize_log)
    if not found:
        return {}
    precision = re.search(r"\) on \w+, (\w+)", synthesize_log)
    return {
        "cpu_speed_x_real_time": float(found[-1][1]),
        "cpu_speed_precision": precision.group(1) if precision else "unknown",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="<...>-<split>.json reports")
    parser.add_argument("--synthesize-log", type=Path)
    parser.add_argument(
        "--other-dtype", nargs="+", metavar=("DTYPE", "REPORT"), help="DTYPE and its reports"
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    reports = {_split(path): json.loads(path.read_text()) for path in args.reports}
    log = args.synthesize_log.read_text() if args.synthesize_log else None
    result = figures(reports, log)
    if args.other_dtype:
        dtype, *paths = args.other_dtype
        other = _pooled([json.loads(Path(p).read_text()) for p in paths])
        result["ll_other_dtype"] = {"dtype": dtype, "ll": round(other["ll"], 4)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    try:
        main()
    except (VocoderError, OSError) as e:  # a missing or unusable input: one line, exit 2,
        print(f"error: {describe_error(e)}", file=sys.stderr)  # as vocoder's commands say it
        sys.exit(2)

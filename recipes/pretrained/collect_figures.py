"""Summary figures for the registry, from `vocoder evaluate` reports and a synthesize log.

    python recipes/pretrained/collect_figures.py exp/pretrained/eval/fp32-ljspeech-mini.json \
        exp/pretrained/eval/fp32-male-reader.json \
        --synthesize-log exp/pretrained/eval/synthesize.log \
        --other-dtype fp16 exp/pretrained/eval/fp16-*.json --out recipes/pretrained/figures.json

Means are over all test clips of the reports together (each clip counts once; NaN scores,
e.g. PESQ on a clip it cannot score, are left out), with each report's own means under
"per_split". The real-time factor is the one `vocoder synthesize` printed. With
--other-dtype, the test LL of the weights stored in that other precision is recorded too.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

METRICS = {"stoi": "stoi", "pesq_wb": "pesq_wb", "log_mel_l1": "log_mel_l1", "mcd": "mcd_db"}


def _mean(values: list[float]) -> float:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return round(sum(kept) / len(kept), 4) if kept else math.nan


def _split(path: Path) -> str:
    return next(s for s in ("ljspeech-mini", "male-reader") if s in path.stem)


def figures(reports: dict[str, dict], synthesize_log: str | None) -> dict:
    files = [f for report in reports.values() for f in report["files"]]
    splits = [f"{name} test ({len(r['files'])} clips)" for name, r in reports.items()]
    out: dict = {
        "split": " + ".join(splits),
        "sigma": next(iter(reports.values()))["info"]["sigma"],
        "ll": _mean([f["ll"] for f in files]),
    }
    for key, metric in METRICS.items():
        out[key] = _mean([f["systems"]["model"][metric] for f in files])
    out["griffin_lim"] = {
        key: _mean([f["systems"]["griffin_lim"][metric] for f in files])
        for key, metric in METRICS.items()
    }
    out["per_split"] = {
        name: {
            "ll": round(r["summary"]["ll"], 4),
            **{k: round(r["summary"]["model"][m], 4) for k, m in METRICS.items()},
        }
        for name, r in reports.items()
    }
    if synthesize_log:
        found = re.findall(r"of audio in ([\d.]+) s \(([\d.]+)x real time\)", synthesize_log)
        if found:
            out["cpu_speed_x_real_time"] = float(found[-1][1])
    return out


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
        files = [f for p in paths for f in json.loads(Path(p).read_text())["files"]]
        result["ll_other_dtype"] = {"dtype": dtype, "ll": _mean([f["ll"] for f in files])}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

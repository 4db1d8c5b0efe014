"""`vocoder models`: the pretrained models in the registry, and where each one is."""

from __future__ import annotations

import argparse

from vocoder.pretrained import (
    ModelEntry,
    cache_root,
    get_model,
    list_models,
    model_location,
    registry_path,
)

HELP = "list the pretrained models in the registry"

# summary keys shown in the table's quality column, with their labels and formats
QUALITY_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("ll", "LL", "{:.2f}"),
    ("stoi", "STOI", "{:.2f}"),
    ("pesq_wb", "PESQ", "{:.2f}"),
    ("log_mel_l1", "mel-L1", "{:.2f}"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name",
        nargs="?",
        metavar="NAME",
        help="show this model's details (files, checksums, card, test figures); default: list "
        "them all",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="download cache to look in (default: $VOCODER_CACHE, else ~/.cache/vocoder)",
    )


def quality_summary(entry: ModelEntry) -> str:
    """A short test-split quality string from the entry's summary figures."""
    parts = [
        f"{label} {fmt.format(entry.summary[key])}"
        for key, label, fmt in QUALITY_COLUMNS
        if isinstance(entry.summary.get(key), int | float)
    ]
    return ", ".join(parts) or "-"


def table_rows(entries: list[ModelEntry], cache_dir: str | None = None) -> list[list[str]]:
    rows = [["name", "family", "params", "data", "test quality", "default", "where"]]
    for e in entries:
        rows.append(
            [
                e.name,
                e.family,
                f"{e.parameters / 1e6:.2f} M",
                e.data,
                quality_summary(e),
                "*" if e.default else "",
                model_location(e, cache_dir),
            ]
        )
    return rows


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def summary_lines(summary: dict, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, value) for each figure of a (nested) summary: `griffin_lim.stoi`, not a
    printed dict."""
    lines = []
    for key, value in summary.items():
        if isinstance(value, dict) and value:
            lines += summary_lines(value, f"{prefix}{key}.")
        else:
            lines.append((f"{prefix}{key}", str(value)))
    return lines


def _print_details(entry: ModelEntry, cache_dir: str | None) -> None:
    lines = [
        ("name", entry.name + ("  (default)" if entry.default else "")),
        ("description", entry.description),
        ("family", entry.family),
        ("parameters", f"{entry.parameters:,} (inference form)"),
        ("data", entry.data),
        ("hardware", entry.hardware or "-"),
        ("where", model_location(entry, cache_dir)),
        ("url", entry.url or "- (not hosted; shipped with the source tree only)"),
        ("card", str(registry_path().parent / entry.card) if entry.card else "-"),
    ]
    lines += [(f"file {f.name}", f"{f.size:,} bytes, sha256 {f.sha256}") for f in entry.files]
    lines += [(f"test {key}", value) for key, value in summary_lines(entry.summary)]
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        print(f"{label:<{width}}  {value}")


def run(args: argparse.Namespace) -> int:
    if args.name:
        _print_details(get_model(args.name), args.cache_dir)
        return 0
    entries = list_models()
    _print_table(table_rows(entries, args.cache_dir))
    print(
        f"\n* default model. shipped: in {registry_path().parent}; cached: in "
        f"{cache_root(args.cache_dir)}; remote: downloaded on first use. "
        "Details: vocoder models NAME"
    )
    return 0

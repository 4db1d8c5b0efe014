"""`vocoder models`: the pretrained models in the registry, and where each one is; then the
weights published elsewhere, with the `vocoder import` line for each, and a download helper
for those on a plain HTTPS host (`--download NAME`)."""

from __future__ import annotations

import argparse
import shlex
import urllib.parse
from pathlib import Path

from vocoder.errors import InputError
from vocoder.pretrained import (
    MANUAL_HOSTS,
    ModelEntry,
    PublishedWeights,
    cache_root,
    download_published,
    get_published,
    list_models,
    load_published,
    model_location,
    registry_path,
    resolve_model_path,
)
from vocoder.pretrained.download import file_in_the_way

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
        help="show one model's details (files, checksums, card, test figures) or one published "
        "entry's (URL, config, import line); default: list them all",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="download cache to look in (default: $VOCODER_CACHE, else ~/.cache/vocoder)",
    )
    parser.add_argument(
        "--download",
        metavar="NAME",
        help="download these published weights (plain HTTPS hosts only; Google Drive files "
        "are downloaded by hand), then print the 'vocoder import' line to run; for a "
        "pretrained model, fetch it into the cache (a shipped one needs no download)",
    )
    parser.add_argument(
        "--to",
        "--out",
        metavar="DIR",
        help="with --download: the folder to save into (default: the current folder); --out "
        "is the same option",
    )
    parser.add_argument(
        "--force", action="store_true", help="with --download: replace an existing file"
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
        ("where", _where(entry, cache_dir)),
        ("url", entry.url or "- (not hosted; shipped with the source tree only)"),
        ("card", str(registry_path().parent / entry.card) if entry.card else "-"),
    ]
    lines += [(f"file {f.name}", f"{f.size:,} bytes, sha256 {f.sha256}") for f in entry.files]
    lines += [(f"test {key}", value) for key, value in summary_lines(entry.summary)]
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        print(f"{label:<{width}}  {value}")


# ---- published weights ----


def _size(entry: PublishedWeights) -> str:
    return f"{entry.size / 1e6:,.0f} MB" if entry.size else "?"


def _how(entry: PublishedWeights) -> str:
    if entry.download == "direct":
        return "--download"
    drive = urllib.parse.urlsplit(entry.urls[0]).hostname in MANUAL_HOSTS
    return "by hand (Google Drive)" if drive else "by hand"


def published_rows(entries: list[PublishedWeights]) -> list[list[str]]:
    rows = [["name", "family", "source", "size", "test LL", "licence", "get it"]]
    for e in entries:
        ll = f"{e.ll:.4f}" if e.ll is not None else "-"
        rows.append([e.name, e.family, e.source, _size(e), ll, e.licence, _how(e)])
    return rows


def _print_published(entries: list[PublishedWeights]) -> None:
    print("\nPublished weights (download, then `vocoder import`):")
    rows = published_rows(entries)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row, entry in zip(rows, [None, *entries], strict=True):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if entry is not None:
            print(f"    {entry.import_command}")
    print(
        "\nsize: approximate, '?' unknown; test LL in nats per sample, as published. Details "
        "(URL, config): vocoder models NAME; plain HTTPS hosts: vocoder models --download NAME"
    )


def _print_published_details(entry: PublishedWeights) -> None:
    if entry.download == "direct":
        check = "checked against the sha256" if entry.sha256 else "unverified: no published sha256"
        download = f"vocoder models --download {entry.name} [--to DIR]  (plain HTTPS; {check})"
    else:
        download = (
            f"{_how(entry)}, in a browser (vocoder models --download refuses it): save the file "
            f"as {entry.file}"
        )
    lines = [
        ("name", f"{entry.name}  (published elsewhere, not shipped)"),
        ("description", entry.description),
        ("family", entry.family),
        ("source", entry.source),
        ("licence", entry.licence),
        ("data", entry.data or "-"),
        ("page", entry.page),
        *[("url", url) for url in entry.urls],
        ("file", entry.file),
        ("size", f"about {entry.size:,} bytes" if entry.size else "unknown"),
        ("sha256", entry.sha256 or "unknown (not published: a download cannot be verified)"),
        ("test LL", f"{entry.ll} nats/sample (as published)" if entry.ll is not None else "-"),
        (
            "parameters",
            f"{entry.parameters_m} M (as published)" if entry.parameters_m is not None else "-",
        ),
        ("config", f"{entry.config}: {entry.config_source}" if entry.config else "- (none needed)"),
        ("download", download),
        ("import", entry.import_command),
        ("notes", entry.notes or "-"),
    ]
    width = max(len(label) for label, _ in lines)
    for label, value in lines:
        print(f"{label:<{width}}  {value}")


def _find_published(name: str) -> PublishedWeights:
    """The published entry `name`; else an `InputError` listing every known name."""
    entry = get_published(name)
    if entry is None:
        shipped = ", ".join(e.name for e in list_models()) or "none"
        listed = ", ".join(e.name for e in load_published()) or "none"
        raise InputError(
            name, f"not a pretrained model (known: {shipped}) nor published weights ({listed})"
        )
    return entry


def _where(entry: ModelEntry, cache_dir: str | None) -> str:
    """`model_location`, and for a damaged copy the loader's error: which file, and the fix."""
    where = model_location(entry, cache_dir)
    if where == "damaged":
        try:
            resolve_model_path(entry.name, cache_dir)
        except InputError as e:
            return f"damaged: {e}"
    return where


def _download_model(entry: ModelEntry, args: argparse.Namespace) -> int:
    """`--download` of a registry model: fetched into the cache, unless shipped or cached."""
    if args.to or args.force:
        raise InputError(
            "--to" if args.to else "--force",
            f"goes with published weights; {entry.name} is a pretrained model, used by name "
            "from the package or the download cache (--cache-dir DIR)",
        )
    where = model_location(entry, args.cache_dir)
    path = resolve_model_path(entry.name, args.cache_dir)  # verifies; downloads a remote one
    if where == "shipped":
        print(f"{entry.name}: shipped with the package, no download needed ({path})")
    elif where == "cached":
        print(f"{entry.name}: already downloaded ({path}, sha256 checked)")
    else:
        print(f"saved {path.parent} ({len(entry.files)} files, sha256 checked)")
    env = f"VOCODER_CACHE={shlex.quote(args.cache_dir)} " if args.cache_dir else ""
    print(f"next: {env}vocoder synthesize MELS --out DIR --model {entry.name}")
    return 0


def _download(args: argparse.Namespace) -> int:
    model = next((e for e in list_models() if e.name == args.download), None)
    if model is not None:
        return _download_model(model, args)
    entry = _find_published(args.download)
    folder = Path(args.to or ".")
    if (blocker := file_in_the_way(folder)) is not None:
        raise InputError("--to", f"must be a folder; {blocker} is a file")
    path = download_published(entry, folder, force=args.force)
    check = "sha256 checked" if entry.sha256 else "unverified: the source publishes no sha256"
    print(f"saved {path} ({path.stat().st_size:,} bytes; {check})")
    print(f"next: {entry.import_line(path if args.to else None)}")
    return 0


def run(args: argparse.Namespace) -> int:
    cache_root(args.cache_dir)  # a cache that is a file: said before anything is listed
    if args.download:
        return _download(args)
    if args.to or args.force:
        raise InputError("--to" if args.to else "--force", "goes with --download NAME")
    if args.name:
        entry = next((e for e in list_models() if e.name == args.name), None)
        if entry is not None:
            _print_details(entry, args.cache_dir)
        else:
            _print_published_details(_find_published(args.name))
        return 0
    entries = list_models()
    _print_table(table_rows(entries, args.cache_dir))
    print(
        f"\n* default model. shipped: in {registry_path().parent}; cached: in "
        f"{cache_root(args.cache_dir)}; remote: downloaded on first use; damaged: a file "
        "fails its size or sha256. Details and fixes: vocoder models NAME"
    )
    published = load_published()
    if published:
        _print_published(published)
    return 0

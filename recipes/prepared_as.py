"""Check that a recipe's prepared data folder is the one its stage 1 would make now.

    python recipes/prepared_as.py DATA_DIR [--source DIR] [--split NAME | --layout NAME]

Prints the folder's split. Without --split, --layout with --source expects the split that
`vocoder prepare` would choose by default for that folder now. A folder prepared from
other recordings (`--source`), from the same folder before its recordings or lists changed,
or with another split is one line on stderr and exit 2: kept silently, a rerun with a new
split could train on the new test clips, or a second voice reuse the first one's data.
"""

import argparse
import json
import sys
from pathlib import Path

from vocoder.data.prepare import default_split, source_fingerprint

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("data_dir", type=Path)
parser.add_argument("--source", type=Path)
parser.add_argument("--split")
parser.add_argument("--layout", choices=["folder", "ljspeech"])
args = parser.parse_args()
if not args.split and args.layout and args.source:
    args.split = default_split(args.source, args.layout)
manifest = json.loads((args.data_dir / "manifest.json").read_text(encoding="utf-8"))
source = args.source.resolve() if args.source else None
if args.split and manifest["split"] != args.split:
    problem = f"was prepared with the {manifest['split']} split, not {args.split}"
elif source and Path(manifest["source"]) != source:
    problem = f"was prepared from {manifest['source']}, not {source}"
elif source and manifest.get("source_fingerprint", "") not in (
    "",  # a folder prepared before the manifest recorded it: not checked
    source_fingerprint(source, exclude=args.data_dir),
):
    problem = f"was prepared from {source} as it was before its recordings or lists changed"
else:
    print(manifest["split"])
    sys.exit(0)
sys.exit(
    f"error: {args.data_dir} {problem}: delete it to prepare it again, or give another --data-dir"
)

"""The commands that work on data sets themselves: ``convert``."""

from __future__ import annotations

import argparse

from imgcls.cli._options import DATA_HELP, add_source_options, print_json
from imgcls.system.wording import count


def add_convert(p: argparse.ArgumentParser) -> None:
    from imgcls.data.convert import TARGETS

    p.add_argument("data", help=DATA_HELP)
    p.add_argument("output", help="the folder (or, for --to manifest, the .csv or .jsonl file) to write")
    p.add_argument("--to", required=True, choices=TARGETS, help="the layout to write")
    add_source_options(p, from_config=False)
    p.add_argument("--json", action="store_true", help="print what was written as JSON")


def run_convert(args: argparse.Namespace) -> int:
    from imgcls.data.convert import convert
    from imgcls.data.sources import open_source

    scan = open_source(args.data, data_format=args.data_format, label_set=args.label_set)
    done = convert(scan, args.output, to=args.to)
    if args.json:
        print_json({"output": str(done.output), "images": done.images, "files": done.files})
        return 0
    written = f"{count(done.images, 'image')} of {count(len(scan.classes), 'class')}"
    print(f"wrote {written} to {done.output} ({args.to})")
    return 0

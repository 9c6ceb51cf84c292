"""A fine-tune with and without ``--compile`` (torch.compile), side by side in one session.

    .venv/bin/python benchmarks/compile.py                    # clothing_small, Lite0, the CPU default
    .venv/bin/python benchmarks/compile.py --unfreeze all     # the whole network on images
    .venv/bin/python benchmarks/compile.py --data DIR --epochs 4 --device cuda

Both runs are the whole ``imgcls train --strategy finetune`` command on the same data with the
same seed, on a feature cache that a warm-up run has filled (so neither pays for extraction),
and a fresh inductor cache for the compiled run (so its compile time is counted). Reported per
run: the first epoch's seconds (the compiled run compiles there), the mean seconds of the
later epochs (what compiling buys per epoch), the whole command's wall time, and the val
accuracy. Prints a markdown table and puts it on ``docs/benchmarks.md`` between the page's
``<!-- compile:start -->`` and ``<!-- compile:end -->`` markers. Nothing here is asserted by tests.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _page import DATASETS, put_on_page, stamp


def finetune(data: Path, run: Path, cache: Path, args: argparse.Namespace, *extra: str) -> float:
    """Wall seconds of one ``imgcls train --strategy finetune`` command."""
    command = [
        sys.executable, "-m", "imgcls", "train", str(data), "-o", str(run), "--cache-dir", str(cache),
        "--strategy", "finetune", "--epochs", str(args.epochs), "--patience", str(args.epochs),
        "--unfreeze", args.unfreeze, "--device", args.device, "-q", *extra,
    ]  # fmt: skip
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(run.parent / f"inductor-{run.name}")}
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - started


def row(label: str, run: Path, wall: float) -> str:
    epochs = [r for r in csv.DictReader((run / "history.csv").open()) if int(r["epoch"]) > 0]
    first, later = float(epochs[0]["seconds"]), [float(r["seconds"]) for r in epochs[1:]]
    mean_later = f"{sum(later) / len(later):.1f}" if later else "-"
    accuracy = json.loads((run / "metrics.json").read_text())["val"]["accuracy"]
    return f"| {label} | {first:.1f} | {mean_later} | {wall:.0f} | {accuracy:.3f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATASETS / "clothing_small")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--unfreeze", default="auto", help="as imgcls train's --unfreeze (default: auto)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        cache = tmp / "cache"
        warm = argparse.Namespace(**{**vars(args), "epochs": 1})
        finetune(args.data, tmp / "warm", cache, warm)  # fills the feature and activation cache
        rows = [
            row(label, tmp / label, finetune(args.data, tmp / label, cache, args, *extra))
            for label, extra in (("eager", ()), ("compiled", ("--compile",)))
        ]
    lines = [
        f"{stamp(' '.join(['python benchmarks/compile.py', *sys.argv[1:]]))}; data {args.data.name}, "
        f"efficientnet_lite0, --unfreeze {args.unfreeze}, --device {args.device}, {args.epochs} epochs",
        "",
        "| run | epoch 1 s | later epochs, mean s | whole command s | val accuracy |",
        "| --- | --- | --- | --- | --- |",
        *rows,
    ]
    report = "\n".join(lines)
    print(report)
    put_on_page("compile", report)


if __name__ == "__main__":
    main()

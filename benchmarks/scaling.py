"""One process against two under torchrun: feature extraction and fine-tuning images/s.

    .venv/bin/python benchmarks/scaling.py            # clothing_small, Lite0, this machine
    .venv/bin/python benchmarks/scaling.py --data DIR --epochs 2

Each configuration runs the whole ``imgcls train`` command on the same data, one after the
other in one session:

- ``1 process``: ``python -m imgcls train`` with every core's threads;
- ``torchrun, N processes``: ``torchrun --standalone --nproc-per-node N -m imgcls train``
  with the cores divided between the processes (``OMP_NUM_THREADS``).

Extraction: the probe on an empty feature cache; images/s is the number of images over the
run's extraction time (``metrics.json``: ``timing.extract_s``, rank 0's, which waits for the
slowest rank at the barrier). Fine-tuning: the CPU default (last stages on cached
activations) on a cache that already holds the activations, ``--epochs`` epochs; images/s is
the mean of ``history.csv``'s per-epoch figure (training images of all ranks over the epoch's
seconds). Prints a markdown table and puts it on ``docs/benchmarks.md`` between the page's
``<!-- scaling:start -->`` and ``<!-- scaling:end -->`` markers. Nothing here is asserted by tests.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from _page import DATASETS, put_on_page, stamp


def command(processes: int) -> tuple[list[str], dict[str, str]]:
    """How to start ``imgcls`` with ``processes`` processes, and its environment."""
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // processes)), "IMGCLS_NO_REEXEC": "1"}
    if processes == 1:
        return [sys.executable, "-m", "imgcls"], env
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    return [*launcher, str(processes), "-m", "imgcls"], env


def train(processes: int, data: Path, run: Path, cache: Path, *extra: str) -> Path:
    start, env = command(processes)
    args = ["train", str(data), "-o", str(run), "--cache-dir", str(cache), "-q", *extra]
    subprocess.run([*start, *args], check=True, capture_output=True, env=env)
    return run


def extraction(processes: int, data: Path, tmp: Path) -> tuple[int, float]:
    """(images, extraction seconds) of a probe on an empty cache."""
    run = train(processes, data, tmp / f"probe{processes}", tmp / f"cache-probe{processes}")
    metrics = json.loads((run / "metrics.json").read_text())
    images = sum(metrics[s]["n"] for s in ("train", "val", "test") if s in metrics)
    return images, metrics["timing"]["extract_s"]


def finetune(processes: int, data: Path, tmp: Path, cache: Path, epochs: int) -> float:
    """Mean training images/s over the epochs of a CPU fine-tune on cached activations."""
    args = ["--strategy", "finetune", "--epochs", str(epochs), "--patience", str(epochs)]
    run = train(processes, data, tmp / f"finetune{processes}", cache, *args)
    rows = [r for r in csv.DictReader((run / "history.csv").open()) if int(r["epoch"]) > 0]
    return sum(float(r["images_per_s"]) for r in rows) / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATASETS / "clothing_small")
    parser.add_argument("--processes", type=int, default=2, help="the torchrun row's process count")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        activations = tmp / "cache-activations"
        warm = ["--strategy", "finetune", "--epochs", "1"]
        train(1, args.data, tmp / "warm", activations, *warm)  # fills the activation cache
        for processes in (1, args.processes):
            images, seconds = extraction(processes, args.data, tmp)
            tuned = finetune(processes, args.data, tmp, activations, args.epochs)
            label = "1 process" if processes == 1 else f"torchrun, {processes} processes"
            rows.append((label, processes, images, seconds, tuned))
    cores = os.cpu_count() or 1
    lines = [
        f"{stamp('python benchmarks/scaling.py')}; data {args.data.name}, efficientnet_lite0",
        "",
        "| run | threads per process | extraction images/s | fine-tune images/s (cached activations) |",
        "| --- | --- | --- | --- |",
    ]
    for label, processes, images, seconds, tuned in rows:
        lines.append(f"| {label} | {max(1, cores // processes)} | {images / seconds:.1f} | {tuned:.0f} |")
    report = "\n".join(lines)
    print(report)
    put_on_page("scaling", report)


if __name__ == "__main__":
    main()

"""Time-to-accuracy of the default probe, end to end (process start to saved model).

Runs ``imgcls train DATA`` as a user would, once with an empty feature cache and once with
the cache warm, and prints wall time and validation/test accuracy for each.

    .venv/bin/python benchmarks/probe_time.py ../shared/datasets/hymenoptera [--backbone NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def run_once(data: str, backbone: str, cache: Path, output: Path) -> dict:
    env = dict(os.environ, IMGCLS_CACHE_DIR=str(cache))
    command = ["imgcls", "train", data, "--backbone", backbone, "--output", str(output), "--overwrite", "-q"]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    metrics = json.loads((output / "metrics.json").read_text())
    result = {"wall_s": round(wall, 2), "in_process_s": metrics["timing"]["total_s"]}
    for split in ("val", "test"):
        if split in metrics:
            result[f"{split}_accuracy"] = round(metrics[split]["accuracy"], 4)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("data")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imgcls-bench-"))
    try:
        cold = run_once(args.data, args.backbone, work / "cache", work / "run-cold")
        warm = run_once(args.data, args.backbone, work / "cache", work / "run-warm")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(f"data: {args.data}  backbone: {args.backbone}")
    print("| run | wall s (process start to saved model) | in-process s | accuracy |")
    print("| --- | --- | --- | --- |")
    for name, result in (("cold cache", cold), ("warm cache", warm)):
        accuracy = ", ".join(
            f"{k.removesuffix('_accuracy')} {v}" for k, v in result.items() if k.endswith("accuracy")
        )
        print(f"| {name} | {result['wall_s']} | {result['in_process_s']} | {accuracy} |")


if __name__ == "__main__":
    main()

"""Batch-32 CPU inference throughput with glibc's default allocator vs the tuned one imgcls uses.

Each setting runs in its own process (the allocator is fixed at process start), alternating,
so both see the same machine load.

    .venv/bin/python benchmarks/allocator.py [--backbone efficientnet_lite0] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

from imgcls.cli.main import ALLOCATOR_TUNABLES

CHILD = """
import sys, time, torch
from imgcls.models.backbone import build_network, prepare_for_inference
from imgcls.models.registry import get_backbone
model, _ = build_network(get_backbone(sys.argv[1]), num_classes=1000)
model = prepare_for_inference(model)
x = torch.randn(32, 3, 224, 224).contiguous(memory_format=torch.channels_last)
with torch.inference_mode():
    model(x)
    started = time.perf_counter()
    for _ in range(5):
        model(x)
print(32 * 5 / (time.perf_counter() - started))
"""


def measure(backbone: str, tunables: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    out = subprocess.run(
        [sys.executable, "-c", CHILD, backbone], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"default glibc malloc": [], "imgcls tuned": []}
    for _ in range(args.rounds):
        results["default glibc malloc"].append(measure(args.backbone, None))
        results["imgcls tuned"].append(measure(args.backbone, ALLOCATOR_TUNABLES))
    print(f"{args.backbone}, batch 32, fp32 channels_last, {os.cpu_count()} cores, {args.rounds} rounds")
    print("| allocator | images/s (median) | all rounds |")
    print("| --- | --- | --- |")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")


if __name__ == "__main__":
    main()

"""Batch-prediction throughput and HTTP serving latency, torch vs ONNX Runtime, side by side.

    .venv/bin/python benchmarks/deploy.py RUN_DIR IMAGE_FOLDER [--requests 200] [--clients 8]

RUN_DIR is a trained model (``imgcls train``); its ONNX export is made if missing. For each
runtime: ``imgcls predict RUN_DIR IMAGE_FOLDER --output`` (process start to last row, images/s),
then ``imgcls serve`` on 127.0.0.1 with CLIENTS concurrent clients each posting one image per
request (throughput, p50 and p99 latency). All traffic stays on loopback.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.server_helpers import running_server

IMGCLS = [sys.executable, "-m", "imgcls"]


def batch_rate(run_dir: Path, folder: Path, runtime: str) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "predictions.csv"
        started = time.perf_counter()
        command = [
            *IMGCLS,
            "predict",
            str(run_dir),
            str(folder),
            "--output",
            str(out),
            "--runtime",
            runtime,
            "-q",
        ]
        subprocess.run(command, check=True, capture_output=True)
        seconds = time.perf_counter() - started
        rows = sum(1 for _ in out.open()) - 1
    return rows / seconds, rows


def serving(run_dir: Path, image: bytes, runtime: str, requests: int, clients: int) -> dict[str, float]:
    with running_server(run_dir, "--runtime", runtime) as url, httpx.Client(timeout=60) as client:
        client.post(f"{url}/predict", files=[("file", ("warm.jpg", image))])

        def one(_: int) -> float:
            started = time.perf_counter()
            response = client.post(f"{url}/predict", files=[("file", ("x.jpg", image))])
            response.raise_for_status()
            return time.perf_counter() - started

        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            latencies = sorted(pool.map(one, range(requests)))
        wall = time.perf_counter() - started
        largest = client.get(f"{url}/health").json()["largest_batch"]
    return {
        "throughput": requests / wall,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "largest_batch": largest,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    if not (args.run_dir / "model" / "model.onnx").is_file():
        subprocess.run([*IMGCLS, "export", str(args.run_dir), "--format", "onnx", "-q"], check=True)
    image = next(p for p in sorted(args.folder.rglob("*.jpg"))).read_bytes()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; model {args.run_dir}; images {args.folder}"
    )
    print("| runtime | batch predict img/s (files) | serve req/s | p50 ms | p99 ms | largest batch |")
    print("| --- | --- | --- | --- | --- | --- |")
    for runtime in ("torch", "onnx"):
        rate, rows = batch_rate(args.run_dir, args.folder, runtime)
        served = serving(args.run_dir, image, runtime, args.requests, args.clients)
        print(
            f"| {runtime} | {rate:.1f} ({rows}) | {served['throughput']:.1f} | {served['p50_ms']:.0f} | "
            f"{served['p99_ms']:.0f} | {served['largest_batch']} |"
        )


if __name__ == "__main__":
    main()

"""Prediction from process start to answer, per runtime and number of images; time limits kept.

    .venv/bin/python benchmarks/predict_latency.py [--repeats 3] [--skip-time-limits] [--write]

Trains the default model on hymenoptera (its run writes ``model.onnx``), then times
``imgcls predict RUN PATHS`` as a user runs it (a new process each time, output to a pipe) for
one image, 16 images and every image of the data set, with ``--runtime torch``, ``onnx`` and
``auto``, interleaved and repeated, and prints the median. ``auto`` should match the faster of
the other two in each row. Then fine-tunes under ``--time-limit`` 30 s and 60 s and prints how
long each run took. ``--write`` puts the tables on docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _page import DATASETS, put_on_page, stamp

IMGCLS = [sys.executable, "-m", "imgcls"]
RUNTIMES = ("torch", "onnx", "auto")


def timed(command: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - started, result.stdout + result.stderr


def chosen_runtime(run_dir: Path, paths: list[str]) -> str:
    """What ``auto`` picks for these paths, from its own log line."""
    _, output = timed([*IMGCLS, "predict", str(run_dir), *paths, "--runtime", "auto", "-v"])
    line = next(line for line in output.splitlines() if line.startswith("runtime: "))
    return line.removeprefix("runtime: ").split(" ", 1)[0]


def latency_table(run_dir: Path, data: Path, repeats: int) -> str:
    images = sorted(str(p) for p in (data / "val").rglob("*.jpg"))
    cases = {
        "1 image": images[:1],
        "16 images": images[:16],
        f"{len(images)} images (a folder)": [str(data / "val")],
    }
    rows = ["| images | torch s | ONNX Runtime s | auto s | auto picks |", "| --- | --- | --- | --- | --- |"]
    for name, paths in cases.items():
        seconds: dict[str, list[float]] = {runtime: [] for runtime in RUNTIMES}
        for _ in range(repeats):
            for runtime in RUNTIMES:  # interleaved, so drift in the machine's speed hits all three
                command = [*IMGCLS, "predict", str(run_dir), *paths, "--runtime", runtime, "-q"]
                seconds[runtime].append(timed(command)[0])
        medians = [f"{statistics.median(seconds[r]):.2f}" for r in RUNTIMES]
        rows.append(f"| {name} | {' | '.join(medians)} | {chosen_runtime(run_dir, paths)} |")
    return "\n".join(rows)


def time_limit_table(data: Path, work: Path) -> str:
    rows = [
        "| --time-limit | wall s (process start to exit) | over by | epochs trained (why it stopped) |",
        "| --- | --- | --- | --- |",
    ]
    for limit in (30, 60):
        run = work / f"limit-{limit}"
        command = [*IMGCLS, "train", str(data), "--strategy", "finetune", "--time-limit", f"{limit}s"]
        wall, _ = timed([*command, "--output", str(run), "-q"])
        metrics = json.loads((run / "metrics.json").read_text())
        tuned = metrics.get("finetune", {})
        epochs = f"{tuned.get('epochs_trained', '?')} ({tuned.get('stopped') or 'finished'})"
        rows.append(f"| {limit} s | {wall:.1f} | {100 * (wall - limit) / limit:+.0f}% | {epochs} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-time-limits", action="store_true")
    parser.add_argument("--write", action="store_true", help="put the tables on docs/benchmarks.md")
    args = parser.parse_args()
    data = DATASETS / "hymenoptera"
    with tempfile.TemporaryDirectory(prefix="imgcls-latency-") as tmp:
        work = Path(tmp)
        run_dir = work / "run"
        subprocess.run([*IMGCLS, "train", str(data), "--output", str(run_dir), "-q"], check=True)
        report = [stamp(" ".join(["benchmarks/predict_latency.py", *sys.argv[1:]])), ""]
        report += [latency_table(run_dir, data, args.repeats), ""]
        if not args.skip_time_limits:
            report += [time_limit_table(data, work), ""]
    text = "\n".join(report).rstrip()
    print(text)
    if args.write:
        put_on_page("predict-latency", text)


if __name__ == "__main__":
    main()

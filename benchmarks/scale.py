"""Real size: the linear head on synthetic features, and extraction + probe on generated JPEGs.

    .venv/bin/python benchmarks/scale.py                      # both parts, the default sizes
    .venv/bin/python benchmarks/scale.py --part head --rows 10000 40000 160000 640000 --classes 100 1000
    .venv/bin/python benchmarks/scale.py --part images --images 10000 100000

(a) ``head``: for each row count and class count, synthetic 1,280-d features (Gaussian class
clusters, a linear problem with something to learn) are written to a ``.npy`` file, and a
fresh process maps it read-only and runs ``fit_linear_head`` with default settings, as the
probe does. Per row: seconds, the process's peak RSS (``ru_maxrss``) and its RSS before the
fit (imports), the features' size on disk, peak RSS over that size, the chosen C and the
accuracy on 5,000 held-out synthetic rows; then the fitted exponent of time in rows, from
40,000 to the largest row count (log-log least squares). ``--reference REV ROWS`` fits the
same files with the head of an earlier git revision too, side by side, where rows x classes is
at most ROWS x 100.

(b) ``images``: for each count, that many 96 px JPEGs of ten classes (coloured noise with a
class-coloured square, written with Pillow into a temporary folder) and one ``imgcls train``
in a fresh process on an empty feature cache: extraction images/s (``timing.extract_s``), the
whole run's seconds and peak RSS, and val accuracy.

Prints markdown tables and puts each part on ``docs/benchmarks.md`` between the page's
``<!-- scale-head:start -->`` / ``<!-- scale-head:end -->`` or ``<!-- scale-images:start -->`` /
``<!-- scale-images:end -->`` markers, with the command that measured it. Nothing here is
asserted by tests.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _page import REPO, put_on_page, stamp

DIM = 1280
TEST_ROWS = 5_000
CHUNK = 50_000


def synthetic(path: Path, rows: int, classes: int, seed: int) -> Path:
    """Features and labels on disk, written a chunk at a time (the same centres for every
    file of a class count, so held-out rows come from the same problem)."""
    # More classes crowd the same space: their centres spread wider to stay a learnable problem.
    spread = 0.12 * (classes / 100) ** 0.25
    centres = np.random.default_rng(classes).normal(0, spread, (classes, DIM)).astype(np.float32)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    features = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, DIM))
    for start in range(0, rows, CHUNK):
        part = labels[start : start + CHUNK]
        features[start : start + len(part)] = (
            rng.standard_normal((len(part), DIM), dtype=np.float32) + centres[part]
        )
    features.flush()
    del features
    np.save(path.with_suffix(".labels.npy"), labels)
    return path


def peak_rss() -> int:
    """This process's peak resident set, bytes: ``VmHWM``, which starts afresh at ``exec``
    (``ru_maxrss`` would carry the parent's peak over)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def fit_child(path: str, test_path: str, classes: int, module: str) -> None:
    """In a fresh process: map the features, fit the head (``module``'s, a linear_head.py file, or
    this tree's), print one JSON line."""
    sys.path.insert(0, str(REPO / "src"))
    if module:
        spec = importlib.util.spec_from_file_location("reference_head", module)
        reference = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        sys.modules["reference_head"] = reference  # its dataclasses look their module up
        spec.loader.exec_module(reference)  # type: ignore[union-attr]
        fit_linear_head = reference.fit_linear_head
    else:
        from imgcls.training.linear_head import fit_linear_head

    features = np.load(path, mmap_mode="r")
    labels = np.load(Path(path).with_suffix(".labels.npy"))
    before = peak_rss()
    started = time.perf_counter()
    head = fit_linear_head(features, labels, num_classes=classes, seed=0)
    seconds = time.perf_counter() - started
    peak = peak_rss()
    test = np.load(test_path)
    test_labels = np.load(Path(test_path).with_suffix(".labels.npy"))
    accuracy = float((head.logits(test).argmax(1) == test_labels).mean())
    print(json.dumps({"seconds": seconds, "peak": peak, "before": before, "c": head.c, "accuracy": accuracy}))


def head_rows(
    rows: list[int], class_counts: list[int], tmp: Path, reference: tuple[str, int] | None
) -> list[dict]:
    """Each size with this tree's head; with ``reference`` (a git revision, a row limit), that
    revision's head too, on the same files, up to the limit."""
    module = ""
    if reference is not None:
        module = str(tmp / "reference_head.py")
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{reference[0]}:src/imgcls/training/linear_head.py"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        Path(module).write_text(source)
    results = []
    for classes in class_counts:
        test = synthetic(tmp / f"test-{classes}.npy", TEST_ROWS, classes, seed=1)
        for n in rows:
            path = synthetic(tmp / f"train-{classes}-{n}.npy", n, classes, seed=0)
            heads = [("this tree", "")]
            if reference is not None and n * classes <= reference[1] * 100:
                heads.append((reference[0], module))
            for name, file in heads:
                child = [sys.executable, __file__, "--fit-child", str(path), str(test), str(classes), file]
                out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
                result = {
                    "head": name,
                    "rows": n,
                    "classes": classes,
                    "bytes": path.stat().st_size,
                    **json.loads(out.splitlines()[-1]),
                }
                print(result, flush=True)
                results.append(result)
            path.unlink()
    return results


def exponent(results: list[dict], classes: int) -> float | None:
    points = [
        (r["rows"], r["seconds"])
        for r in results
        if r["classes"] == classes and r["rows"] >= 40_000 and r["head"] == "this tree"
    ]
    if len(points) < 2:
        return None
    x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def head_report(results: list[dict]) -> str:
    lines = [
        "| head | rows | classes | features on disk | fit seconds | peak RSS | RSS before the fit "
        "| peak / features | C | held-out accuracy |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['head']} | {r['rows']:,} | {r['classes']} | {r['bytes'] / 1e9:.2f} GB | "
            f"{r['seconds']:.1f} | "
            f"{r['peak'] / 1e9:.2f} GB | {r['before'] / 1e9:.2f} GB | {r['peak'] / r['bytes']:.2f} | "
            f"{r['c']} | {r['accuracy']:.3f} |"
        )
    for classes in sorted({r["classes"] for r in results}):
        fitted = exponent(results, classes)
        if fitted is not None:
            lines.append(
                f"\nFitted exponent of time in rows, {classes} classes, 40,000 rows and up: **{fitted:.2f}**"
            )
    return "\n".join(lines)


def write_images(folder: Path, count: int) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, (10, 3))
    for i in range(count):
        label = i % 10
        pixels = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8) // 2 + 64
        x, y = rng.integers(0, 48, 2)
        pixels[y : y + 40, x : x + 40] = colours[label]
        target = folder / f"class{label}"
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(target / f"{i:07d}.jpg", quality=85)
    return folder


def image_rows(counts: list[int], tmp: Path) -> list[dict]:
    results = []
    for count in counts:
        data = write_images(tmp / f"images-{count}", count)
        run = tmp / f"run-{count}"
        command = [
            sys.executable,
            "-m",
            "imgcls",
            "train",
            str(data),
            "-o",
            str(run),
            "-q",
            "--cache-dir",
            str(tmp / f"cache-{count}"),
        ]
        timer = [sys.executable, __file__, "--timed-child", *command]
        out = json.loads(
            subprocess.run(timer, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
        )
        metrics = json.loads((run / "metrics.json").read_text())
        images = sum(metrics[s]["n"] for s in ("train", "val", "test") if s in metrics)
        results.append(
            {
                "images": images,
                "extract_s": metrics["timing"]["extract_s"],
                **out,
                "val": metrics["val"]["accuracy"],
            }
        )
        print(results[-1], flush=True)
    return results


def timed_child(command: list[str]) -> None:
    """Run ``command``; print its seconds and peak RSS (the largest of its processes')."""
    started = time.perf_counter()
    subprocess.run(command, check=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({"seconds": seconds, "peak": peak}))


def image_report(results: list[dict]) -> str:
    lines = [
        "| images | extraction images/s | whole run seconds | peak RSS | val accuracy |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['images']:,} | {r['images'] / r['extract_s']:.1f} | {r['seconds']:.0f} | "
            f"{r['peak'] / 1e9:.2f} GB | {r['val']:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--fit-child"]:
        fit_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    if sys.argv[1:2] == ["--timed-child"]:
        timed_child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("head", "images", "both"), default="both")
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 40_000, 160_000, 640_000])
    parser.add_argument("--classes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--images", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument(
        "--reference",
        nargs=2,
        metavar=("REV", "ROWS"),
        help="also fit with the head of git revision REV, up to ROWS rows of 100 classes "
        "(rows x classes up to ROWS x 100)",
    )
    args = parser.parse_args()
    reference = (args.reference[0], int(args.reference[1])) if args.reference else None
    command = stamp("python benchmarks/scale.py " + " ".join(sys.argv[1:]))
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if args.part in ("head", "both"):
            report = f"{command}\n\n" + head_report(head_rows(args.rows, args.classes, tmp, reference))
            print(report)
            put_on_page("scale-head", report)
        if args.part in ("images", "both"):
            report = f"{command}\n\n" + image_report(image_rows(args.images, tmp))
            print(report)
            put_on_page("scale-images", report)


if __name__ == "__main__":
    main()

"""One run, one machine, side by side: imgcls vs fastai vs the PyTorch tutorial, inference
paths, and achieved compute against this machine's measured peak.

    .venv/bin/python benchmarks/run.py --suite quick   # hymenoptera; lite0 inference
    .venv/bin/python benchmarks/run.py --suite full    # + clothing_small; + lite2 inference
    .venv/bin/python benchmarks/run.py --suite clothing --skip-tutorial  # clothing_small, lite0

Prints a markdown report, writes it with the raw JSON to ``benchmarks/results/``, and puts it
on ``docs/benchmarks.md`` in place of the previous results (the text between the page's
``<!-- results:start -->`` and ``<!-- results:end -->`` markers; the rest of the page stays).
fastai is installed on first use into ``benchmarks/.fastai`` (its own folder, never the
project's environment; ``--no-deps`` so it can never pull another torch) and runs on this
environment's torch and timm. Every training run starts a fresh process with a cold cache;
wall time is process start to exit. Nothing here is asserted by tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATASETS = REPO.parent / "shared" / "datasets"
FASTAI_DIR = HERE / ".fastai"
DOCS_PAGE = REPO / "docs" / "benchmarks.md"
RESULTS_START, RESULTS_END = "<!-- results:start -->", "<!-- results:end -->"
FASTAI_PACKAGES = [
    "fastai",
    "fastcore",
    "fastprogress",
    "fastdownload",
    "fasttransform",
    "python-fasthtml",
    "itsdangerous",
    "plum-dispatch",
    "beartype",
    "rich",
    "markdown-it-py",
    "mdurl",
    "pygments",
    "pandas",
    "python-dateutil",
    "pytz",
    "tzdata",
    "cloudpickle",
    "requests",
    "pyyaml",
    "charset-normalizer",
    "idna",
    "urllib3",
    "certifi",
    "six",
]
TUNED = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=33554432:glibc.malloc.top_pad=536870912"}
INFERENCE_PATHS = ("timm-eager", "imgcls", "imgcls-bf16", "onnxruntime")
STAGE_PATHS = ("extract-bf16", "trunk-bf16", "train-top", "train-all")  # a pipeline stage each
# The fine-tune's fastest recipe (the CPU default before weight interpolation and a third stage)
FAST_FLAGS = ("--unfreeze", "last-2", "--epochs", "8")
FAST_FINETUNE = f"imgcls finetune {' '.join(FAST_FLAGS)}"
SUITES = {
    "quick": {"datasets": ["hymenoptera"], "backbones": ["efficientnet_lite0"], "tutorial_epochs": 3},
    "clothing": {"datasets": ["clothing_small"], "backbones": ["efficientnet_lite0"], "tutorial_epochs": 5},
    "full": {
        "datasets": ["hymenoptera", "clothing_small"],
        "backbones": ["efficientnet_lite0", "efficientnet_lite2"],
        "tutorial_epochs": 5,
    },
}


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def imgcls_train(data: Path, *flags: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        command = [sys.executable, "-m", "imgcls", "train", str(data), "-o", str(run), "-q", *flags]
        seconds, _ = timed(command, {"IMGCLS_CACHE_DIR": str(Path(tmp) / "cache")})
        metrics = json.loads((run / "metrics.json").read_text())
    return {
        "wall_s": seconds,
        "val_accuracy": metrics["val"]["accuracy"],
        "test_accuracy": metrics.get("test", {}).get("accuracy"),
    }


def ensure_fastai() -> None:
    if (FASTAI_DIR / "fastai").is_dir():
        return
    print("installing fastai into benchmarks/.fastai (no dependencies: this torch is used)", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(FASTAI_DIR),
            *FASTAI_PACKAGES,
        ],
        check=True,
    )


def timm_weights_file(folder: Path) -> Path:
    """The packaged Lite0 weights converted to timm's layout, for fastai's timm loader."""
    import torch

    from imgcls.models.backbone import build_network
    from imgcls.models.registry import get_backbone

    model, _ = build_network(get_backbone("efficientnet_lite0"), num_classes=1000)
    path = folder / "tf_efficientnet_lite0_timm.pth"
    torch.save(model.state_dict(), path)
    return path


def fastai_run(data: Path, weights: Path, epochs: int = 3) -> dict:
    command = [sys.executable, str(HERE / "fastai_baseline.py"), str(data), str(weights), str(epochs)]
    env = {"PYTHONPATH": os.pathsep.join([str(FASTAI_DIR), os.environ.get("PYTHONPATH", "")])}
    seconds, out = timed(command, env)
    return {"wall_s": seconds, **last_json(out)}


def tutorial_run(data: Path, epochs: int) -> dict:
    seconds, out = timed([sys.executable, str(HERE / "tutorial_baseline.py"), str(data), str(epochs)], TUNED)
    return {"wall_s": seconds, **last_json(out)}


def inference(path: str, backbone: str) -> dict:
    env = TUNED if path.startswith("imgcls") or path == "peak" else {"GLIBC_TUNABLES": ""}
    _, out = timed([sys.executable, str(HERE / "inference.py"), path, backbone], env)
    return last_json(out)


def time_to_accuracy(suite: dict, skip_fastai: bool, skip_tutorial: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = None if skip_fastai else timm_weights_file(Path(tmp))
        for name in suite["datasets"]:
            data = DATASETS / name
            runs = {
                "imgcls probe (defaults)": lambda d=data: imgcls_train(d),
                "imgcls finetune": lambda d=data: imgcls_train(d, "--strategy", "finetune"),
                FAST_FINETUNE: lambda d=data: imgcls_train(d, "--strategy", "finetune", *FAST_FLAGS),
            }
            if not skip_tutorial:
                epochs = suite["tutorial_epochs"]
                runs[f"PyTorch tutorial loop ({epochs} epochs)"] = lambda d=data, e=epochs: tutorial_run(d, e)
            if weights is not None:
                runs["fastai vision_learner + fine_tune(3)"] = lambda d=data: fastai_run(d, weights)
            for label, run in runs.items():
                print(f"{name}: {label} ...", flush=True)
                rows.append({"dataset": name, "method": label, **run()})
    return rows


def markdown(report: dict) -> str:
    lines = [
        f"Command: `python benchmarks/run.py {report['arguments']}`; {report['date']}; "
        f"{report['machine']['cpu']}, {report['machine']['cores']} cores; {report['machine']['versions']}",
        "",
        "| data set | method | wall s | val acc | test acc |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in report["time_to_accuracy"]:
        test = f"{r['test_accuracy']:.4f}" if r.get("test_accuracy") is not None else "-"
        lines.append(
            f"| {r['dataset']} | {r['method']} | {r['wall_s']:.1f} | {r['val_accuracy']:.4f} | {test} |"
        )
    peak = report["peak"]
    lines += [
        "",
        f"Peak (2048x2048 matmul, this run): fp32 {peak['peak_fp32_gflops']:.0f} GFLOP/s, "
        f"bf16 {peak['peak_bf16_gflops']:.0f} GFLOP/s.",
        "",
        "| backbone | path | px | batch-32 img/s | 1-image ms | GFLOP/img | achieved GFLOP/s | % of peak |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["inference"]:
        achieved = r["gflops_per_image"] * r["images_per_s"]
        bf16 = r["path"].endswith("bf16") or r.get("precision") == "bf16"
        ceiling = peak["peak_bf16_gflops"] if bf16 else peak["peak_fp32_gflops"]
        latency = f"{r['latency_ms']:.1f}" if "latency_ms" in r else "-"
        lines.append(
            f"| {r['backbone']} | {r['path']} | {r['input_size']} | {r['images_per_s']:.1f} | {latency} | "
            f"{r['gflops_per_image']:.2f} | {achieved:.1f} | {100 * achieved / ceiling:.1f} |"
        )
    return "\n".join(lines) + "\n"


def publish(text: str, page: Path = DOCS_PAGE) -> None:
    """Replace the results between the page's markers with ``text``; the rest of the page stays."""
    current = page.read_text()
    start, end = current.find(RESULTS_START), current.find(RESULTS_END)
    if start < 0 or end < start:
        # The results are already in benchmarks/results/; only the page is left unchanged.
        raise SystemExit(f"{page} has no {RESULTS_START} ... {RESULTS_END} markers; results not put there")
    page.write_text(current[: start + len(RESULTS_START)] + "\n" + text + current[end:])


def machine() -> dict:
    from imgcls.inference.model_format import versions

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    found = versions()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "versions": ", ".join(f"{k} {v}" for k, v in found.items() if k in ("python", "torch", "timm")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--suite", choices=SUITES, default="quick")
    parser.add_argument("--skip-fastai", action="store_true", help="leave fastai out (no install)")
    parser.add_argument("--skip-tutorial", action="store_true", help="leave the PyTorch tutorial loop out")
    parser.add_argument("--skip-training", action="store_true", help="inference and peak only")
    args = parser.parse_args()
    suite = SUITES[args.suite]
    if not args.skip_fastai and not args.skip_training:
        ensure_fastai()
    report = {
        "suite": args.suite,
        "arguments": " ".join(sys.argv[1:]) or "--suite quick",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "peak": inference("peak", "-"),
        "inference": [
            inference(path, backbone)
            for backbone in suite["backbones"]
            for path in INFERENCE_PATHS + STAGE_PATHS
        ],
        "time_to_accuracy": (
            [] if args.skip_training else time_to_accuracy(suite, args.skip_fastai, args.skip_tutorial)
        ),
    }
    text = markdown(report)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.suite}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{args.suite}.md").write_text(text)
    publish(text)
    print(text)
    print(f"results written to {DOCS_PAGE.relative_to(REPO)}", flush=True)


if __name__ == "__main__":
    main()

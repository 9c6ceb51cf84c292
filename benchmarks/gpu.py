"""imgcls on a GPU, in at most about five minutes: agreement with the CPU, extraction and
inference throughput beside timm's own forward pass, and a whole-network fine-tune.

    .venv/bin/python benchmarks/gpu.py             # on a machine with a CUDA GPU
    .venv/bin/python benchmarks/gpu.py --quick     # smaller synthetic set and fewer repeats

On a machine without one it says so and exits 0. Steps, all with efficientnet_lite0:

a. CPU and GPU agree: a probe trained on hymenoptera predicts its val images on the CPU and on
   the GPU; the share of equal labels (goal: at least 99.5%) and the largest probability
   difference.
b. Extraction images/s end to end, decoding included (JPEG files -> features, loader
   processes, no cache): clothing_small's images, and 20,000 synthetic JPEGs.
c. Pure inference images/s at batch 256 in bf16 and fp16 (tensors already on the GPU), and
   timm's benchmark-style forward pass of the same network, batch and precision beside it.
d. A whole-network fine-tune of clothing_small on images with the default recipe: seconds
   per epoch, total seconds and test accuracy; then the same with ``--compile``.

Prints a markdown table with the GPU's name and puts it on ``docs/benchmarks.md`` between the
page's ``<!-- gpu:start -->`` and ``<!-- gpu:end -->`` markers. Nothing here is asserted by tests.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _page import DATASETS, put_on_page, stamp

BATCH = 256


def agreement(tmp: Path) -> tuple[float, float]:
    import imgcls

    data = DATASETS / "hymenoptera"
    run = tmp / "hymenoptera"
    imgcls.train(data, run, device="cuda")
    files = sorted((data / "val").rglob("*.jpg"))
    cpu, gpu = imgcls.load(run, device="cpu"), imgcls.load(run, device="cuda")
    on_cpu = cpu.score_paths(files, batch_size=64)
    on_gpu = gpu.score_paths(files, batch_size=BATCH)
    same = float((on_cpu.probs.argmax(1) == on_gpu.probs.argmax(1)).mean())
    return same, float(np.abs(on_cpu.probs - on_gpu.probs).max())


def extraction(files: list[Path]) -> float:
    from imgcls.inference.loading import open_encoder

    encoder = open_encoder("efficientnet_lite0", device="cuda")
    # workers: imgcls's default for the device (a loader process per core)
    encoder.embed_files(files[:BATCH], cache_dir=None, batch_size=BATCH)  # warm-up
    started = time.perf_counter()
    done = encoder.embed_files(files, cache_dir=None, batch_size=BATCH)
    return len(done.features) / (time.perf_counter() - started)


def synthetic_jpegs(folder: Path, count: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)
    paths = []
    for i in range(count):
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(np.roll(base, i, axis=1)).save(path, quality=90)
        paths.append(path)
    return paths


def inference(precision: str, repeats: int) -> tuple[float, float]:
    """(imgcls images/s, timm images/s) of forward passes on GPU tensors."""
    import timm
    import torch

    from imgcls.inference.loading import open_encoder
    from imgcls.models.features import pooled_features

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    batch = torch.randn(BATCH, 3, 224, 224, device="cuda").contiguous(memory_format=torch.channels_last)
    ours = open_encoder("efficientnet_lite0", device="cuda", precision=precision).folded()
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).cuda().eval()
    reference = reference.to(memory_format=torch.channels_last)

    def ours_step() -> None:
        pooled_features(ours, batch, precision)

    def timm_step() -> None:
        with torch.autocast("cuda", dtype=dtype):
            reference.forward_head(reference.forward_features(batch), pre_logits=True)

    return _rate(ours_step, repeats), _rate(timm_step, repeats)


def _rate(step, repeats: int) -> float:
    import torch

    with torch.inference_mode():
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(repeats):
            step()
        torch.cuda.synchronize()
    return repeats * BATCH / (time.perf_counter() - started)


def finetune(tmp: Path, compile: bool) -> tuple[float, float, float]:
    """(seconds per epoch, total seconds, test accuracy) of the default GPU fine-tune."""
    import imgcls

    run = tmp / f"clothing-compile-{compile}"
    started = time.perf_counter()
    clf = imgcls.train(DATASETS / "clothing_small", run, strategy="finetune", device="cuda", compile=compile)
    total = time.perf_counter() - started
    epochs = [float(r["seconds"]) for r in csv.DictReader((run / "history.csv").open()) if r["epoch"] != "0"]
    return sum(epochs) / max(len(epochs), 1), total, clf.metrics["test"]["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 synthetic JPEGs and fewer repeats")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU on this machine: nothing to measure (the CPU figures come from benchmarks/run.py)")
        sys.exit(0)
    os.environ.setdefault("IMGCLS_CACHE_DIR", tempfile.mkdtemp(prefix="imgcls-gpu-cache-"))
    name = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        same, largest = agreement(tmp)
        clothing = sorted((DATASETS / "clothing_small").rglob("*.jpg"))
        synthetic = synthetic_jpegs(tmp / "synthetic", 2_000 if args.quick else 20_000)
        rows = [
            (
                "a. CPU/GPU same label on hymenoptera val",
                f"{same:.4f} (largest probability difference {largest:.2e})",
            ),
            ("b. extraction, clothing_small JPEGs, images/s", f"{extraction(clothing):.0f}"),
            (f"b. extraction, {len(synthetic):,} synthetic JPEGs, images/s", f"{extraction(synthetic):.0f}"),
        ]
        for precision in ("bf16", "fp16"):
            ours, reference = inference(precision, 10 if args.quick else 50)
            rows.append(
                (
                    f"c. inference batch {BATCH} {precision}, imgcls / timm images/s",
                    f"{ours:.0f} / {reference:.0f}",
                )
            )
        for compile in (False, True):
            per_epoch, total, accuracy = finetune(tmp, compile)
            rows.append(
                (
                    f"d. fine-tune clothing_small{' --compile' if compile else ''}: s per epoch, total s, "
                    "test accuracy",
                    f"{per_epoch:.1f}, {total:.0f}, {accuracy:.4f}",
                )
            )
    lines = [
        f"{stamp('python benchmarks/gpu.py')}; GPU: {name}",
        "",
        "| measurement | result |",
        "| --- | --- |",
    ]
    lines += [f"| {what} | {value} |" for what, value in rows]
    report = "\n".join(lines)
    print(report)
    put_on_page("gpu", report)


if __name__ == "__main__":
    main()

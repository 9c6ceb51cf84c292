"""Inference throughput, latency and achieved compute; the child half of ``benchmarks/run.py``.

    .venv/bin/python benchmarks/inference.py PATH BACKBONE   # prints one JSON line

PATH is one of:
  timm-eager   timm.create_model + eval + torch.no_grad, default allocator: how a user runs it
  imgcls       the network as imgcls prepares it: channels_last, inference_mode (run under the
               tuned allocator by the parent, as the CLI runs itself)
  imgcls-bf16  the same under CPU bf16 autocast
  onnxruntime  the network exported to ONNX (opset 17), ONNX Runtime CPU, 2 intra-op threads
  peak         a 2048x2048 matmul in fp32 and bf16: this machine's reachable peak
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

BATCH = 32
ROUNDS = 5
SINGLE = 20


def _rate(forward, size: int) -> tuple[float, float]:
    """(batch-32 images/s, median single-image latency ms)."""
    batch = torch.randn(BATCH, 3, size, size)
    one = torch.randn(1, 3, size, size)
    forward(batch)
    started = time.perf_counter()
    for _ in range(ROUNDS):
        forward(batch)
    rate = BATCH * ROUNDS / (time.perf_counter() - started)
    forward(one)
    latencies = []
    for _ in range(SINGLE):
        t = time.perf_counter()
        forward(one)
        latencies.append((time.perf_counter() - t) * 1000)
    return rate, statistics.median(latencies)


def _imgcls_model(backbone: str) -> tuple[torch.nn.Module, int]:
    from imgcls.backbone import build_network, prepare_for_inference, resolve_preprocessing
    from imgcls.registry import get_backbone

    spec = get_backbone(backbone)
    model, _ = build_network(spec, num_classes=1000)
    return prepare_for_inference(model), resolve_preprocessing(spec, for_features=False).input_size


def flops_per_image(model: torch.nn.Module, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, 3, size, size))
    return float(counter.get_total_flops())


def measure(path: str, backbone: str) -> dict:
    torch.set_num_threads(torch.get_num_threads())
    if path == "peak":
        return {"path": path, **peak()}
    model, size = _imgcls_model(backbone)
    result = {"path": path, "backbone": backbone, "input_size": size}
    if path == "timm-eager":
        model = model.to(memory_format=torch.contiguous_format)

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return model(x)

    elif path in ("imgcls", "imgcls-bf16"):
        autocast = path == "imgcls-bf16"

        def forward(x: torch.Tensor) -> torch.Tensor:
            cast = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
            with torch.inference_mode(), cast:
                return model(x.contiguous(memory_format=torch.channels_last))

    elif path == "onnxruntime":
        forward = _onnx_forward(model, size)
    else:
        raise SystemExit(f"unknown path {path}")
    result["images_per_s"], result["latency_ms"] = _rate(forward, size)
    result["gflops_per_image"] = flops_per_image(model.float(), size) / 1e9
    return result


def _onnx_forward(model: torch.nn.Module, size: int):
    import onnxruntime as ort

    path = Path(tempfile.mkdtemp()) / "model.onnx"
    model = model.to(memory_format=torch.contiguous_format)
    torch.onnx.export(
        model,
        (torch.randn(1, 3, size, size),),
        str(path),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"input": x.numpy()})


def peak(n: int = 2048, repeats: int = 10) -> dict:
    found = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a = torch.randn(n, n).to(dtype)
        a @ a
        started = time.perf_counter()
        for _ in range(repeats):
            a @ a
        found[f"peak_{name}_gflops"] = 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9
    return found


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "efficientnet_lite0")))

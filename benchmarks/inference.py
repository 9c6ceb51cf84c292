"""Inference throughput, latency and achieved compute; the child half of ``benchmarks/run.py``.

    .venv/bin/python benchmarks/inference.py PATH BACKBONE   # prints one JSON line

PATH is one of:
  timm-eager   timm.create_model + eval + torch.no_grad, default allocator: how a user runs it
               (timm's implementation, with the same weights)
  imgcls       the network as imgcls predicts with it: imgcls's own Lite implementation,
               BatchNorms folded, channels_last, inference_mode, 8 images per forward pass
               (run under the tuned allocator by the parent, as the CLI runs)
  imgcls-bf16  the same under CPU bf16 autocast
  onnxruntime  the network exported to ONNX (opset 17), ONNX Runtime CPU, 2 intra-op threads
  extract-bf16 the probe's feature extraction: pooled features at the feature resolution
               (1.25x native, 288 px for Lite0), BatchNorms folded, bf16 autocast, batch 32
  trunk-bf16   the activation cache's pass: the frozen trunk below the stages a CPU fine-tune
               trains (finetune_plan.CPU_AUTO_STAGES, the last three) at the feature
               resolution, BatchNorms folded, bf16 autocast (what --strategy finetune runs
               once per image)
  train-top    one fine-tuning step of those stages + head on cached 288 px trunk maps
               (bf16 where native with fp32 depthwise layers where bf16 is slow, frozen
               BatchNorms fused, depthwise kernels and their BatchNorms frozen, AdamW): the
               CPU default of --strategy finetune
  train-all    one such step of the whole network on 224 px images: --unfreeze all
  peak         a 2048x2048 matmul in fp32 and bf16: this machine's reachable peak

Training paths report images/s of whole steps (forward, backward, optimiser) and 3x the
forward FLOPs per image (backward ~ 2x forward).
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

from imgcls.models.features import in_chunks

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
    from imgcls.models.backbone import build_network, prepare_for_inference
    from imgcls.models.registry import get_backbone, resolve_preprocessing

    spec = get_backbone(backbone)
    model, _ = build_network(spec, num_classes=1000)
    return prepare_for_inference(model), resolve_preprocessing(spec, for_features=False).input_size


def _timm_model(backbone: str, weights_from: torch.nn.Module) -> torch.nn.Module:
    """timm's own network for ``backbone`` with the same weights, in eval mode (imgcls builds
    EfficientNet-Lite without timm; this baseline is timm's implementation)."""
    import timm

    from imgcls.models.registry import get_backbone

    model = timm.create_model(get_backbone(backbone).timm_arch, num_classes=1000)
    model.load_state_dict(weights_from.state_dict())
    return model.eval()


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
        model = _timm_model(backbone, model)

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return model(x)

    elif path in ("imgcls", "imgcls-bf16"):
        autocast = path == "imgcls-bf16"
        network = _folded(model, size)  # what Classifier predicts with

        def forward(x: torch.Tensor) -> torch.Tensor:
            cast = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
            with torch.inference_mode(), cast:
                return in_chunks(network, x.contiguous(memory_format=torch.channels_last))

    elif path == "onnxruntime":
        forward = _onnx_forward(model, size)
    elif path in STAGES:
        return {**result, **STAGES[path](model, size)}
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


def _bf16_forward(module: torch.nn.Module, x: torch.Tensor) -> dict:
    """images/s and GFLOP/image of ``module`` on batch ``x`` under bf16 autocast."""

    def forward() -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            in_chunks(module, x.contiguous(memory_format=torch.channels_last))

    forward()
    started = time.perf_counter()
    for _ in range(ROUNDS):
        forward()
    rate = len(x) * ROUNDS / (time.perf_counter() - started)
    return {
        "images_per_s": rate,
        "gflops_per_image": _flops(lambda: module(x[:1])) / 1e9,
        "precision": "bf16",
    }


def _train_steps(module: torch.nn.Module, x: torch.Tensor, num_classes: int = 10) -> dict:
    """images/s of training steps as ``--strategy finetune`` runs them on this CPU (its
    precision, depthwise kernels and their BatchNorms frozen, the training fast path) and forward + backward
    GFLOP/image."""
    from imgcls.system.precision import autocast, resolve_precision
    from imgcls.training._fast_path import depthwise_unit_parameters, training_fast_path
    from imgcls.training._tasks import train_with_frozen_norms
    from imgcls.training.finetune_plan import trains_depthwise

    cpu = torch.device("cpu")
    precision = resolve_precision("auto", cpu)
    if not trains_depthwise(cpu):
        for parameter in depthwise_unit_parameters(module):
            parameter.requires_grad_(False)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    targets = torch.randint(num_classes, (len(x),))
    x = x.contiguous(memory_format=torch.channels_last)

    def step(inputs: torch.Tensor, labels: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(precision):
            logits = module(inputs)[:, :num_classes].float()
        torch.nn.functional.cross_entropy(logits, labels).backward()
        optimizer.step()

    with training_fast_path(module, x[:1]):
        train_with_frozen_norms(module)
        step(x, targets)
        started = time.perf_counter()
        for _ in range(ROUNDS):
            step(x, targets)
        rate = len(x) * ROUNDS / (time.perf_counter() - started)
    # Backward ~ 2x forward (gradients of inputs and of weights). Not counted directly: torch's
    # FlopCounterMode ignores `groups` in convolution_backward and overcounts depthwise layers.
    with torch.no_grad():
        flops = 3 * _flops(lambda: module(x[:1]))
    return {"images_per_s": rate, "gflops_per_image": flops / 1e9, "precision": precision}


def _flops(run) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run()
    return float(counter.get_total_flops())


def _feature_size(size: int) -> int:
    from imgcls.data.preprocessing import feature_input_size

    return feature_input_size(size)


def _folded(module: torch.nn.Module, size: int) -> torch.nn.Module:
    from imgcls.models._batchnorm_fold import folded_for_inference

    return folded_for_inference(module, size)


def _extract(model: torch.nn.Module, size: int) -> dict:
    side = _feature_size(size)
    network = _folded(model, side)
    pooled = lambda x: network.forward_head(network.forward_features(x), pre_logits=True)  # noqa: E731
    return {"input_size": side, **_bf16_forward(pooled, torch.randn(BATCH, 3, side, side))}


def _top_split(model: torch.nn.Module):
    from imgcls.models._network_split import split_network
    from imgcls.training.finetune_plan import CPU_AUTO_STAGES

    split = split_network(model, CPU_AUTO_STAGES)
    if split is None:
        raise SystemExit("this backbone cannot be split into stages")
    return split


def _trunk(model: torch.nn.Module, size: int) -> dict:
    side = _feature_size(size)
    trunk = _folded(_top_split(model).trunk, side)
    return {"input_size": side, **_bf16_forward(trunk, torch.randn(BATCH, 3, side, side))}


def _train_top(model: torch.nn.Module, size: int) -> dict:
    split, side = _top_split(model), _feature_size(size)
    with torch.inference_mode():
        maps = split.trunk(torch.randn(BATCH, 3, side, side).contiguous(memory_format=torch.channels_last))
    split.trunk.requires_grad_(False)
    return {"input_size": side, **_train_steps(split.top, maps.clone())}


def _train_all(model: torch.nn.Module, size: int) -> dict:
    return _train_steps(model, torch.randn(BATCH, 3, size, size))


STAGES = {"extract-bf16": _extract, "trunk-bf16": _trunk, "train-top": _train_top, "train-all": _train_all}


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

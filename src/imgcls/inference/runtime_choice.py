"""``--runtime auto``: ONNX Runtime or torch for prediction, whichever is faster here.

Two costs decide it: starting (importing torch takes seconds; ONNX Runtime, a fraction of one)
and each image's forward pass (on a CPU with native bf16, AVX-512 BF16 / AMX, torch under bf16
autocast is the fastest way to run a network). So a model whose saved precision is bf16 runs
in torch there when there are many images to predict, and in ONNX Runtime when there are only
a few (``ONNX_UP_TO_IMAGES``) or the CPU lacks native bf16, provided an export exists (``train``
writes one; ``imgcls export``), was made from the model's current weights and onnxruntime is
installed. Deciding imports no torch.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imgcls._files import CONFIG_FILE, model_dir, weights_digest
from imgcls.config import parse_device
from imgcls.errors import ImgclsError
from imgcls.inference.onnx_runtime import OnnxClassifier, find_onnx_file
from imgcls.system.cpu import cpu_has_native_bf16
from imgcls.system.wording import count

log = logging.getLogger(__name__)

# Up to this many images, starting without torch saves more than bf16 torch's faster forward
# passes win back; past it, the per-image gain outweighs the seconds torch takes to import.
ONNX_UP_TO_IMAGES = 64


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str  # "torch" or "onnx"
    reason: str
    onnx: OnnxClassifier | None = None  # loaded while deciding, ready to use


def choose_runtime(
    requested: str,
    model: str | Path,
    *,
    tta: bool = False,
    device: str = "auto",
    images: int | None = None,
) -> RuntimeChoice:
    """The runtime to predict with, and why (``requested``: ``auto``, ``torch`` or ``onnx``).

    ``images``: how many images this process will predict, where known (``None``: many, as for
    a server). Decides without importing torch: ``device=auto`` on a machine with an NVIDIA
    driver, or a GPU asked for by name, means torch (ONNX Runtime runs on the CPU here)."""
    if requested != "auto":
        return RuntimeChoice(requested, f"{requested} was asked for")
    kind = parse_device(device)[0]
    if kind in ("cuda", "mps") or (kind == "auto" and Path(NVIDIA_DRIVER).exists()):
        return RuntimeChoice("torch", "a GPU runs torch")
    directory = Path(model)
    if not (directory.is_dir() and (model_dir(directory) / CONFIG_FILE).is_file()):
        return RuntimeChoice("torch", "not a trained model directory")
    if tta:
        return RuntimeChoice("torch", "test-time augmentation runs in torch")
    few = images is not None and images <= ONNX_UP_TO_IMAGES
    bf16_here = _saved_precision(directory) == "bf16" and cpu_has_native_bf16()
    if bf16_here and not few:
        return RuntimeChoice("torch", "bf16 on this CPU's native bf16 units is fastest for many images")
    try:
        onnx_path = find_onnx_file(directory)
    except ImgclsError:
        return RuntimeChoice("torch", "no model.onnx (run 'imgcls export' to let ONNX Runtime serve it)")
    if importlib.util.find_spec("onnxruntime") is None:
        return RuntimeChoice("torch", "onnxruntime is not installed (pip install 'imgcls[onnx]')")
    onnx = OnnxClassifier.load(onnx_path)
    if onnx.config.get("weights_digest") != weights_digest(directory):
        log.warning(
            "%s was exported from other weights than %s; using torch (re-export it)", onnx_path, directory
        )
        return RuntimeChoice("torch", "model.onnx is out of date")
    if bf16_here:
        reason = f"{count(images, 'image')} to predict: ONNX Runtime starts seconds sooner than torch"
        return RuntimeChoice("onnx", reason, onnx)
    return RuntimeChoice("onnx", "ONNX Runtime beats torch fp32 on a CPU without native bf16", onnx)


NVIDIA_DRIVER = "/proc/driver/nvidia/version"  # there when an NVIDIA GPU driver is loaded


def _saved_precision(directory: Path) -> str:
    config: dict[str, Any] = json.loads((model_dir(directory) / CONFIG_FILE).read_text(encoding="utf-8"))
    return str(config.get("precision", "fp32"))

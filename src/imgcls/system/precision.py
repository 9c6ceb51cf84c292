"""Numeric precision of forward passes: ``fp32``, or bf16 / fp16 autocast.

On CPUs with native bf16 (AVX-512 BF16 or AMX) bf16 autocast runs convolutional networks
much faster than fp32 at the same probe accuracy (docs/performance.md), so ``auto`` picks it
there.
"""

from __future__ import annotations

import contextlib

import torch

from imgcls.errors import ConfigError
from imgcls.system.cpu import cpu_has_native_bf16

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto``: bf16 on GPUs that support it (else fp16) and on CPUs with native bf16; else fp32."""
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise ConfigError("`precision=fp16` needs a GPU; on a CPU use bf16 or fp32")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast_dtype(precision: str) -> torch.dtype | None:
    return _DTYPES[precision]


def autocast(precision: str, device_type: str = "cpu") -> contextlib.AbstractContextManager:
    dtype = _DTYPES[precision]
    return torch.autocast(device_type, dtype=dtype) if dtype is not None else contextlib.nullcontext()

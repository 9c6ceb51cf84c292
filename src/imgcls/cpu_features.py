"""What this CPU can do, read without importing torch."""

from __future__ import annotations

from functools import cache
from pathlib import Path


@cache
def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matrix arithmetic in hardware (Linux; elsewhere ``False``)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def has_nvidia_gpu() -> bool:
    """A CUDA device is installed (the driver lists one); torch would run there instead."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())

"""What this CPU can do, read without importing torch.

``python -m imgcls.system.cpu`` prints it on one line, so that a test run's log says which
machine (and which kernels) its numbers came from.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

# The features that decide which kernels oneDNN and MKL run, and so the last bits of every sum.
_REPORTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
# oneDNN ISA limits below AVX512_CORE_BF16: under them bf16 arithmetic is emulated in fp32
# instructions, slower than fp32 itself, however capable the CPU.
_ISA_LIMITS_WITHOUT_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}
)


@cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpu_flags() -> frozenset[str]:
    for line in _cpuinfo().splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def native_bf16(flags: frozenset[str], isa_limit: str) -> bool:
    """bf16 matrix arithmetic in hardware (AVX-512 BF16 or AMX) that oneDNN may use: the CPU
    has it and ``isa_limit`` (``ONEDNN_MAX_CPU_ISA``, empty for none) does not rule it out."""
    if isa_limit.strip().upper() in _ISA_LIMITS_WITHOUT_BF16:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_has_native_bf16() -> bool:
    """Whether bf16 is this process's fast path on the CPU (Linux; elsewhere ``False``)."""
    return native_bf16(_cpu_flags(), os.environ.get("ONEDNN_MAX_CPU_ISA", ""))


def cpu_summary() -> str:
    """One line: the CPU model, its kernel-deciding features, the ISA limits set, native bf16."""
    model = next(
        (line.partition(":")[2].strip() for line in _cpuinfo().splitlines() if line.startswith("model name")),
        "unknown CPU",
    )
    flags = _cpu_flags()
    features = " ".join(flag for flag in _REPORTED_FLAGS if flag in flags) or "none reported"
    limits = [
        f"{name}={os.environ[name]}"
        for name in ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
        if name in os.environ
    ]
    return (
        f"CPU: {model}, {os.cpu_count()} cores; {features}; "
        f"{', '.join(limits) or 'no ISA limit'}; native bf16: {'yes' if cpu_has_native_bf16() else 'no'}"
    )


def has_nvidia_gpu() -> bool:
    """A CUDA device is installed (the driver lists one); torch would run there instead."""
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def available_memory() -> int:
    """Bytes the kernel reports as available (0 where unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


if __name__ == "__main__":
    print(cpu_summary())

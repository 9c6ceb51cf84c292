"""The CPU's bf16 fast path is an explicit choice: the CPU's features and oneDNN's ISA limit."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from imgcls.inference.classifier import _precision_on
from imgcls.system import cpu
from imgcls.system.precision import resolve_precision

ZEN4 = frozenset({"avx2", "avx512f", "avx512_bf16"})
SAPPHIRE_RAPIDS = frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
EMULATED = frozenset({"avx2", "avx512f"})  # AVX-512 without BF16: bf16 is emulated, slower than fp32
CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("flags", "limit", "native"),
    [
        (ZEN4, "", True),
        (SAPPHIRE_RAPIDS, "", True),
        (EMULATED, "", False),
        (SAPPHIRE_RAPIDS, "AVX2", False),
        (SAPPHIRE_RAPIDS, "avx512_core", False),
        (ZEN4, "AVX512_CORE_BF16", True),
        (SAPPHIRE_RAPIDS, "AVX512_CORE_AMX", True),
        (EMULATED, "AVX512_CORE_AMX", False),  # a limit never adds what the CPU lacks
    ],
)
def test_native_bf16_needs_the_cpu_and_an_isa_limit_that_allows_it(flags, limit, native):
    assert cpu.native_bf16(flags, limit) is native


@pytest.mark.parametrize(("flags", "expected"), [(ZEN4, "bf16"), (EMULATED, "fp32")])
def test_auto_precision_and_a_bf16_models_inference_follow_the_choice_both_ways(monkeypatch, flags, expected):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(cpu, "_cpu_flags", lambda: flags)
    assert resolve_precision("auto", CPU) == expected
    assert _precision_on(CPU, "bf16") == expected
    assert _precision_on(CPU, "fp32") == "fp32"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # another CPU's kernels: no native bf16 there
    assert resolve_precision("auto", CPU) == "fp32"
    assert _precision_on(CPU, "bf16") == "fp32"


def test_the_cpu_summary_names_the_features_and_the_limit():
    env = {"ONEDNN_MAX_CPU_ISA": "AVX2", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "imgcls.system.cpu"], capture_output=True, text=True, env=env, check=True
    )
    line = out.stdout.strip()
    assert "\n" not in line and line.startswith("CPU: ")
    assert "ONEDNN_MAX_CPU_ISA=AVX2" in line and line.endswith("native bf16: no")

"""Which number format the training step computes in, and the autocast that applies it.

`auto` trains in bfloat16 autocast where the chip computes bf16 natively: on CUDA, and on
CPUs with AVX512-BF16 or AMX (there a step takes about half the time of float32, and the
searches in bench/RESULTS.md find the same models). Elsewhere, where bf16 would be emulated
and slower, it trains in float32. Weights, optimizer state, statistics and validation stay
float32 in every case: autocast only lowers the convolutions' and matmuls' inputs.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

# /proc/cpuinfo flags of CPUs whose vector units compute bf16 products natively.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def cpu_has_native_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """True where the CPU lists a native bf16 instruction set (Linux); False where it cannot
    tell (no /proc/cpuinfo: macOS, Windows), the safe answer."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return not NATIVE_BF16_FLAGS.isdisjoint(flags.split())


def resolve_precision(spec: str, device: torch.device) -> str:
    """What this device trains in, bf16 or fp32: `spec` itself unless it is auto."""
    if spec != "auto":
        return spec
    return "bf16" if device.type == "cuda" or cpu_has_native_bf16() else "fp32"


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager[object]:
    """The step's autocast. On CUDA without the weight cache: a cast cached inside one
    captured graph replay would be stale in the next."""
    if precision != "bf16":
        return contextlib.nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16)

"""Roofline floors: this GPU's measured compute and copy ceilings, and each layer's floor.

A layer cannot run faster than its FLOPs at the tier's GEMM rate, nor than its compulsory
bytes (input and weight read once, output written once) at the copy rate; the larger of the
two is its floor. The ceilings are measured in the same run as the methods, on the same GPU:
a 8192^3 matmul in the tier's arithmetic (fp32: IEEE FMA; cuDNN's FFT and Winograd, and
3xTF32 tensor cores, can pass it) and a 1 GiB device-to-device copy (bytes read + written).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..baselines.common import set_tier_flags
from .tiers import Tier

GEMM_SIZE = 8192
COPY_BYTES = 1 << 30


@dataclass(frozen=True)
class Ceilings:
    tflops: dict[str, float]  # tier name -> measured GEMM TFLOPS
    copy_gbps: float  # GB/s, bytes read + written

    def floor_ms(self, flop: int, compulsory_bytes: int, tier: str) -> float:
        compute = flop / (self.tflops[tier] * 1e12)
        memory = compulsory_bytes / (self.copy_gbps * 1e9)
        return max(compute, memory) * 1e3


def measure_ceilings(
    tiers: list[Tier], device: torch.device, timer: Callable[[Callable[[], object], int], float]
) -> Ceilings | None:
    """GEMM TFLOPS per tier and copy GB/s on `device` (None on a CPU: no roofline there)."""
    if device.type != "cuda":
        return None
    saved = torch.get_float32_matmul_precision()
    tflops = {}
    try:
        for tier in tiers:
            a, b = (
                torch.randn(GEMM_SIZE, GEMM_SIZE, device=device, dtype=tier.dtype) for _ in "ab"
            )
            set_tier_flags(tier.name)  # the arithmetic the baselines get in this tier
            ms = timer(lambda a=a, b=b: a @ b, 5)
            tflops[tier.name] = 2 * GEMM_SIZE**3 / (ms * 1e-3) / 1e12
            del a, b
    finally:
        torch.set_float32_matmul_precision(saved)
    src = torch.empty(COPY_BYTES, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src), 5)
    return Ceilings(tflops, 2 * COPY_BYTES / (ms * 1e-3) / 1e9)

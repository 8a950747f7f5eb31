"""Wall time of one call: median over repeats after warm-up.

On a GPU: CUDA events around each call, with L2 flushed before it (a 256 MiB write, five
times an H100's 50 MB L2) so every run reads its operands from HBM, as a layer in a real
network does. On a CPU: `time.perf_counter` around each call.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

FLUSH_BYTES = 256 << 20


class CpuTimer:
    def __init__(self, warmup: int = 1) -> None:
        self.warmup = warmup

    def __call__(self, fn: Callable[[], object], repeats: int) -> float:
        """Median milliseconds of `repeats` calls of `fn`."""
        for _ in range(self.warmup):
            fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)


class CudaTimer:
    def __init__(self, device: torch.device, warmup: int = 3) -> None:
        self.warmup = warmup  # the first calls compile Triton kernels and run cuDNN's search
        self.flush_buffer = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device=device)

    def __call__(self, fn: Callable[[], object], repeats: int) -> float:
        """Median milliseconds of `repeats` calls of `fn`, each on a cold L2."""
        for _ in range(self.warmup):
            fn()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeats)]
        torch.cuda.synchronize()
        for start, end in zip(starts, ends, strict=True):
            self.flush_buffer.zero_()
            start.record()
            fn()
            end.record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends, strict=True))


def host_ms(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median milliseconds until a call of `fn` returns, each started with the device idle.

    On a GPU, where work is queued and runs later, that is the call's host time (checks,
    allocation, launches) whatever the GPU takes; on a CPU it is the whole call.
    """
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    sync()
    return statistics.median(times)


def timer_for(device: torch.device) -> CpuTimer | CudaTimer:
    return CudaTimer(device) if device.type == "cuda" else CpuTimer()

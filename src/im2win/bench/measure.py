"""What one measurement records besides time: allocator peak and error against a reference."""

from __future__ import annotations

from collections.abc import Callable

import torch

MIB = 1 << 20


def allocator_peak(fn: Callable[[], torch.Tensor], device: torch.device):
    """Run `fn` once: its output and the allocator's peak above what was held before (bytes).

    The peak includes the output and every temporary (window tensor, workspace); on a CPU
    there is no allocator statistic, so it is None.
    """
    if device.type != "cuda":
        return fn(), None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    y = fn()
    torch.cuda.synchronize(device)
    return y, torch.cuda.max_memory_allocated(device) - before


def relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    """||y - ref|| / ||ref|| in float64 (whole-tensor relative RMS error)."""
    return ((y.double() - ref).norm() / ref.norm()).item()


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()

"""What one measurement records besides time: allocator peak and error against a reference."""

from __future__ import annotations

from collections.abc import Callable

import torch

MIB = 1 << 20


def allocated(device: torch.device) -> int | None:
    """Bytes the allocator holds now (None on a CPU, which keeps no statistic)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.memory_allocated(device)


def allocator_peak(fn: Callable[[], torch.Tensor], device: torch.device, before: int | None):
    """Run `fn` once: its output and the allocator's peak above `before` (bytes).

    Take `before` ahead of the method's setup, so that memory it keeps between calls
    (a cuDNN workspace) counts as well as every temporary (window tensor) and the output.
    On a CPU there is no allocator statistic: the peak is None.
    """
    if device.type != "cuda":
        return fn(), None
    torch.cuda.reset_peak_memory_stats(device)
    y = fn()
    torch.cuda.synchronize(device)
    return y, torch.cuda.max_memory_allocated(device) - before


def relative_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    """||y - ref|| / ||ref|| in float64 (whole-tensor relative RMS error)."""
    ref = ref.double()
    return ((y.double() - ref).norm() / ref.norm().clamp_min(1e-300)).item()


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()

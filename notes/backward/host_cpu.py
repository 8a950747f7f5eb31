"""The weight gradient's host path on the CPU, its kernel stubbed out (Triton's interpreter
would run it): a call of `grad.conv2d_weight` on tiny tensors (32 -> 32 channels, 3x3, 4x4
maps), against the PyTorch ops it runs after its kernel alone (the slices' sum, the
view, the permute, the cast, the copy). A rough split of our Python from PyTorch's ops,
on this machine's CPU, not the GPU host's.

    TRITON_INTERPRET=1 PYTHONPATH=src python3 notes/backward/host_cpu.py
"""

import importlib
import time

import torch

from im2win import grad


class _NoLaunch:
    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


def per_call_us(fn, calls=2000) -> float:
    for _ in range(50):
        fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def main():
    importlib.import_module(
        "im2win.kernels.conv2d_wgrad_tma"
    )._conv2d_wgrad_tma_kernel = _NoLaunch()
    x = torch.randn(1, 32, 4, 4).to(memory_format=torch.channels_last)
    dy = torch.randn(1, 32, 4, 4).to(memory_format=torch.channels_last)
    partial = torch.empty(4, 1, 32, 288)  # the interpreter rule's slices of this layer
    call = per_call_us(lambda: grad.conv2d_weight(x, (32, 32, 3, 3), dy, padding=1))
    finish = per_call_us(
        lambda: partial.sum(0).view(32, 3, 3, 32).permute(0, 3, 1, 2).to(torch.float32).contiguous()
    )
    print(f"conv2d_weight, kernel stubbed: {call:.0f} us a call")
    print(f"its PyTorch ops after the kernel alone: {finish:.0f} us")


if __name__ == "__main__":
    main()

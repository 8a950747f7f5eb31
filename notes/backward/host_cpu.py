"""The gradients' host paths on the CPU, every kernel stubbed out (Triton's interpreter would
run them): `grad.conv2d_weight` and `grad.conv2d_input` on tiny channels-last tensors (32 ->
32 channels, 3x3, 8x8 maps; the input gradient at stride 1 and 2). A rough measure of our
Python and of PyTorch's small ops around the kernels, on this machine's CPU, not the GPU
host's (where each op is also a launch).

    TRITON_INTERPRET=1 PYTHONPATH=src python3 notes/backward/host_cpu.py
"""

import importlib
import time

import torch

from im2win import grad

KERNELS = {
    "conv2d_fwd": ("_conv2d_fwd_kernel",),
    "conv2d_wgrad": ("_conv2d_wgrad_kernel", "_conv2d_wgrad_dw_kernel", "_wgrad_finish_kernel"),
    "conv2d_wgrad_tma": ("_conv2d_wgrad_tma_kernel",),
}


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
    for module, names in KERNELS.items():
        module = importlib.import_module(f"im2win.kernels.{module}")
        for name in names:
            if hasattr(module, name):
                setattr(module, name, _NoLaunch())
    x = torch.randn(1, 32, 8, 8).to(memory_format=torch.channels_last)
    w = torch.randn(32, 32, 3, 3).to(memory_format=torch.channels_last)
    dy = torch.randn(1, 32, 8, 8).to(memory_format=torch.channels_last)
    weight = per_call_us(lambda: grad.conv2d_weight(x, (32, 32, 3, 3), dy, padding=1))
    print(f"conv2d_weight, kernels stubbed: {weight:.0f} us a call")
    for stride in (1, 2):
        dy = torch.randn(1, 32, 8 // stride, 8 // stride).to(memory_format=torch.channels_last)
        call = per_call_us(
            lambda dy=dy, stride=stride: grad.conv2d_input(x.shape, w, dy, stride=stride, padding=1)
        )
        print(f"conv2d_input stride {stride}, kernels stubbed: {call:.0f} us a call")


if __name__ == "__main__":
    main()

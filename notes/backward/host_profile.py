"""Where the gradients' host time goes: `grad.conv2d_weight` and `grad.conv2d_input` called
back to back on three layers (bf16 channels-last: conv11 at batch 128, which takes the TMA
weight-gradient kernel; ResNet-50's 1x1 reduce at batch 32, the gathers; its 3x3 stride-2
layer at batch 32, four input-gradient phases), the host time a call (wall time of 200 calls
without a sync, then one) and Python's profile of 200 more, the 18 costliest functions by
their own time. Run on the GPU:

    PYTHONPATH=src python3 notes/backward/host_profile.py
"""

import cProfile
import io
import pstats
import time

import torch
import torch.nn.functional as F

from im2win import grad
from im2win.bench.layers import PAPER_LAYERS, RESNET50_LAYERS

LAYERS = {layer.name: layer for layer in (*PAPER_LAYERS, *RESNET50_LAYERS)}
RUNS = {"conv11": 128, "r50-l4-1x1-reduce": 32, "r50-l4-3x3-s2": 32}  # name: batch
CALLS = 200


def main():
    for name, batch in RUNS.items():
        layer = LAYERS[name]
        xshape, wshape = layer.shapes(batch)
        kw = layer.conv_kwargs()
        cl = torch.channels_last
        x = torch.randn(xshape, device="cuda", dtype=torch.bfloat16).to(memory_format=cl)
        w = torch.randn(wshape, device="cuda", dtype=torch.bfloat16)
        dy = torch.randn_like(F.conv2d(x, w, **kw))
        calls = {
            "wgrad": lambda: grad.conv2d_weight(x, w.shape, dy, **kw),  # noqa: B023
            "dgrad": lambda: grad.conv2d_input(x.shape, w, dy, **kw),  # noqa: B023
        }
        for direction, call in calls.items():
            for _ in range(5):  # compile, autotune, fill the caches
                call()
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(CALLS):
                call()
            host_us = (time.perf_counter() - start) / CALLS * 1e6
            torch.cuda.synchronize()
            profile = cProfile.Profile()
            profile.enable()
            for _ in range(CALLS):
                call()
            profile.disable()
            torch.cuda.synchronize()
            text = io.StringIO()
            pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(18)
            print(f"== {name} batch {batch} {direction}: {host_us:.0f} us of host time a call")
            print(text.getvalue().split("ncalls", 1)[-1])


if __name__ == "__main__":
    main()

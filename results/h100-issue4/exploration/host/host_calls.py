"""Where one call's host time goes, on rows whose GPU time is short (batch 128: conv11 and
conv12, NCHW and NHWC, bf16): the host time of a call issued back to back, the same for
F.conv2d, and a cProfile of 200 im2win calls sorted by own time.

    PYTHONPATH=src:notes/scripts python3 results/h100-issue4/exploration/host/host_calls.py
"""

import cProfile
import io
import pstats

import torch
import torch.nn.functional as F
from kernel_time import host_us

import im2win
from im2win.bench.layers import PAPER_BATCH, PAPER_LAYERS

torch.backends.cudnn.benchmark = True
for layer in (la for la in PAPER_LAYERS if la.name in ("conv11", "conv12")):
    xs, ws = layer.shapes(PAPER_BATCH)
    w = torch.randn(ws, device="cuda").bfloat16()
    for layout in ("NCHW", "NHWC"):
        fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
        x = torch.randn(xs, device="cuda").bfloat16().to(memory_format=fmt)
        ours, theirs = (lambda: im2win.conv2d(x, w)), (lambda: F.conv2d(x, w))
        for fn in (ours, theirs, ours, theirs):
            for _ in range(5):
                fn()
        print(f"{layer.name} {layout}: im2win host {host_us(ours):.0f} us, "
              f"F.conv2d host {host_us(theirs):.0f} us", flush=True)  # fmt: skip
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(200):
            ours()
        profiler.disable()
        torch.cuda.synchronize()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(22)
        print(text.getvalue()[:5000], flush=True)

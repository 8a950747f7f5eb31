"""GPU time and host time of one convolution call: im2win against F.conv2d (cuDNN), GPU only.

`im2win bench` times a call with CUDA events around it, L2 flushed first: the host's own
launch work is hidden only up to the flush's duration. This script separates the two for
each paper layer, tier and layout:
  gpu_ms   the CUDA kernels of one call (torch.profiler, flush kernels excluded), L2 cold;
  host_us  Python + launch time of one call, measured back to back without waiting.
cuDNN runs as F.conv2d with cudnn.benchmark (its best engine). Rows go to $OUT/kernel_time.jsonl
(or ./kernel_time.jsonl) with provenance; a table is printed.

    IM2WIN_COMMIT=<sha> PYTHONPATH=src python3 notes/scripts/kernel_time.py
"""

import itertools
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import im2win
from im2win.baselines.common import set_fp32_precision
from im2win.bench.env import provenance
from im2win.bench.layers import PAPER_BATCH, PAPER_LAYERS
from im2win.bench.timing import FLUSH_BYTES

TIERS = {
    "bf16": (torch.bfloat16, None),
    "fp16": (torch.float16, None),
    "tf32": (torch.float32, "tf32"),
}
REPS = 10


def gpu_ms(fn, flush: torch.Tensor) -> float:
    """Mean CUDA kernel time of one `fn()` on a cold L2 (flush kernels left out)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(REPS):
            flush.zero_()
            fn()
        torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as flush_prof:
        flush.zero_()
        torch.cuda.synchronize()
    flush_keys = {e.key for e in flush_prof.key_averages()}
    total_us = sum(
        e.device_time_total for e in prof.key_averages() if e.key not in flush_keys
    )  # fmt: skip
    return total_us / REPS / 1e3


def host_us(fn) -> float:
    """Mean CPU time of one `fn()` issued back to back (the GPU queue absorbs the kernels)."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(REPS):
        fn()
    elapsed = time.perf_counter() - start
    torch.cuda.synchronize()
    return elapsed / REPS * 1e6


def main():
    out_dir = os.environ.get("OUT", ".")
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    torch.backends.cudnn.benchmark = True
    meta = provenance(torch.device("cuda"), " ".join(["python3", *sys.argv]))
    rows = []
    for layer, tier, layout in itertools.product(PAPER_LAYERS, TIERS, ("NCHW", "NHWC")):
        dtype, precision = TIERS[tier]
        set_fp32_precision(tier == "tf32")
        x_shape, w_shape = layer.shapes(PAPER_BATCH)
        fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
        x = torch.randn(x_shape, device="cuda").to(dtype=dtype, memory_format=fmt)
        w = torch.randn(w_shape, device="cuda").to(dtype)
        kw = layer.conv_kwargs()
        im2win_kw = dict(kw, precision=precision)
        calls = {
            "im2win": lambda x=x, w=w, kw=im2win_kw: im2win.conv2d(x, w, **kw),
            "cudnn": lambda x=x, w=w, kw=kw: F.conv2d(x, w, **kw),
        }
        row = dict(layer=layer.name, tier=tier, layout=layout, batch=PAPER_BATCH, **meta)
        for name, fn in calls.items():
            row[f"{name}_gpu_ms"] = gpu_ms(fn, flush)
            row[f"{name}_host_us"] = host_us(fn)
            row[f"{name}_gpu_tflops"] = layer.flop(PAPER_BATCH) / row[f"{name}_gpu_ms"] / 1e9
        rows.append(row)
        print(
            f"{layer.name:7s} {tier:5s} {layout}  im2win {row['im2win_gpu_tflops']:6.1f} TF "
            f"(host {row['im2win_host_us']:5.0f} us)  cuDNN {row['cudnn_gpu_tflops']:6.1f} TF "
            f"(host {row['cudnn_host_us']:5.0f} us)  ratio "
            f"{row['im2win_gpu_tflops'] / row['cudnn_gpu_tflops']:.2f}",
            flush=True,
        )
        del x, w
    with open(os.path.join(out_dir, "kernel_time.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

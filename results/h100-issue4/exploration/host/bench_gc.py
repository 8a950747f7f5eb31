"""Does Python's garbage collector make the bench's short rows host-bound? The bench's timing
(L2 flushed, CUDA events around one call, median of 20) of conv9-12 at batch 128 in bf16,
im2win and F.conv2d (cuDNN's best engine), with the collector on, then frozen
(`gc.freeze()`: every object alive so far left out of its scans) and off; each call's
host time issued back to back beside it. Alternated twice in one process.

    PYTHONPATH=src:notes/scripts python3 results/h100-issue4/exploration/host/bench_gc.py
"""

import gc
import json
import os
import sys

import torch
import torch.nn.functional as F
from kernel_time import gpu_ms, host_us

import im2win
from im2win.bench.env import provenance
from im2win.bench.layers import PAPER_BATCH, PAPER_LAYERS
from im2win.bench.timing import CudaTimer

torch.backends.cudnn.benchmark = True
timer = CudaTimer(torch.device("cuda"))
out = open(os.path.join(os.environ.get("OUT", "."), "bench_gc.jsonl"), "w")
out.write(json.dumps(dict(provenance=provenance(torch.device("cuda"), " ".join(["python3", *sys.argv])))) + "\n")
cases = []
for layer in (la for la in PAPER_LAYERS if la.name in ("conv9", "conv10", "conv11", "conv12")):
    xs, ws = layer.shapes(PAPER_BATCH)
    w = torch.randn(ws, device="cuda").bfloat16()
    for layout in ("NCHW", "NHWC"):
        fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
        x = torch.randn(xs, device="cuda").bfloat16().to(memory_format=fmt)
        for name, fn in (("im2win", lambda x=x, w=w: im2win.conv2d(x, w)),
                         ("cudnn", lambda x=x, w=w: F.conv2d(x, w))):
            cases.append((layer, layout, name, fn))
for rnd in range(2):
    for mode in ("on", "frozen", "off"):
        gc.enable()
        gc.unfreeze()
        if mode == "frozen":
            gc.collect()
            gc.freeze()
        if mode == "off":
            gc.disable()
        for layer, layout, name, fn in cases:
            ms = timer(fn, 20)
            row = dict(round=rnd, gc=mode, layer=layer.name, layout=layout, method=name,
                       bench_ms=ms, host_us=host_us(fn), gpu_ms=gpu_ms(fn, timer.flush_buffer))
            out.write(json.dumps(row) + "\n")
            print(f"{rnd} gc {mode:6} {layer.name:6} {layout} {name:6} bench {ms:.3f} ms  "
                  f"host {row['host_us']:4.0f} us  gpu {row['gpu_ms']:.3f} ms", flush=True)
gc.enable()

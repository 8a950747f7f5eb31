"""conv5 (C = 96, 5x5, 24x24 -> 20x20, K = 256, batch 128, NHWC) in 16-bit takes the pointer
kernel: 96 channels are no whole number of 64-channel TMA blocks, and `tuning.tma_config`
takes full channel blocks only. Here: raster and window TMA tiles with 32-channel blocks,
pinned, against the default, kernel time (L2 cold) and the error against an fp32 cuDNN
result; cuDNN's best (F.conv2d, benchmark mode) in the same process.

    PYTHONPATH=src:notes/scripts python3 results/h100-issue4/exploration/channels96/conv5_tiles.py
"""

import json
import os
import sys

import torch
import torch.nn.functional as F
from kernel_time import gpu_ms

import im2win
from im2win.baselines.common import set_fp32_precision
from im2win.bench.env import provenance
from im2win.bench.layers import PAPER_BATCH, PAPER_LAYERS
from im2win.bench.timing import FLUSH_BYTES

LAYER = next(layer for layer in PAPER_LAYERS if layer.name == "conv5")
PINS = {
    "default": None,
    "raster 128x128x32 w8 s3": dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32, num_warps=8, num_stages=3, LOOP="tma_raster"),
    "raster 128x128x32 w8 s4": dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32, num_warps=8, num_stages=4, LOOP="tma_raster"),
    "raster 128x128x32 w4 s4": dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32, num_warps=4, num_stages=4, LOOP="tma_raster"),
    "raster 128x256x32 w8 s3": dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=32, num_warps=8, num_stages=3, LOOP="tma_raster"),
    "raster 64x256x32 w4 s4": dict(BLOCK_M=64, BLOCK_N=256, BLOCK_K=32, num_warps=4, num_stages=4, LOOP="tma_raster"),
    "window 8x8x256x32 w4 s4": dict(BLOCK_M=64, BLOCK_Q=8, BLOCK_N=256, BLOCK_K=32, num_warps=4, num_stages=4, LOOP="tma"),
    "window 4x32x128x32 w4 s4": dict(BLOCK_M=128, BLOCK_Q=32, BLOCK_N=128, BLOCK_K=32, num_warps=4, num_stages=4, LOOP="tma"),
}  # fmt: skip


def main():
    flush = torch.empty(FLUSH_BYTES, dtype=torch.uint8, device="cuda")
    torch.backends.cudnn.benchmark = True
    meta = provenance(torch.device("cuda"), " ".join(["python3", *sys.argv]))
    out = open(os.path.join(os.environ.get("OUT", "."), "conv5_tiles.jsonl"), "w")
    out.write(json.dumps(dict(provenance=meta)) + "\n")
    flop = LAYER.flop(PAPER_BATCH)
    xs, ws = LAYER.shapes(PAPER_BATCH)
    for tier, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("tf32", torch.float32)):
        set_fp32_precision(tier == "tf32")
        x = torch.randn(xs, device="cuda").to(dtype).to(memory_format=torch.channels_last)
        w = torch.randn(ws, device="cuda").to(dtype)
        set_fp32_precision(False)
        ref = F.conv2d(x.float(), w.float())
        set_fp32_precision(tier == "tf32")
        prec = "tf32" if tier == "tf32" else None
        rows = {"cuDNN": flop / gpu_ms(lambda: F.conv2d(x, w), flush) / 1e9}
        for label, config in PINS.items():
            try:
                fn = lambda: im2win.conv2d(x, w, precision=prec, config=config)  # noqa: E731
                y = fn()
                err = ((y.float() - ref).abs().max() / ref.abs().max()).item()
                tf = flop / gpu_ms(fn, flush) / 1e9
            except Exception as exc:  # noqa: BLE001
                out.write(json.dumps(dict(tier=tier, pin=label, error=str(exc)[:300])) + "\n")
                print(tier, label, "error", str(exc)[:200])
                continue
            out.write(json.dumps(dict(tier=tier, pin=label, tflops=tf, err=err)) + "\n")
            rows[label] = tf
            print(f"{tier} {label}: {tf:.0f} TFLOPS err {err:.2e}", flush=True)
        print(tier, " | ".join(f"{k} {v:.0f}" for k, v in rows.items()), flush=True)


if __name__ == "__main__":
    main()

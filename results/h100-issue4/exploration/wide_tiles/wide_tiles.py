"""Wider pointer-kernel tiles on the deep NHWC layers (kernel time, L2 cold, batch 128).

`pointer_tiles/` found the pointer kernel's 128 x 256 x 32 tiles on 8 warps at 246 TFLOPS
on conv5 in tf32 NHWC, where the default (raster tiles, 128 x 128 on 4 warps) ran 195, and
128 x 128 x 64 on 8 warps 5-8% over the default 64 x 128 in bf16 on conv5 and conv12. Does
either hold across the deep layers? Each layer (paper conv5-6, 8-12; ResNet-50's layers with
KG >= 256), tier (bf16, tf32) in NHWC: the default, those pointer tiles, and raster tiles of
128 x 256 where raster tiles can run; each checked against F.conv2d in fp32 (TF32 off)
before it is timed; cuDNN's best in the same process.

    PYTHONPATH=src:notes/scripts python3 results/h100-issue4/exploration/wide_tiles/wide_tiles.py

With layer names as arguments, those layers only, in tf32 (the rule's tier), with the 8 x 8
x 256 window tiles the TMA heuristic picks on 7x7 and 14x14 outputs beside them: run so at
the code that adopted the rule, whose default is then the wide pointer tiles.
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
from im2win.bench.layers import PAPER_BATCH
from im2win.bench.suites import LAYERS_BY_NAME

NAMES = (
    "conv5 conv6 conv8 conv9 conv10 conv11 conv12 r50-l3-3x3 r50-l3-1x1-1024 "
    "r50-l3-1x1-reduce r50-l4-3x3 r50-l4-1x1-2048 r50-l4-1x1-reduce r50-l3-1x1-reduce28"
)
TIERS = {"bf16": (torch.bfloat16, None, 64), "tf32": (torch.float32, "tf32", 32)}


def configs(block_k, window):
    tile = lambda m, n, w, loop: dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=block_k, num_warps=w,  # noqa: E731
                                      num_stages=3, LOOP=loop)  # fmt: skip
    return {
        "default": None,
        "ptr 128x256 w8": tile(128, 256, 8, "channels"),
        "ptr 128x128 w8": tile(128, 128, 8, "channels"),
        "ptr 64x128 w4": tile(64, 128, 4, "channels"),
        "raster 128x256 w8": tile(128, 256, 8, "tma_raster"),
        **({"tma 8x8x256 w4": dict(tile(64, 256, 4, "tma"), BLOCK_Q=8)} if window else {}),
    }


def call(x, w, kw, precision, config):
    if config == "cudnn":
        return lambda: F.conv2d(x, w, **kw)
    return lambda: im2win.conv2d(x, w, **kw, precision=precision, config=config)


def main():
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    torch.backends.cudnn.benchmark = True
    meta = provenance(torch.device("cuda"), " ".join(["python3", *sys.argv]))
    out = open(os.path.join(os.environ.get("OUT", "."), "wide_tiles.jsonl"), "w")  # noqa: SIM115
    out.write(json.dumps(dict(provenance=meta)) + "\n")
    names, tiers = sys.argv[1:] or NAMES.split(), ("tf32",) if sys.argv[1:] else TIERS
    for name in names:
        layer = LAYERS_BY_NAME[name]
        for tier in tiers:
            dtype, precision, block_k = TIERS[tier]
            xs, ws = layer.shapes(PAPER_BATCH)
            x = torch.randn(xs, device="cuda").to(dtype).to(memory_format=torch.channels_last)
            w = torch.randn(ws, device="cuda").to(dtype)
            kw = layer.conv_kwargs()
            set_fp32_precision(False)
            ref = F.conv2d(x.float(), w.float(), **kw)
            set_fp32_precision(tier == "tf32")
            row = dict(layer=name, tier=tier)
            calls = dict(configs(block_k, window=bool(sys.argv[1:])), cudnn="cudnn")
            for label, config in calls.items():
                fn = call(x, w, kw, precision, config)
                try:
                    y = fn()
                    err = ((y.float() - ref).abs().max() / ref.abs().max()).item()
                    tf = layer.flop(PAPER_BATCH) / gpu_ms(fn, flush) / 1e9
                except Exception as exc:  # noqa: BLE001 - raster tiles on a padded layer
                    out.write(json.dumps(dict(row, config=label, error=str(exc)[:160])) + "\n")
                    continue
                out.write(json.dumps(dict(row, config=label, tflops=tf, err=err)) + "\n")
                row[label] = round(tf, 1) if err < 2e-2 else f"WRONG {err:.2g}"
            out.flush()
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

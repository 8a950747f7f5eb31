"""The tile/loop/window sweep behind notes/performance.md (GPU only).

Every paper layer x tier x layout x (window source, loop) x tile: median ms (CUDA events,
L2 flushed), error against float64, TFLOPS; torch's cudnn.benchmark pick alongside. Prints
the best per mode and layer, writes every row to $OUT/sweep.json (or ./sweep.json).

    TIERS=tf32,bf16 PYTHONPATH=src python3 notes/scripts/sweep_tiles.py
"""

import itertools
import json
import os

import torch
import torch.nn.functional as F

import im2win
from im2win.bench.layers import PAPER_BATCH, PAPER_LAYERS
from im2win.bench.measure import relative_error
from im2win.bench.timing import CudaTimer

TIERS = {
    "fp32": (torch.float32, "ieee"),
    "tf32x3": (torch.float32, "tf32x3"),
    "tf32": (torch.float32, "tf32"),
    "bf16": (torch.bfloat16, None),
}
MODES = {  # name: (windows, reduction loop)
    "mat": ("materialized", "flat"),
    "str": ("streamed", "flat"),
    "str-cb": ("streamed", "channels"),
    "mat-cb": ("materialized", "channels"),
}


def tiles(dtype):
    block_ks = (32,) if dtype == torch.float32 else (32, 64)
    for m, n, k in itertools.product((64, 128), (32, 64, 128), block_ks):
        yield dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, num_warps=8 if m * n >= 16384 else 4,
                   num_stages=3)  # fmt: skip
    yield dict(BLOCK_M=256, BLOCK_N=64, BLOCK_K=block_ks[-1], num_warps=8, num_stages=3)


def main():
    timer, rows = CudaTimer(torch.device("cuda")), []
    for layer, tier in itertools.product(
        PAPER_LAYERS, os.environ.get("TIERS", "tf32,bf16").split(",")
    ):
        dtype, precision = TIERS[tier]
        x_shape, w_shape = layer.shapes(PAPER_BATCH)
        for layout in ("NCHW", "NHWC"):
            fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
            x = torch.randn(x_shape, device="cuda").to(dtype=dtype, memory_format=fmt)
            w = torch.randn(w_shape, device="cuda").to(dtype)
            ref = F.conv2d(x.double(), w.double(), **layer.conv_kwargs())
            best = {}
            for mode, (windows, loop) in MODES.items():
                if (loop == "channels" and layer.c < 16) or (mode == "mat-cb" and layout == "NCHW"):
                    continue
                for config in tiles(dtype):
                    config = dict(config, LOOP=loop)
                    kwargs = dict(layer.conv_kwargs(), precision=precision, windows=windows,
                                  config=config)  # fmt: skip
                    run = lambda x=x, w=w, kw=kwargs: im2win.conv2d(x, w, **kw)  # noqa: E731
                    row = dict(layer=layer.name, tier=tier, layout=layout, mode=mode,
                               config=config, rel_err=relative_error(run(), ref),
                               ms=timer(run, 8))  # fmt: skip
                    row["tflops"] = layer.flop(PAPER_BATCH) / row["ms"] / 1e9
                    rows.append(row)
                    if mode not in best or row["ms"] < best[mode]["ms"]:
                        best[mode] = row
            torch.backends.cudnn.benchmark = True
            torch.backends.cudnn.allow_tf32 = tier == "tf32"
            kw = layer.conv_kwargs()
            torch_ms = timer(lambda x=x, w=w, kw=kw: F.conv2d(x, w, **kw), 8)
            modes = " ".join(f"{m} {r['tflops']:6.1f}" for m, r in best.items())
            torch_tflops = layer.flop(PAPER_BATCH) / torch_ms / 1e9
            print(f"{layer.name:7s} {tier:6s} {layout} {modes} | torch {torch_tflops:6.1f}")
    with open(os.path.join(os.environ.get("OUT", "."), "sweep.json"), "w") as f:
        json.dump(rows, f)


if __name__ == "__main__":
    main()

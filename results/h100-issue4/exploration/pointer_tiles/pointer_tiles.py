"""Not yet run. The pointer kernel's tiles on the layers it serves at batch 128 in the tensor-core
tiers (conv12: 5x5 outputs, no TMA tile wastes under a quarter; conv5: Cg = 96, no whole
64-channel TMA block). A Triton GEMM over conv12's im2col matrix ran 442 TFLOPS in bf16
where the pointer kernel ran 255 and cuDNN 391 (`../gemm_ceiling/`): are the pointer
kernel's tiles (64 x 128 x 64, 4 warps, 3 stages by the heuristic) what is missing? Each
pinned config is checked against F.conv2d in fp32 (TF32 off) before it is timed (kernel
time, L2 cold); the default and cuDNN's best in the same process.

    PYTHONPATH=src:notes/scripts python3 results/h100-issue4/exploration/pointer_tiles/pointer_tiles.py
"""

import itertools
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

LAYERS = [layer for layer in PAPER_LAYERS if layer.name in ("conv5", "conv12")]
TILES = (  # BLOCK_M, BLOCK_N, num_warps, num_stages (BLOCK_K: 64 in bf16, 32 in tf32)
    (64, 128, 4, 3), (128, 64, 4, 4), (128, 128, 4, 3), (128, 128, 8, 3), (128, 128, 8, 4),
    (64, 256, 4, 3), (128, 256, 8, 3), (256, 128, 8, 3),
)  # fmt: skip
TIERS = {"bf16": (torch.bfloat16, None, 64), "tf32": (torch.float32, "tf32", 32)}


def main():
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")
    torch.backends.cudnn.benchmark = True
    meta = provenance(torch.device("cuda"), " ".join(["python3", *sys.argv]))
    out = open(os.path.join(os.environ.get("OUT", "."), "pointer_tiles.jsonl"), "w")
    out.write(json.dumps(dict(provenance=meta)) + "\n")
    for layer, (tier, (dtype, precision, block_k)), layout in itertools.product(
        LAYERS, TIERS.items(), ("NCHW", "NHWC")
    ):
        xs, ws = layer.shapes(PAPER_BATCH)
        fmt = torch.channels_last if layout == "NHWC" else torch.contiguous_format
        x = torch.randn(xs, device="cuda").to(dtype).to(memory_format=fmt)
        w = torch.randn(ws, device="cuda").to(dtype)
        set_fp32_precision(False)
        ref = F.conv2d(x.float(), w.float())
        set_fp32_precision(tier == "tf32")
        calls = {"default": None, "cudnn": "cudnn"}
        for bm, bn, warps, stages in TILES:
            calls[f"{bm}x{bn}x{block_k} w{warps} s{stages}"] = dict(
                BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=block_k, num_warps=warps, num_stages=stages,
                LOOP="channels")  # fmt: skip
        row = dict(layer=layer.name, tier=tier, layout=layout)
        for name, config in calls.items():
            if config == "cudnn":
                fn = lambda: F.conv2d(x, w)  # noqa: E731
            else:
                fn = lambda config=config: im2win.conv2d(x, w, precision=precision, config=config)
            try:
                err = ((fn().float() - ref).abs().max() / ref.abs().max()).item()
                tf = layer.flop(PAPER_BATCH) / gpu_ms(fn, flush) / 1e9
            except Exception as exc:  # noqa: BLE001 - a tile this GPU cannot run
                out.write(json.dumps(dict(row, config=name, error=str(exc)[:200])) + "\n")
                continue
            out.write(json.dumps(dict(row, config=name, tflops=tf, err=err)) + "\n")
            row[name] = round(tf, 1)
        out.flush()
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

"""The stems' pointer-kernel tiles with 32- and 64-bit index arithmetic (the flag forced
through `needs_wide_index`), bf16, five (layer, layout) cases, batch 128: after the 32-bit
change slowed conv1 and conv2 in bf16 NHWC (ab_index.py). CudaTimer (L2 flushed), median of
20, each output checked against F.conv2d in fp32 'ieee'.

    PYTHONPATH=src python3 stem_tiles.py [out.json]
"""

import importlib
import json
import sys

import torch
import torch.nn.functional as F

import im2win
from im2win.bench.layers import PAPER_LAYERS
from im2win.bench.timing import CudaTimer

module = importlib.import_module("im2win.kernels.conv2d_fwd")
TILES = [  # BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages
    (64, 128, 32, 4, 3), (64, 128, 32, 4, 2), (64, 128, 32, 4, 4), (64, 128, 64, 4, 3),
    (128, 128, 32, 8, 3), (128, 128, 64, 8, 3), (256, 128, 64, 8, 3), (128, 128, 32, 4, 3),
]  # fmt: skip
timer = CudaTimer(torch.device("cuda"))
rows = []
CASES = [("conv1", "NHWC"), ("conv2", "NHWC"), ("conv1", "NCHW"), ("conv3", "NHWC"),
         ("conv7", "NHWC")]
for name, layout in CASES:
    layer = next(l for l in PAPER_LAYERS if l.name == name)
    for dtype, precision in ((torch.bfloat16, "ieee"),):
        if True:
            torch.manual_seed(0)
            (xs, ws), kw = layer.shapes(128), layer.conv_kwargs()
            x = torch.randn(xs, device="cuda").to(dtype)
            w = (torch.randn(ws, device="cuda") / (ws[1] * ws[2] * ws[3]) ** 0.5).to(dtype)
            if layout == "NHWC":
                x = x.to(memory_format=torch.channels_last)
            torch.backends.cudnn.allow_tf32 = False
            ref = F.conv2d(x.float(), w.float(), **kw)
            res = {}
            for wide in (False, True):
                module.needs_wide_index = lambda *a, wide=wide: wide
                for bm, bn, bk, nw, ns in TILES:
                    if dtype == torch.float32 and bk == 64:
                        continue
                    cfg = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=nw, num_stages=ns,
                               LOOP="flat")  # fmt: skip
                    call = lambda: im2win.conv2d(x, w, **kw, precision=precision, config=cfg)  # noqa: E731
                    y = call()
                    err = ((y.float() - ref).norm() / ref.norm()).item()
                    name = f"{'i64' if wide else 'i32'} {bm}x{bn}x{bk}w{nw}s{ns}"
                    res[name] = (timer(call, 20), err)
            best = min(res.items(), key=lambda kv: kv[1][0])
            print(f"{layer.name} {str(dtype)[6:]} {layout}: best {best[0]} {best[1][0]:.4f} | "
                  + " ".join(f"{k}={v[0]:.4f}" for k, v in res.items()), flush=True)
            bad = {k: v[1] for k, v in res.items() if v[1] > 1e-2}
            if bad:
                print("   FAILED", bad, flush=True)
            rows.append(dict(layer=layer.name, dtype=str(dtype), layout=layout,
                             ms_err=res, gpu=torch.cuda.get_device_name()))  # fmt: skip
if len(sys.argv) > 1:
    json.dump(rows, open(sys.argv[1], "w"), indent=1)

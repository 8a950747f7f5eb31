"""The fp32-accurate tier's pointer-kernel tiles: the stems (conv1, conv2, conv3, conv7) in
'ieee' (FMA) and 'tf32x3', and four deep layers in 'tf32x3' at the library's default,
batch 128, NCHW and NHWC. Kernel plus host as the bench times a call (CudaTimer, L2
flushed, median of 20); each output checked against float64 F.conv2d (the tier's bound,
relative error <= 1e-5). Run once on the code under test and once on the code before it
(PYTHONPATH, DEFAULT_ONLY=1: the defaults alone) in the same call to compare the defaults.
SWEEP=deep: the deep layers' tiles in 'tf32x3' instead (NHWC; the NCHW layers run the same
tiles after staging), the library's reduction loop.

    PYTHONPATH=src python3 fp32_sweep.py compile <i> <n>   # n processes at once
    PYTHONPATH=src python3 fp32_sweep.py time [out.json]
"""

import json
import os
import sys

import torch
import torch.nn.functional as F

import im2win
from im2win.bench.layers import PAPER_LAYERS
from im2win.bench.timing import CudaTimer

TILES = [  # BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages
    (64, 128, 32, 8, 3), (128, 128, 32, 8, 3), (256, 128, 32, 8, 3), (128, 128, 16, 8, 3),
    (64, 128, 16, 4, 3), (128, 64, 32, 4, 3), (128, 64, 16, 4, 3), (64, 64, 32, 4, 3),
    (64, 64, 16, 4, 3), (256, 64, 32, 8, 3), (32, 128, 32, 4, 3), (128, 128, 32, 4, 3),
]  # fmt: skip
STEMS = ("conv1", "conv2", "conv3", "conv7")
JOBS = [(name, prec, layout) for name in STEMS for prec in ("ieee", "tf32x3")
        for layout in ("NHWC", "NCHW")]  # fmt: skip
JOBS += [(name, "tf32x3", layout) for name in ("conv5", "conv8", "conv10", "conv12")
         for layout in ("NHWC", "NCHW")]  # fmt: skip
DEEP_TILES = [
    (64, 128, 32, 4, 3), (64, 128, 32, 8, 3), (128, 128, 32, 8, 3), (128, 128, 32, 4, 3),
    (128, 64, 32, 4, 3), (64, 64, 32, 4, 4), (64, 256, 32, 8, 3), (128, 256, 32, 8, 3),
    (256, 64, 32, 8, 3), (64, 128, 32, 4, 4), (128, 128, 16, 8, 4), (32, 128, 32, 4, 4),
]  # fmt: skip
if os.environ.get("SWEEP") == "deep":
    JOBS = [(name, "tf32x3", "NHWC") for name in ("conv5", "conv6", "conv8", "conv9", "conv10",
                                                   "conv11", "conv12")]  # fmt: skip
BOUND = 1e-5


def configs(name):
    out = {"default": None}
    if os.environ.get("DEFAULT_ONLY"):
        return out
    stem = name in STEMS
    for bm, bn, bk, w, s in TILES if stem else DEEP_TILES:
        out[f"{bm}x{bn}x{bk}w{w}s{s}"] = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=w,
                                              num_stages=s, **dict(LOOP="flat") if stem else {})  # fmt: skip
    return out


def main():
    mode = sys.argv[1]
    jobs = JOBS[int(sys.argv[2]) :: int(sys.argv[3])] if mode == "compile" else JOBS
    timer = CudaTimer(torch.device("cuda"))
    rows = []
    for name, prec, layout in jobs:
        layer = next(l for l in PAPER_LAYERS if l.name == name)
        torch.manual_seed(0)
        (xs, ws), kw = layer.shapes(128), layer.conv_kwargs()
        x = torch.randn(xs, device="cuda")
        w = torch.randn(ws, device="cuda") / (ws[1] * ws[2] * ws[3]) ** 0.5
        if layout == "NHWC":
            x, w = (t.to(memory_format=torch.channels_last) for t in (x, w))
        ref = F.conv2d(x.double(), w.double(), **kw) if mode == "time" else None
        res = {}
        for label, cfg in configs(name).items():
            call = lambda: im2win.conv2d(x, w, **kw, precision=prec, config=cfg)  # noqa: E731
            try:
                y = call()
            except Exception as exc:  # out of shared memory, say
                res[label] = repr(exc)[:80]
                continue
            if mode == "compile":
                continue
            err = ((y.double() - ref).norm() / ref.norm()).item()
            res[label] = (timer(call, 20), err)
        if mode == "compile":
            print("compiled", name, prec, layout, flush=True)
            continue
        ok = {k: v for k, v in res.items() if isinstance(v, tuple) and v[1] <= BOUND}
        rows.append(dict(layer=name, precision=prec, layout=layout, ms_err=res))
        if not ok:
            print(f"{name} {prec} {layout}: none within the bound: {res}", flush=True)
            continue
        best = min(ok.items(), key=lambda kv: kv[1][0])
        d = res["default"]
        print(f"{name} {prec} {layout}: default {d[0]:.4f} (err {d[1]:.1e}) best {best[0]} "
              f"{best[1][0]:.4f} ({d[0] / best[1][0]:.2f}x) | "
              + " ".join(f"{k}={v[0]:.4f}" for k, v in ok.items() if k != "default"),
              flush=True)  # fmt: skip
        bad = {k: v for k, v in res.items() if k not in ok}
        if bad:
            print("   FAILED or over the bound:", bad, flush=True)
    if mode == "time" and len(sys.argv) > 2:
        meta = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__)
        json.dump(dict(**meta, rows=rows), open(sys.argv[2], "w"), indent=1)


if __name__ == "__main__":
    main()

"""The stems' pointer-kernel tiles after 32-bit indices: conv1, conv2, conv3, conv7 at batch
128, bf16 and tf32, NCHW and NHWC; every candidate tile of `tuning.candidate_configs`, more
stages and warps on the winners of earlier sweeps, and the library's default. Kernel plus
host as the bench times a call: CudaTimer (L2 flushed), median of 20. Each output
NaN-poisoned (a fresh output each call is not: the library allocates it) and checked
against F.conv2d in fp32 'ieee'.

    PYTHONPATH=src python3 stem_sweep.py compile <i> <n>   # n processes at once
    PYTHONPATH=src python3 stem_sweep.py time [out.json]
"""

import json
import sys

import torch
import torch.nn.functional as F

import im2win
from im2win.bench.layers import PAPER_LAYERS
from im2win.bench.timing import CudaTimer
from im2win.kernels import tuning

EXTRA = [  # BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages
    (128, 64, 32, 4, 4), (256, 64, 32, 8, 3), (256, 64, 32, 4, 3), (128, 128, 32, 4, 3),
    (128, 128, 32, 4, 4), (256, 128, 32, 8, 3), (128, 64, 16, 4, 3), (64, 64, 32, 4, 3),
]  # fmt: skip
JOBS = [(name, tier, layout) for name in ("conv1", "conv2", "conv3", "conv7")
        for tier in ("bf16", "tf32") for layout in ("NHWC", "NCHW")]  # fmt: skip
TIERS = {"bf16": (torch.bfloat16, "ieee"), "tf32": (torch.float32, "tf32")}


def configs(dtype):
    out = {"default": None}
    for c in tuning.candidate_configs(dtype):
        out[f"{c['BLOCK_M']}x{c['BLOCK_N']}x{c['BLOCK_K']}w{c['num_warps']}s{c['num_stages']}"] = c
    for bm, bn, bk, w, s in EXTRA:
        out[f"{bm}x{bn}x{bk}w{w}s{s}"] = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=w,
                                              num_stages=s)  # fmt: skip
    return {k: v if v is None else dict(v, LOOP="flat") for k, v in out.items()}


def main():
    mode = sys.argv[1]
    jobs = JOBS[int(sys.argv[2]) :: int(sys.argv[3])] if mode == "compile" else JOBS
    timer = CudaTimer(torch.device("cuda"))
    rows = []
    for name, tier, layout in jobs:
        layer = next(l for l in PAPER_LAYERS if l.name == name)
        dtype, precision = TIERS[tier]
        torch.manual_seed(0)
        (xs, ws), kw = layer.shapes(128), layer.conv_kwargs()
        x = torch.randn(xs, device="cuda").to(dtype)
        w = (torch.randn(ws, device="cuda") / (ws[1] * ws[2] * ws[3]) ** 0.5).to(dtype)
        if layout == "NHWC":
            x = x.to(memory_format=torch.channels_last)
        torch.backends.cudnn.allow_tf32 = False
        ref = F.conv2d(x.float(), w.float(), **kw)
        res = {}
        for label, cfg in configs(dtype).items():
            call = lambda: im2win.conv2d(x, w, **kw, precision=precision, config=cfg)  # noqa: E731
            try:
                y = call()
            except Exception as exc:  # out of shared memory, say
                res[label] = repr(exc)[:80]
                continue
            if mode == "compile":
                continue
            err = ((y.float() - ref).norm() / ref.norm()).item()
            res[label] = (timer(call, 20), err)
        if mode == "compile":
            print("compiled", name, tier, layout, flush=True)
            continue
        ok = {k: v for k, v in res.items() if isinstance(v, tuple) and v[1] < 1e-2}
        best = min(ok.items(), key=lambda kv: kv[1][0])
        print(f"{name} {tier} {layout}: default {res['default'][0]:.4f} best {best[0]} "
              f"{best[1][0]:.4f} ({res['default'][0] / best[1][0]:.2f}x) | "
              + " ".join(f"{k}={v[0]:.4f}" for k, v in ok.items()), flush=True)  # fmt: skip
        bad = {k: v for k, v in res.items() if k not in ok}
        if bad:
            print("   FAILED or not run:", bad, flush=True)
        rows.append(dict(layer=name, tier=tier, layout=layout, ms_err=res))
    if mode == "time" and len(sys.argv) > 2:
        meta = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__)
        json.dump(dict(**meta, rows=rows), open(sys.argv[2], "w"), indent=1)


if __name__ == "__main__":
    main()

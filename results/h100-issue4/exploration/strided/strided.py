"""Strided TMA window tiles (the input seen as [N, H/sh, sh, W/sw, sw*C], conv2d_fwd_tma.py)
against the pointer kernel the library ran these layers on before, and cuDNN (F.conv2d,
cudnn.benchmark): the paper's conv4 and ResNet-50's stride-2 layers with C >= 16, batch
128, channels-last, bf16 and tf32. Kernel time: CudaTimer (L2 flushed), median of 20, each
launch planned once. Every output NaN-poisoned first and checked against fp32 'ieee'
F.conv2d (relative Frobenius error, and the worst element against max |ref|).

    PYTHONPATH=src python3 strided.py compile <i> <n>   # in n processes at once: compiles
    PYTHONPATH=src python3 strided.py time [out.json]    # one process: checks and times
"""

import json
import sys

import torch
import torch.nn.functional as F

from im2win.bench.layers import PAPER_LAYERS, RESNET50_LAYERS
from im2win.bench.timing import CudaTimer
from im2win.kernels import conv2d_fwd_config, tma_block_k
from im2win.kernels.conv2d_fwd_tma import tma_launcher, tma_supported
from im2win.ops import default_loop, plan_into
from im2win.params import conv_params

LAYERS = [l for l in PAPER_LAYERS + RESNET50_LAYERS if l.stride > 1 and l.c % 16 == 0]
BATCH = 128


def variants(kg: int) -> dict:
    """name: (BLOCK_P, BLOCK_Q, BLOCK_N, num_warps, num_stages)."""
    out = {}
    bns = (64,) if kg <= 64 else (128, 256) if kg >= 256 else (128,)
    for bn in bns:
        if bn == 256:
            shapes = [(1, 64, 4, 3), (8, 8, 4, 3), (4, 16, 4, 3), (1, 128, 8, 3)]
        elif bn == 128:
            shapes = [(1, 128, 4, 4), (1, 128, 8, 3), (8, 16, 4, 4), (4, 32, 4, 4),
                      (16, 8, 4, 4), (2, 64, 4, 4)]  # fmt: skip
        else:
            shapes = [(1, 128, 4, 4), (8, 16, 4, 4), (4, 32, 4, 4), (2, 64, 4, 4),
                      (16, 16, 8, 3), (8, 32, 8, 3), (2, 128, 8, 3)]  # fmt: skip
        for bp, bq, w, s in shapes:
            out[f"{bp}x{bq}x{bn}w{w}s{s}"] = (bp, bq, bn, w, s)
    return out


def jobs():
    return [(l, dt) for l in LAYERS for dt in (torch.bfloat16, torch.float32)]


def setup(layer, dtype):
    (xs, ws), kw = layer.shapes(BATCH), layer.conv_kwargs()
    x = torch.randn(xs, device="cuda", dtype=dtype).to(memory_format=torch.channels_last)
    w = torch.randn(ws, device="cuda", dtype=dtype) / (ws[1] * ws[2] * ws[3]) ** 0.5
    return x, w, kw


def calls(layer, dtype, x, w, y):
    """name: a planned launch filling y (the pointer kernel through the library's plan)."""
    prec = "tf32" if dtype == torch.float32 else "ieee"
    bk = tma_block_k(layer.c, dtype)
    s, pad = (layer.stride,) * 2, (layer.padding,) * 2
    assert tma_supported(x, layer.c, s), layer.name
    p = q = layer.out_hw
    params = conv_params(stride=layer.stride, padding=layer.padding,
                         kernel_size=(layer.rs, layer.rs))  # fmt: skip
    ptr_cfg = dict(LOOP=default_loop(layer.c, "streamed", True), **conv2d_fwd_config(
        BATCH * p * q, layer.k, layer.c * layer.rs**2, dtype, False))  # fmt: skip
    into = plan_into(x, w, None, params, channels_last=True, precision=prec, windows=None,
                     config=ptr_cfg)  # fmt: skip
    out = {"pointer": lambda: into(x, w, None, y)}
    for name, (bp, bq, bn, nw, ns) in variants(layer.k).items():
        cfg = dict(BLOCK_M=bp * bq, BLOCK_Q=bq, BLOCK_N=bn, BLOCK_K=bk, num_warps=nw,
                   num_stages=ns)  # fmt: skip
        launch = tma_launcher(x, w, (p, q), groups=1, dilation=(1, 1), pad_top_left=pad,
                              precision=prec, config=cfg, interpreted=False, stride=s)  # fmt: skip
        out[name] = (lambda launch: lambda: launch(x, w, None, y))(launch)
    return out


def main():
    mode = sys.argv[1]
    torch.backends.cudnn.benchmark = True
    work = jobs()
    if mode == "compile":
        i, n = int(sys.argv[2]), int(sys.argv[3])
        work = work[i::n]
    timer = CudaTimer(torch.device("cuda"))
    rows = []
    for layer, dtype in work:
        x, w, kw = setup(layer, dtype)
        torch.backends.cudnn.allow_tf32 = False
        ref = F.conv2d(x.float(), w.float(), **kw)
        torch.backends.cudnn.allow_tf32 = True
        y = torch.empty_like(ref, dtype=dtype, memory_format=torch.channels_last)
        res, errs = {}, {}
        fns = calls(layer, dtype, x, w, y)
        if mode == "time":
            res["cudnn"] = layer.flop(BATCH) / timer(lambda: F.conv2d(x, w, **kw), 20) / 1e9
        for name, fn in fns.items():
            try:
                y.fill_(float("nan"))
                fn()
                torch.cuda.synchronize()
            except Exception as exc:  # out of shared memory, say
                errs[name] = repr(exc)[:100]
                continue
            if mode == "compile":
                continue
            e = ((y.float() - ref).norm() / ref.norm()).item()
            worst = ((y.float() - ref).abs().max() / ref.abs().max()).item()
            errs[name] = (e, worst)
            ok = e < 1e-2 and worst < 2e-2
            res[name] = layer.flop(BATCH) / timer(fn, 20) / 1e9 if ok else float("nan")
        if mode == "compile":
            print("compiled", layer.name, dtype, {k: v for k, v in errs.items()}, flush=True)
            continue
        rows.append(dict(layer=layer.name, dtype=str(dtype)[6:], tflops=res, err=errs))
        tma = {k: v for k, v in res.items() if k not in ("cudnn", "pointer") and v == v}
        best = max(tma.items(), key=lambda kv: kv[1], default=("none", 0.0))
        print(f"{layer.name:16s} {str(dtype)[6:]:8s} cudnn={res['cudnn']:.0f} "
              f"pointer={res.get('pointer', float('nan')):.0f} best {best[0]}={best[1]:.0f} "
              f"({best[1] / res['cudnn']:.2f}x cudnn, {best[1] / res.get('pointer', float('nan')):.2f}x pointer) | "
              + " ".join(f"{k}={v:.0f}" for k, v in tma.items()), flush=True)  # fmt: skip
        bad = {k: v for k, v in errs.items() if not isinstance(v, tuple) or v[0] >= 1e-2 or v[1] >= 2e-2}
        if bad:
            print("   FAILED:", bad, flush=True)
    if mode == "time" and len(sys.argv) > 2:
        meta = dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__,
                    cudnn=torch.backends.cudnn.version())  # fmt: skip
        json.dump(dict(**meta, rows=rows), open(sys.argv[2], "w"), indent=1)


if __name__ == "__main__":
    main()

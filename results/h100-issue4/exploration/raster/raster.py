"""Raster TMA tiles (runs of BLOCK_M consecutive input pixels, one 2-D box) against the window
tiles `tma_config` picks and cuDNN (F.conv2d, cudnn.benchmark), unpadded stride-1 layers,
channels-last, batch 128, bf16 and tf32. Kernel time: CudaTimer (cold L2), median of 20.
Each variant's output is NaN-poisoned first and checked against fp32 'ieee' F.conv2d.

    PYTHONPATH=src python results/h100-issue4/exploration/raster/raster.py [out.json]
"""
import json, sys, torch, torch.nn.functional as F
from im2win.kernels.conv2d_fwd_tma import conv2d_fwd_tma
from im2win.kernels import tma_config
from im2win.bench.layers import PAPER_LAYERS, RESNET50_LAYERS
from im2win.bench.timing import CudaTimer

torch.backends.cudnn.benchmark = True
timer = CudaTimer(torch.device("cuda"))
layers = [l for l in PAPER_LAYERS if l.stride == 1 and l.c % 16 == 0]
layers += [l for l in RESNET50_LAYERS if l.rs == 1 and l.stride == 1]
VARIANTS = {  # name: BLOCK_M, BLOCK_N, num_warps, num_stages
    "r128x128w4s4": (128, 128, 4, 4), "r128x128w8s3": (128, 128, 8, 3),
    "r128x256w8s3": (128, 256, 8, 3), "r64x256w4s3": (64, 256, 4, 3),
    "r256x128w8s3": (256, 128, 8, 3), "r128x64w4s4": (128, 64, 4, 4),
}
rows = []
for layer in layers:
    for dt in (torch.bfloat16, torch.float32):
        prec = "tf32" if dt == torch.float32 else "ieee"
        bk = 64 if dt.itemsize == 2 else 32
        (xs, ws), kw = layer.shapes(128), layer.conv_kwargs()
        x = torch.randn(xs, device="cuda", dtype=dt).to(memory_format=torch.channels_last)
        w = torch.randn(ws, device="cuda", dtype=dt).to(memory_format=torch.channels_last) / (ws[1] * ws[2] * ws[3]) ** 0.5
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        ref = F.conv2d(x.float(), w.float(), **kw)
        torch.backends.cudnn.allow_tf32 = True
        y = torch.empty_like(ref, dtype=dt, memory_format=torch.channels_last)
        p = q = layer.out_hw
        flops = layer.flop(128)
        res = {"cudnn": flops / timer(lambda: F.conv2d(x, w, **kw), 20) / 1e9}
        cands = {"rule": (tma_config(p, q, layer.k, bk, dt, prec, False, layer.rs**2, False), False)}
        for name, (bm, bn, nw, ns) in VARIANTS.items():
            cands[name] = (dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=nw, num_stages=ns), True)
        errs = {}
        for name, (cfg, raster) in cands.items():
            if cfg is None:
                continue
            f = lambda: conv2d_fwd_tma(x, w, None, y, groups=1, dilation=(1, 1), pad_top_left=(0, 0),
                                       precision=prec, config=cfg, interpreted=False, raster=raster)
            try:
                y.fill_(float("nan")); f(); torch.cuda.synchronize()
            except Exception as exc:  # out of shared memory, say
                errs[name] = repr(exc)[:80]; continue
            e = ((y.float() - ref).norm() / ref.norm()).item()
            errs[name] = e
            res[name] = flops / timer(f, 20) / 1e9 if e < 1e-2 else float("nan")
        rows.append(dict(layer=layer.name, dtype=str(dt)[6:], rule=cands["rule"][0], tflops=res, err=errs))
        best = max([(v, k) for k, v in res.items() if k != "cudnn" and v == v] or [(0.0, "none")])
        print(f"{layer.name:20s} {str(dt)[6:]:8s} " + " ".join(f"{k}={v:.0f}" for k, v in res.items())
              + f"  best {best[1]} {best[0] / res['cudnn']:.2f}x cudnn", flush=True)
        bad = {k: v for k, v in errs.items() if not isinstance(v, float) or v >= 1e-2}
        if bad:
            print("   failed:", bad, flush=True)
if len(sys.argv) > 1:
    json.dump(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows), open(sys.argv[1], "w"), indent=1)

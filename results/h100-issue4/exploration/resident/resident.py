"""Not yet run on a GPU. The resident-filter Gluon kernel (`conv_resident.py`) against the
library's raster tiles (the same [N*H*W, C] boxes, the filter fetched per tile) and cuDNN:

1. correctness on odd unpadded shapes (runs across rows and images, KG under and over a
   tile, more CTAs than tiles, dilation, bias), bf16 and tf32, outputs NaN-poisoned,
   relative error and worst element against float64;
2. kernel time (CudaTimer: L2 flushed, median of 20, launches planned once) on the
   unpadded stride-1 layers whose filter slice fits in shared memory at some BLOCK_N
   (conv8-11, ResNet-50's stride-1 1x1 layers), batch 128, NHWC, bf16 and tf32.

    PYTHONPATH=src python3 results/h100-issue4/exploration/resident/resident.py [out.json]
"""

import json
import os
import sys

import torch
import torch.nn.functional as F
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conv_resident import conv_resident  # noqa: E402

from im2win.bench.layers import PAPER_LAYERS, RESNET50_LAYERS  # noqa: E402
from im2win.bench.timing import CudaTimer  # noqa: E402
from im2win.kernels.conv2d_fwd import kernel_filter  # noqa: E402
from im2win.kernels.conv2d_fwd_tma import tma_launcher  # noqa: E402
from im2win.kernels.tuning import raster_tiles  # noqa: E402

GDT = {torch.bfloat16: gl.bfloat16, torch.float32: gl.float32}
SMEM_BUDGET = 200 << 10  # of the 227 KiB a CTA may take: barriers and slack


def plan(c, k, r, s, dtype, stages=3):
    """BLOCK_M, BLOCK_N, BLOCK_K, NKB, STAGES, warps: the widest BLOCK_N whose filter slice
    and A ring fit, or None."""
    bk = 64 if dtype.itemsize == 2 else 32
    if c % bk:
        return None
    nkb = r * s * c // bk
    for bn in (128, 64, 32):
        if bn > max(16, 1 << (k - 1).bit_length()):  # no wider than the channels need
            continue
        smem = (nkb * bn + stages * 128) * bk * dtype.itemsize
        if smem <= SMEM_BUDGET:
            return 128, bn, bk, nkb, stages, 8 if bn == 128 and dtype.itemsize == 2 else 4
    return None


def resident_launcher(x, w, out_hw, dilation, cfg):
    """launch(x, w, bias, y) for an unpadded unit-stride convolution, groups 1, dense NHWC x."""
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    p, q = out_hw
    bm, bn, bk, nkb, stages, warps = cfg
    g = GDT[x.dtype]
    x_layout = gl.NVMMASharedLayout.get_default_for([bm, bk], g)
    f_layout = gl.NVMMASharedLayout.get_default_for([bn, bk], g)
    num_pid_n = -(-k // bn)
    tiles = -(-((n - 1) * h * wd + (p - 1) * wd + q) // bm)
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    grid = (max(1, min(sms // num_pid_n, tiles)) * num_pid_n,)

    def launch(x, w, bias, y):
        filt = kernel_filter(w, "rfc")  # [K, R*S*C]
        xd = TensorDescriptor(x, [n * h * wd, c], [c, 1], [bm, bk], x_layout)
        fd = TensorDescriptor(filt, list(filt.shape), list(filt.stride()), [bn, bk], f_layout)
        conv_resident[grid](xd, fd, bias, y, n, cg, k, s, p, q, h, wd,
                            0 if bias is None else bias.stride(0), *y.stride(), *dilation,
                            HAS_BIAS=bias is not None, NKB=nkb, STAGES=stages,
                            num_warps=warps)  # fmt: skip
        return y

    return launch


def make(shape_x, shape_w, dtype, bias):
    x = torch.randn(shape_x, device="cuda").to(dtype).to(memory_format=torch.channels_last)
    w = (torch.randn(shape_w, device="cuda") / (shape_w[1] * shape_w[2] * shape_w[3]) ** 0.5)
    b = torch.randn(shape_w[0], device="cuda").to(dtype) if bias else None
    return x, w.to(dtype), b


def check():
    odd = [  # x, w, dilation, bias
        ((2, 64, 13, 11), (40, 64, 3, 3), (1, 1), True),  # KG under a tile
        ((3, 128, 9, 7), (72, 128, 3, 2), (2, 1), False),  # dilation, 2 n-slices
        ((1, 64, 6, 13), (300, 64, 1, 1), (1, 1), True),  # 1x1, more CTAs than tiles
        ((5, 64, 3, 4), (24, 64, 3, 3), (1, 1), True),  # images smaller than a run
        ((4, 64, 30, 29), (128, 64, 3, 3), (1, 1), False),  # many tiles a CTA
    ]
    bad = 0
    for dtype in (torch.bfloat16, torch.float32):
        for xs, ws, dil, has_b in odd:
            torch.manual_seed(0)
            x, w, b = make(xs, ws, dtype, has_b)
            ref = F.conv2d(x.double(), w.double(), None if b is None else b.double(), dilation=dil)
            cfg = plan(xs[1], ws[0], ws[2], ws[3], dtype)
            y = torch.full(ref.shape, float("nan"), device="cuda", dtype=dtype)
            y = y.to(memory_format=torch.channels_last)
            resident_launcher(x, w, ref.shape[2:], dil, cfg)(x, w, b, y)
            torch.cuda.synchronize()
            err = ((y.double() - ref).norm() / ref.norm()).item()
            worst = ((y.double() - ref).abs().max() / ref.abs().max()).item()
            ok = torch.isfinite(y).all().item() and err < 1e-2 and worst < 2e-2
            bad += not ok
            print(f"check {str(dtype)[6:]} x{xs} w{ws} d{dil} cfg{cfg}: err {err:.2e} "
                  f"worst {worst:.2e} {'ok' if ok else 'FAILED'}", flush=True)  # fmt: skip
    return bad


def timing(out):
    torch.backends.cudnn.benchmark = True
    timer = CudaTimer(torch.device("cuda"))
    layers = [l for l in PAPER_LAYERS if l.name in ("conv8", "conv9", "conv10", "conv11")]
    layers += [l for l in RESNET50_LAYERS if l.rs == 1 and l.stride == 1]
    rows = []
    for layer in layers:
        for dtype in (torch.bfloat16, torch.float32):
            cfg = plan(layer.c, layer.k, layer.rs, layer.rs, dtype)
            if cfg is None:
                continue
            torch.manual_seed(0)
            (xs, ws) = layer.shapes(128)
            x, w, _ = make(xs, ws, dtype, False)
            torch.backends.cudnn.allow_tf32 = False
            ref = F.conv2d(x.float(), w.float())
            torch.backends.cudnn.allow_tf32 = True
            y = torch.empty_like(ref, dtype=dtype, memory_format=torch.channels_last)
            prec = "tf32" if dtype == torch.float32 else "ieee"
            tiles = raster_tiles(layer.k, cfg[2], dtype)
            tiles.pop("LOOP")
            raster = tma_launcher(x, w, ref.shape[2:], groups=1, dilation=(1, 1),
                                  pad_top_left=(0, 0), precision=prec, config=tiles,
                                  interpreted=False, raster=True, slot={})  # fmt: skip
            resident = resident_launcher(x, w, ref.shape[2:], (1, 1), cfg)
            calls = {"cudnn": lambda: F.conv2d(x, w), "raster": lambda: raster(x, w, None, y),
                     "resident": lambda: resident(x, w, None, y)}  # fmt: skip
            row = dict(layer=layer.name, dtype=str(dtype)[6:], cfg=cfg)
            for name, fn in calls.items():
                y.fill_(float("nan"))
                z = fn()
                err = ((z.float() - ref).norm() / ref.norm()).item()
                row[name] = (layer.flop(128) / timer(fn, 20) / 1e9, err)
            rows.append(row)
            print(f"{layer.name:20s} {row['dtype']:8s} cfg {cfg}: " + " ".join(
                f"{k}={v[0]:.0f} TF (err {v[1]:.1e})" for k, v in row.items()
                if isinstance(v, tuple) and k != "cfg"), flush=True)  # fmt: skip
    if out:
        json.dump(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, rows=rows),
                  open(out, "w"), indent=1)  # fmt: skip


if __name__ == "__main__":
    failed = check()
    print(f"{failed} failed checks", flush=True)
    if not failed:
        timing(sys.argv[1] if len(sys.argv) > 1 else None)

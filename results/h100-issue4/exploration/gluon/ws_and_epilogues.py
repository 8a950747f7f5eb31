"""Where the Gluon kernels lose: epilogue variants (mma-layout store, blocked store, no store)."""
import os, sys, time
import torch, torch.nn.functional as F, triton
sys.path.insert(0, "src"); sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from im2win.kernels.conv2d_fwd_tma import conv2d_fwd_tma
from im2win.kernels.conv2d_fwd import kernel_filter
from im2win.kernels import tma_config
from im2win.bench.timing import CudaTimer
import conv_wgmma_v1 as gk, conv_wgmma_ws as gk2
GDT = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16, torch.float32: gl.float32}

def descs(x, weight, BP, BQ, BN, BK):
    n, c, h, w = x.shape
    filt = kernel_filter(weight, "rfc"); g = GDT[x.dtype]; sn, sc, sh, sw = x.stride()
    xd = TensorDescriptor(x, [n, h, w, c], [sn, sh, sw, sc], [1, BP, BQ, BK], gl.NVMMASharedLayout.get_default_for([1, BP, BQ, BK], g))
    fd = TensorDescriptor(filt, list(filt.shape), list(filt.stride()), [BN, BK], gl.NVMMASharedLayout.get_default_for([BN, BK], g))
    return xd, fd, filt

def run(kind, x, weight, y, pad, cfg, epi):
    n = x.shape[0]; k, cg, r, s = weight.shape; p, q = y.shape[2:]
    BP, BQ, BN, BK, ST, W = cfg
    xd, fd, filt = descs(x, weight, BP, BQ, BN, BK)
    grid = (n * triton.cdiv(p, BP) * triton.cdiv(q, BQ) * triton.cdiv(k, BN),)
    if kind == "gk":
        gk.conv_wgmma[grid](xd, fd, None, y, n, cg, k, r, s, p, q, 0, *y.stride(), *pad, 1, 1, HAS_BIAS=False, STAGES=ST, num_warps=W, EPI=epi)
    else:
        gk2.conv_ws[grid](xd, fd, y, y, n, cg, k, r, s, p, q, 0, *y.stride(), *pad, 1, 1, 0, STAGES=ST, CONSUMER_REGS=232, num_warps=4)

torch.backends.cudnn.benchmark = True
dev = "cuda"; out = os.environ.get("OUT", "/tmp"); log = open(f"{out}/exp3.log", "w")
def say(*a):
    s = " ".join(str(x) for x in a); print(s, flush=True); log.write(s + "\n"); log.flush()
timer = CudaTimer(torch.device(dev))
layers = [("conv8", 64, 112, 128, 3, 0), ("conv10", 128, 28, 128, 3, 0), ("conv11", 256, 14, 256, 3, 0), ("conv6", 256, 12, 512, 3, 0),
          ("r50-l3-3x3p", 256, 14, 256, 3, 1), ("r50-l1-3x3p", 64, 56, 64, 3, 1), ("r50-l2-1x1-512", 128, 28, 512, 1, 0)]
variants = [("gk", (8, 16, 128, 64, 4, 4), 0), ("gk", (8, 16, 128, 64, 4, 4), 1), ("gk", (8, 16, 128, 64, 4, 4), 2),
            ("gk", (8, 8, 128, 64, 4, 4), 1), ("gk", (16, 16, 128, 64, 3, 8), 1), ("gk", (16, 16, 128, 64, 3, 8), 2), ("gk", (8, 16, 256, 64, 3, 8), 1),
            ("gk2", (16, 16, 128, 64, 3, 0), 1), ("gk2", (8, 16, 128, 64, 4, 0), 1), ("gk2", (8, 16, 128, 64, 4, 0), 2) if False else ("gk2", (16, 16, 64, 64, 4, 0), 1)]
say("variants:", [f"{k}{c}e{e}" for k, c, e in variants])
dt = torch.bfloat16
for name, c, hw, k, rs, pd in layers:
    n = 128; pad = (pd, pd)
    x = torch.randn(n, c, hw, hw, device=dev, dtype=dt).to(memory_format=torch.channels_last)
    wt = torch.randn(k, c, rs, rs, device=dev, dtype=dt).to(memory_format=torch.channels_last)
    p = hw + 2 * pd - rs + 1; flops = 2 * n * k * c * rs * rs * p * p; tf = lambda ms: flops / ms / 1e9
    ref = F.conv2d(x, wt, None, 1, pad)
    t_cudnn = timer(lambda: F.conv2d(x, wt, None, 1, pad), 20)
    y = torch.empty_like(ref)
    cur = tma_config(p, p, k, 64, dt, "ieee", pd > 0, rs * rs, False)
    t_tma = None
    if cur is not None:
        f = lambda: conv2d_fwd_tma(x, wt, None, y, groups=1, dilation=(1, 1), pad_top_left=pad, precision="ieee", config=cur, interpreted=False)
        f(); t_tma = timer(f, 20)
    res = []
    for kind, cfg, epi in variants:
        try:
            y.fill_(float("nan")); run(kind, x, wt, y, pad, cfg, epi); torch.cuda.synchronize()
            e = ((y.float() - ref.float()).norm() / ref.float().norm()).item()
            if epi != 2 and not e < 2e-2:
                res.append(f"wrong{e:.2g}"); continue
            res.append(f"{tf(timer(lambda: run(kind, x, wt, y, pad, cfg, epi), 20)):.0f}")
        except Exception as ex:
            res.append(f"ERR:{type(ex).__name__}:{str(ex)[:60]}")
    say(f"{name:15s} cudnn {tf(t_cudnn):.0f} tma {'-' if t_tma is None else f'{tf(t_tma):.0f}'} | " + " ".join(res))

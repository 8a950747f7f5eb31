"""The library's Triton TMA kernel with 64 x 256 tiles (BLOCK_P x BLOCK_Q = 8 x 8 or 4 x 16,
BLOCK_N 256) on small outputs, against its current tma_config, the ping-pong Gluon kernel
and cuDNN; every config checked against the float64 reference on odd shapes first."""
import json, os, sys, time
import torch, torch.nn.functional as F, triton
sys.path.insert(0, "src"); sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gluon"))
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from im2win.kernels.conv2d_fwd_tma import conv2d_fwd_tma
from im2win.kernels.conv2d_fwd import kernel_filter
from im2win.kernels import tma_config
from im2win.bench.timing import CudaTimer
import conv_pingpong as gk3

GDT = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16, torch.float32: gl.float32}
SMS = torch.cuda.get_device_properties(0).multi_processor_count


def pingpong_conv(x, weight, bias, y, pad, cfg):
    n, c, h, w = x.shape; k, cg, r, s = weight.shape; p, q = y.shape[2:]
    BP, BQ, BN, BK, ST, REGS = cfg
    filt = kernel_filter(weight, "rfc"); g = GDT[x.dtype]; sn, sc, sh, sw = x.stride()
    xd = TensorDescriptor(x, [n, h, w, c], [sn, sh, sw, sc], [1, BP, BQ, BK], gl.NVMMASharedLayout.get_default_for([1, BP, BQ, BK], g))
    fd = TensorDescriptor(filt, list(filt.shape), list(filt.stride()), [BN, BK], gl.NVMMASharedLayout.get_default_for([BN, BK], g))
    tiles = n * triton.cdiv(p, BP) * triton.cdiv(q, BQ) * triton.cdiv(k, BN)
    gk3.conv_pingpong[(min(tiles, SMS),)](xd, fd, y, y, n, cg, k, r, s, p, q, tiles, 0, *y.stride(), *pad, 1, 1, 0,
                                          STAGES=ST, CONSUMER_REGS=REGS, num_warps=4)


def tma_conv(x, wt, bias, y, pad, cfg, prec):
    bp, bq, bn, bk, warps, stages = cfg
    conv2d_fwd_tma(x, wt, bias, y, groups=1, dilation=(1, 1), pad_top_left=pad, precision=prec, interpreted=False,
                   config=dict(BLOCK_M=bp * bq, BLOCK_Q=bq, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps, num_stages=stages))


torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
torch.backends.cudnn.benchmark = True
dev = "cuda"; out = os.environ.get("OUT", "/tmp"); T0 = time.time()
TILES = [(8, 8, 256, 4, 3), (8, 8, 256, 4, 4), (8, 8, 256, 8, 3), (4, 16, 256, 4, 3), (8, 16, 256, 8, 3), (8, 8, 128, 4, 4), (8, 16, 128, 4, 4)]
log = open(f"{out}/exp6.log", "w")
def say(*a):
    s = " ".join(str(x) for x in a); print(s, flush=True); log.write(s + "\n"); log.flush()
say("TMA tiles (BLOCK_P, BLOCK_Q, BLOCK_N, warps, stages):", TILES)

odd = [(1, 64, 13, 11, 300, 3, 3, (1, 1), True), (3, 128, 7, 7, 260, 3, 3, (1, 1), False), (2, 64, 9, 5, 512, 1, 1, (0, 0), True)]
bad = checked = 0
for dt in (torch.bfloat16, torch.float16, torch.float32):
    bk = 64 if dt.itemsize == 2 else 32
    prec = "tf32" if dt == torch.float32 else "ieee"
    for (n, c, h, w, k, r, s, pad, hb) in odd:
        x = torch.randn(n, c, h, w, device=dev, dtype=dt).to(memory_format=torch.channels_last)
        wt = torch.randn(k, c, r, s, device=dev, dtype=dt)
        b = torch.randn(k, device=dev, dtype=dt) if hb else None
        ref = F.conv2d(x.double().cpu(), wt.double().cpu(), None if b is None else b.double().cpu(), 1, pad)
        for t in TILES:
            for fmt in (torch.channels_last, torch.contiguous_format):
                y = torch.full(ref.shape, float("nan"), device=dev, dtype=dt).to(memory_format=fmt)
                tma_conv(x, wt, b, y, pad, (t[0], t[1], t[2], bk, t[3], t[4]), prec); torch.cuda.synchronize()
                e = ((y.cpu().double() - ref).norm() / ref.norm()).item(); checked += 1
                if not e < (2e-2 if dt != torch.float32 else 5e-3):
                    bad += 1; say("BAD", dt, (n, c, h, w, k, r, s, pad, hb), t, fmt, e)
say(f"odd shapes: {checked} runs, {bad} wrong ({time.time() - T0:.0f} s)")

layers = [("conv5", 96, 24, 256, 5, 0), ("conv6", 256, 12, 512, 3, 0), ("conv11", 256, 14, 256, 3, 0), ("conv12", 512, 7, 512, 3, 0),
          ("r50-l3-3x3", 256, 14, 256, 3, 1), ("r50-l4-3x3", 512, 7, 512, 3, 1), ("r50-l3-1x1-1024", 256, 14, 1024, 1, 0),
          ("r50-l3-1x1-reduce", 1024, 14, 256, 1, 0), ("r50-l4-1x1-2048", 512, 7, 2048, 1, 0), ("r50-l4-1x1-reduce", 2048, 7, 512, 1, 0)]
timer = CudaTimer(torch.device(dev)); rows = []
for dt in (torch.bfloat16, torch.float32):
    prec = "tf32" if dt == torch.float32 else "ieee"
    for name, c, hw, k, rs, pd in layers:
        if time.time() - T0 > 480:
            say("time guard: stopped before", name, dt); break
        n = 128; pad = (pd, pd)
        bk = 64 if dt.itemsize == 2 else 32
        while c % bk:
            bk //= 2
        x = torch.randn(n, c, hw, hw, device=dev, dtype=dt).to(memory_format=torch.channels_last)
        wt = torch.randn(k, c, rs, rs, device=dev, dtype=dt).to(memory_format=torch.channels_last)
        p = hw + 2 * pd - rs + 1; flops = 2 * n * k * c * rs * rs * p * p; tf = lambda ms: flops / ms / 1e9
        ref = F.conv2d(x, wt, None, 1, pad).float()
        y = torch.empty(n, k, p, p, device=dev, dtype=dt).to(memory_format=torch.channels_last)
        t = {"cudnn": tf(timer(lambda: F.conv2d(x, wt, None, 1, pad), 20))}
        cur = tma_config(p, p, k, bk, dt, prec, pd > 0, rs * rs, False)
        cands = [("current", cur)] if cur else []
        cands += [(f"tma{tl_}", dict(BLOCK_M=tl_[0] * tl_[1], BLOCK_Q=tl_[1], BLOCK_N=tl_[2], BLOCK_K=bk, num_warps=tl_[3], num_stages=tl_[4])) for tl_ in TILES]
        for key, cfg in cands:
            f = lambda: conv2d_fwd_tma(x, wt, None, y, groups=1, dilation=(1, 1), pad_top_left=pad, precision=prec, config=cfg, interpreted=False)
            y.fill_(float("nan")); f(); torch.cuda.synchronize()
            e = ((y.float() - ref).norm() / ref.norm()).item()
            t[key] = tf(timer(f, 20)) if e < 2e-2 else f"wrong {e:.3g}"
        ppc = (8, 8, 256, bk, 4, 232)
        y.fill_(float("nan")); pingpong_conv(x, wt, None, y, pad, ppc); torch.cuda.synchronize()
        e = ((y.float() - ref).norm() / ref.norm()).item()
        t["pingpong(8,8,256)"] = tf(timer(lambda: pingpong_conv(x, wt, None, y, pad, ppc), 20)) if e < 2e-2 else f"wrong {e:.3g}"
        rows.append(dict(layer=name, dtype=str(dt), current=cur, tflops=t))
        say(f"{name:18s} {str(dt)[6:]:8s} " + " ".join(f"{k_}={v_:.0f}" if isinstance(v_, float) else f"{k_}={v_}" for k_, v_ in t.items()))
json.dump(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__, cudnn=torch.backends.cudnn.version(),
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), rows=rows), open(f"{out}/exp6.json", "w"), indent=1)

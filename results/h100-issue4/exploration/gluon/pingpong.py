"""A persistent ping-pong Gluon convolution (conv_pingpong.py) against the plain Gluon
kernel (conv_wgmma.py), the library's Triton TMA kernel and cuDNN: correctness on odd
shapes (NHWC and NCHW outputs), then kernel time on the deep paper and ResNet-50 layers at
batch 128, channels-last in and out."""
import json, os, sys, time
import torch, torch.nn.functional as F, triton
sys.path.insert(0, "src"); sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
from im2win.kernels.conv2d_fwd_tma import conv2d_fwd_tma
from im2win.kernels.conv2d_fwd import kernel_filter
from im2win.kernels import tma_config
from im2win.bench.timing import CudaTimer
import conv_wgmma as gk, conv_pingpong as gk3

GDT = {torch.bfloat16: gl.bfloat16, torch.float16: gl.float16, torch.float32: gl.float32}


def gluon_conv(x, weight, bias, y, groups, dilation, pad, cfg, epi):
    n, c, h, w = x.shape; k, cg, r, s = weight.shape; p, q = y.shape[2:]
    BP, BQ, BN, BK, ST, W = cfg
    filt = kernel_filter(weight, "rfc"); g = GDT[x.dtype]; sn, sc, sh, sw = x.stride()
    xd = TensorDescriptor(x, [n, h, w, c], [sn, sh, sw, sc], [1, BP, BQ, BK], gl.NVMMASharedLayout.get_default_for([1, BP, BQ, BK], g))
    fd = TensorDescriptor(filt, list(filt.shape), list(filt.stride()), [BN, BK], gl.NVMMASharedLayout.get_default_for([BN, BK], g))
    kg = k // groups
    grid = (groups * n * triton.cdiv(p, BP) * triton.cdiv(q, BQ) * triton.cdiv(kg, BN),)
    gk.conv_wgmma[grid](xd, fd, bias, y, n, cg, kg, r, s, p, q, 0 if bias is None else bias.stride(0), *y.stride(),
                        *pad, *dilation, HAS_BIAS=bias is not None, STAGES=ST, num_warps=W, EPI=epi)


SMS = torch.cuda.get_device_properties(0).multi_processor_count


def pingpong_conv(x, weight, bias, y, groups, dilation, pad, cfg, epi=None):
    n, c, h, w = x.shape; k, cg, r, s = weight.shape; p, q = y.shape[2:]
    BP, BQ, BN, BK, ST, REGS = cfg
    filt = kernel_filter(weight, "rfc"); g = GDT[x.dtype]; sn, sc, sh, sw = x.stride()
    xd = TensorDescriptor(x, [n, h, w, c], [sn, sh, sw, sc], [1, BP, BQ, BK], gl.NVMMASharedLayout.get_default_for([1, BP, BQ, BK], g))
    fd = TensorDescriptor(filt, list(filt.shape), list(filt.stride()), [BN, BK], gl.NVMMASharedLayout.get_default_for([BN, BK], g))
    kg = k // groups
    tiles = groups * n * triton.cdiv(p, BP) * triton.cdiv(q, BQ) * triton.cdiv(kg, BN)
    gk3.conv_pingpong[(min(tiles, SMS),)](xd, fd, y if bias is None else bias, y, n, cg, kg, r, s, p, q, tiles,
                        0 if bias is None else bias.stride(0), *y.stride(), *pad, *dilation, int(bias is not None),
                        STAGES=ST, CONSUMER_REGS=REGS, num_warps=4)


def fit_bk(cfg, cg):
    cfg = list(cfg)
    while cg % cfg[3]:
        cfg[3] //= 2
    return tuple(cfg)


torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
torch.backends.cudnn.benchmark = True
dev = "cuda"; out = os.environ.get("OUT", "/tmp"); T0 = time.time()
dts = [getattr(torch, a) for a in (sys.argv[1].split(",") if len(sys.argv) > 1 else ["bfloat16"])]
log = open(f"{out}/exp5-{'-'.join(str(d)[6:] for d in dts)}.log", "w")
def say(*a):
    s = " ".join(str(x) for x in a); print(s, flush=True); log.write(s + "\n"); log.flush()

PLAIN = {2: [(8, 16, 128, 64, 3, 4), (8, 16, 64, 64, 4, 4)], 4: [(8, 16, 128, 32, 3, 4), (8, 16, 64, 32, 4, 4)]}
CFGS = {2: [(8, 16, 128, 64, 4, 232), (8, 16, 128, 64, 6, 232), (16, 8, 128, 64, 5, 232), (8, 8, 256, 64, 4, 232), (8, 16, 64, 64, 6, 232)],
        4: [(8, 16, 128, 32, 4, 232), (8, 16, 128, 32, 6, 232), (16, 8, 128, 32, 5, 232), (8, 16, 64, 32, 6, 232)]}
say("configs (BLOCK_P, BLOCK_Q, BLOCK_N, BLOCK_K, stages, warps):", CFGS)
odd = [(1, 16, 13, 11, 40, 3, 3, (1, 1), (1, 1), 1, True), (3, 64, 17, 9, 130, 3, 3, (0, 2), (2, 1), 1, False),
       (2, 64, 10, 21, 64, 1, 1, (0, 0), (1, 1), 2, True), (2, 128, 7, 7, 72, 3, 3, (1, 1), (1, 1), 1, True),
       (1, 32, 30, 5, 24, 5, 3, (2, 1), (1, 1), 1, False)]
bad = checked = 0
for dt in dts:
    for (n, c, h, w, k, r, s, pad, dil, groups, hb) in odd:
        x = torch.randn(n, c, h, w, device=dev, dtype=dt).to(memory_format=torch.channels_last)
        wt = torch.randn(k, c // groups, r, s, device=dev, dtype=dt)
        b = torch.randn(k, device=dev, dtype=dt) if hb else None
        ref = F.conv2d(x.double().cpu(), wt.double().cpu(), None if b is None else b.double().cpu(), 1, pad, dil, groups)
        for cfg in CFGS[dt.itemsize]:
            for epi, fmt in ((1, torch.channels_last), (3, torch.contiguous_format)):
                y = torch.full(ref.shape, float("nan"), device=dev, dtype=dt).to(memory_format=fmt)
                pingpong_conv(x, wt, b, y, groups, dil, pad, fit_bk(cfg, c // groups)); torch.cuda.synchronize()
                e = ((y.cpu().double() - ref).norm() / ref.norm()).item()
                checked += 1
                if not e < (2e-2 if dt != torch.float32 else 5e-3):
                    bad += 1; say("BAD", dt, (n, c, h, w, k, r, s, pad, dil, groups, hb), cfg, epi, e)
say(f"odd shapes: {checked} runs, {bad} wrong ({time.time() - T0:.0f} s)")

layers = [("conv5", 96, 24, 256, 5, 0), ("conv6", 256, 12, 512, 3, 0), ("conv8", 64, 112, 128, 3, 0), ("conv9", 64, 56, 64, 3, 0),
          ("conv10", 128, 28, 128, 3, 0), ("conv11", 256, 14, 256, 3, 0), ("conv12", 512, 7, 512, 3, 0),
          ("r50-l1-3x3", 64, 56, 64, 3, 1), ("r50-l2-3x3", 128, 28, 128, 3, 1), ("r50-l3-3x3", 256, 14, 256, 3, 1), ("r50-l4-3x3", 512, 7, 512, 3, 1),
          ("r50-l1-1x1-256", 64, 56, 256, 1, 0), ("r50-l1-1x1-reduce", 256, 56, 64, 1, 0), ("r50-l2-1x1-512", 128, 28, 512, 1, 0),
          ("r50-l3-1x1-1024", 256, 14, 1024, 1, 0), ("r50-l3-1x1-reduce", 1024, 14, 256, 1, 0), ("r50-l4-1x1-2048", 512, 7, 2048, 1, 0)]
timer = CudaTimer(torch.device(dev)); rows = []
for dt in dts:
    for name, c, hw, k, rs, pd in layers:
        if time.time() - T0 > 400:
            say("time guard: stopped before", name, dt); break
        n = 128; pad = (pd, pd)
        x = torch.randn(n, c, hw, hw, device=dev, dtype=dt).to(memory_format=torch.channels_last)
        wt = torch.randn(k, c, rs, rs, device=dev, dtype=dt).to(memory_format=torch.channels_last)
        p = hw + 2 * pd - rs + 1; flops = 2 * n * k * c * rs * rs * p * p; tf = lambda ms: flops / ms / 1e9
        ref = F.conv2d(x, wt, None, 1, pad).float()
        row = dict(layer=name, dtype=str(dt), tflops={})
        row["tflops"]["cudnn"] = tf(timer(lambda: F.conv2d(x, wt, None, 1, pad), 20))
        prec = "tf32" if dt == torch.float32 else "ieee"
        bk = 64 if dt.itemsize == 2 else 32
        while c % bk:
            bk //= 2
        cur = tma_config(p, p, k, bk, dt, prec, pd > 0, rs * rs, False)
        for fmt, epi in ((torch.channels_last, 1),):
            y = torch.empty(n, k, p, p, device=dev, dtype=dt).to(memory_format=fmt)
            tag = "nhwc" if epi == 1 else "nchw"
            if cur is not None:
                f = lambda: conv2d_fwd_tma(x, wt, None, y, groups=1, dilation=(1, 1), pad_top_left=pad, precision=prec, config=cur, interpreted=False)
                f(); row["tflops"][f"triton-tma-{tag}"] = tf(timer(f, 20))
            for kind, fn, cfgs in (("plain", gluon_conv, PLAIN), ("pingpong", pingpong_conv, CFGS)):
                for cfg in cfgs[dt.itemsize]:
                    cfg = fit_bk(cfg, c)
                    y.fill_(float("nan")); fn(x, wt, None, y, 1, (1, 1), pad, cfg, epi); torch.cuda.synchronize()
                    e = ((y.float() - ref).norm() / ref.norm()).item()
                    key = f"{kind}-{cfg}"
                    row["tflops"][key] = tf(timer(lambda: fn(x, wt, None, y, 1, (1, 1), pad, cfg, epi), 20)) if e < 2e-2 else f"wrong {e:.3g}"
        rows.append(row)
        t = row["tflops"]
        def best(prefix):
            v = {k_: v_ for k_, v_ in t.items() if k_.startswith(prefix) and isinstance(v_, float)}
            return (max(v.values()), max(v, key=v.get)[len(prefix):]) if v else (0.0, "-")
        bn, cn = best("plain-"); bc, cc = best("pingpong-")
        wrong = [k_ for k_, v_ in t.items() if not isinstance(v_, float)]
        say(f"{name:18s} {str(dt)[6:]:8s} cudnn {t['cudnn']:4.0f} | tma {t.get('triton-tma-nhwc', 0):4.0f} | plain {bn:4.0f} {cn} | pingpong {bc:4.0f} {cc} | " + " ".join(f"{v_:.0f}" if isinstance(v_, float) else v_ for k_, v_ in t.items() if k_.startswith("pingpong")))
json.dump(dict(gpu=torch.cuda.get_device_name(), torch=torch.__version__, triton=triton.__version__, cudnn=torch.backends.cudnn.version(),
               date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), rows=rows), open(f"{out}/exp5-{'-'.join(str(d)[6:] for d in dts)}.json", "w"), indent=1)
